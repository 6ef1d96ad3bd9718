//! Which binlog file the stream reads: file names from ROTATE events (with or without a trailing
//! CRC), a file torn by a server crash (its open transaction dropped, reading on in the next
//! file), and a resume point the server's binlog no longer holds.

use mysql_common::binlog::events::RotateEvent;

use super::BinlogCapture;
use crate::binlog::open_stream;
use crate::config::MysqlConnector;
use crate::error::MysqlError;
use crate::position::StartFrom;

impl BinlogCapture {
    /// The file the stream reads from now on: positions carry its sequence number.
    pub(super) fn set_file(&mut self, file: &str) {
        self.file = file.to_string();
        self.file_seq = crate::position::file_sequence(file).map_or(0, u64::from);
    }

    /// The server found the file being read cut off inside an event (`message`, its error
    /// 1236). A server killed while it wrote a transaction leaves such a tail; after its restart
    /// it goes on in a new file. The torn transaction never committed: crash recovery commits
    /// only transactions whose commit event the binlog holds whole, and the server has sent
    /// every whole event before the tear. So its rows are dropped and the stream goes on at
    /// the start of the next file. A file with no later one is not a crash tail that recovery
    /// left behind, and stops the task. (A checkpoint in the torn file meets the tear again
    /// after a restart, and goes on past it the same way.)
    pub(super) async fn continue_after_torn_file(
        &mut self,
        message: &str,
    ) -> Result<(), MysqlError> {
        let Some(connector) = self.connector.clone() else {
            return Err(self.error(message));
        };
        // The server names the file it found torn ("the last event read from 'F' at P"); the
        // file being read is the same one, since it announces each file with a ROTATE.
        let torn = message
            .split("last event read from '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .filter(|f| crate::position::file_sequence(f).is_some())
            .map_or_else(|| self.file.clone(), str::to_string);
        if self.tables.iter().any(|t| t.parts_taken > 0) {
            return Err(MysqlError::LostBinlog {
                server: self.server.clone(),
                message: format!(
                    "binlog: {message}. Binlog file {torn} ends inside a transaction large \
             enough that inlet had already written parts of it; the server crashed \
             while writing it, so it never committed, but inlet cannot take those parts \
             back. Delete the task checkpoint and run the task again for a new full load"
                ),
            });
        }
        let mut conn = connector.connect().await?;
        let files = crate::binlog::binlog_files(&mut conn, &connector).await?;
        drop(conn);
        let seq = crate::position::file_sequence(&torn);
        let next = files
            .iter()
            .filter(|(f, _)| crate::position::file_sequence(f) > seq)
            .min_by_key(|(f, _)| crate::position::file_sequence(f));
        let Some((next, _)) = next else {
            return Err(MysqlError::LostBinlog {
                server: self.server.clone(),
                message: format!(
                    "binlog: {message}. The server's last binlog file {torn} ends inside an \
             event and no later file exists: the file is damaged (a full disk, or a \
             file cut short by hand), so the changes in it cannot be read. Check the \
             server's disk and error log; then delete the task checkpoint and run the \
             task again for a new full load"
                ),
            });
        };
        let next = next.clone();
        tracing::warn!(
            file = %torn,
            next = %next,
            "the binlog file ends inside an event, torn by a crash of the server while it wrote \
             a transaction that therefore never committed; going on with the next file"
        );
        // The torn transaction's rows, and its table maps, go.
        for t in &mut self.tables {
            t.cut_open()?;
        }
        self.txn = None;
        self.payload_end = None;
        self.maps.clear();
        let start = StartFrom::Position(crate::position::BinlogPosition {
            file: next.clone(),
            offset: 4,
        });
        let feed = open_stream(&connector, self.flavor, self.server_id, &start).await?;
        let old = std::mem::replace(&mut self.feed, feed);
        // The old connection is dead already (the server ended the dump with its error).
        drop(old);
        self.set_file(&next);
        Ok(())
    }

    /// A ROTATE: the events after it are in the file it names. `crc_left`: the decoder left the
    /// event's CRC on the end of the name (see [`fake_rotate_file_name`]).
    pub(super) fn rotate(&mut self, r: &RotateEvent<'_>, crc_left: bool) -> Result<(), MysqlError> {
        let raw = r.name_raw();
        let name = if crc_left {
            fake_rotate_file_name(raw, true)
        } else {
            rotate_file_name(raw)
        };
        // A name misread here would give every later position file number 0, behind what
        // the tables hold, and their replay guard would skip every change from then on.
        if crate::position::file_sequence(&name).is_none() {
            return Err(self.error(format!(
                "the server rotated to binlog file {name:?}, which has no numeric extension; \
                 inlet cannot place later changes. Report this with the server version"
            )));
        }
        if self.file != name {
            tracing::info!(file = %name, "binlog file");
        }
        self.set_file(&name);
        Ok(())
    }
}

/// Refuses a resume point the server's binlog cannot hold (`files`: `SHOW BINARY LOGS`): past
/// the end of its file, or in a file after the server's last. The task read and applied
/// changes there, so the server lost committed binlog (a crash of its host with
/// `sync_binlog` other than 1, a restored backup, binlogs deleted by hand): changes are missing
/// from it and the stream would read from the middle of some other event. A file older than the
/// server's first is a purged one, which the server itself reports.
pub(super) fn check_resume_point(
    connector: &MysqlConnector,
    at: &crate::position::BinlogPosition,
    files: &[(String, u64)],
) -> Result<(), MysqlError> {
    let lost = |what: String| MysqlError::LostBinlog {
        server: connector.server().to_string(),
        message: format!(
            "the source lost committed binlog: the task checkpoint is at {at}, which the task \
             already read and applied, but {what}. The server lost binlog it had written (a \
             crash of its host with sync_binlog other than 1, a restored backup, or binlog \
             files deleted by hand), so changes are missing: a resync is needed. Delete the \
             task checkpoint and run the task again for a new full load, and set \
             sync_binlog = 1 on the server"
        ),
    };
    let seq = crate::position::file_sequence(&at.file);
    if let Some((_, size)) = files.iter().find(|(f, _)| *f == at.file) {
        if at.offset > *size {
            return Err(lost(format!("{} now holds only {size} bytes", at.file)));
        }
        return Ok(());
    }
    let last = files
        .iter()
        .filter_map(|(f, _)| crate::position::file_sequence(f).map(|n| (n, f)))
        .max();
    match (seq, last) {
        (Some(seq), Some((n, last))) if seq > n => Err(lost(format!(
            "the server's binlog ends with {last}, before {}",
            at.file
        ))),
        _ => Ok(()),
    }
}

/// The file name of the server's first (fake) ROTATE. It comes before the format description,
/// so it is read as if it had no checksum, and when the stream has checksums its last four
/// bytes are the CRC. (Those bytes cannot be told from the name by their look: a CRC that
/// starts with an ASCII digit once made `mariadb-bin.000001` read as `mariadb-bin.0000015`.)
fn fake_rotate_file_name(raw: &[u8], checksums: bool) -> String {
    let name = match checksums {
        true => &raw[..raw.len().saturating_sub(4)],
        false => raw,
    };
    String::from_utf8_lossy(name).into_owned()
}

/// The file name of a ROTATE event after the format description (its CRC already taken off
/// by the decoder): the name ends where the digits of its extension end.
fn rotate_file_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    match text.rfind('.') {
        Some(dot) => {
            let digits = text[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            text[..dot + 1 + digits].to_string()
        }
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_names_lose_a_trailing_checksum() {
        assert_eq!(
            rotate_file_name(b"mariadb-bin.000001\x12\x34\x56\x78"),
            "mariadb-bin.000001"
        );
        assert_eq!(rotate_file_name(b"binlog.000123"), "binlog.000123");
        // A CRC whose first byte is a digit ('5') is still a CRC.
        assert_eq!(
            fake_rotate_file_name(b"mariadb-bin.0000015\x9a\x01\xfe", true),
            "mariadb-bin.000001"
        );
        assert_eq!(
            fake_rotate_file_name(b"mariadb-bin.000001", false),
            "mariadb-bin.000001"
        );
    }
}
