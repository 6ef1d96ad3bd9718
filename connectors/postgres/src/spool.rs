//! Large transactions the server streams before they commit (protocol 2), staged on local disk
//! until their Stream Commit: a streamed transaction, or one of its subtransactions, may still
//! abort, so none of it may reach a target before the commit says what survived.
//!
//! A spool is an anonymous temporary file (gone with the process, even after a kill -9: the
//! server streams the transaction again from its start) holding the raw pgoutput messages, each
//! tagged with the subtransaction that made it. Memory stays at one buffered block per open
//! transaction whatever its size.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// One streamed transaction's messages so far.
pub struct TransactionSpool {
    file: BufWriter<File>,
    /// Subtransactions reported aborted (Stream Abort with a subxid): their messages are
    /// skipped on replay.
    aborted: HashSet<u32>,
    bytes: u64,
}

impl TransactionSpool {
    pub fn create(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(dir)?),
            aborted: HashSet::new(),
            bytes: 0,
        })
    }

    /// Appends a message of subtransaction `subxid` (the top-level xid for its own changes).
    pub fn push(&mut self, subxid: u32, message: &[u8]) -> io::Result<()> {
        let len = u32::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message over 4 GiB"))?;
        self.file.write_all(&subxid.to_le_bytes())?;
        self.file.write_all(&len.to_le_bytes())?;
        self.file.write_all(message)?;
        self.bytes += 8 + u64::from(len);
        Ok(())
    }

    pub fn abort_subtransaction(&mut self, subxid: u32) {
        self.aborted.insert(subxid);
    }

    /// Bytes staged so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The staged messages from the first, for applying at commit.
    pub fn into_replay(self) -> io::Result<SpoolReplay> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolReplay {
            file: BufReader::with_capacity(1 << 16, file),
            aborted: self.aborted,
            message: Vec::new(),
        })
    }
}

/// Reads a committed transaction's staged messages back, in the order they arrived.
pub struct SpoolReplay {
    file: BufReader<File>,
    aborted: HashSet<u32>,
    message: Vec<u8>,
}

impl SpoolReplay {
    /// The next message of a subtransaction that did not abort; None after the last.
    pub fn next_message(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if self.file.fill_buf()?.is_empty() {
                return Ok(None);
            }
            let mut header = [0u8; 8];
            self.file.read_exact(&mut header)?;
            let subxid = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if self.aborted.contains(&subxid) {
                let skipped = io::copy(&mut (&mut self.file).take(len as u64), &mut io::sink())?;
                if skipped != len as u64 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                continue;
            }
            self.message.resize(len, 0);
            self.file.read_exact(&mut self.message)?;
            return Ok(Some(&self.message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_what_survived_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = TransactionSpool::create(dir.path()).unwrap();
        spool.push(10, b"a").unwrap();
        spool.push(11, b"bb").unwrap();
        spool.push(10, b"").unwrap();
        spool.push(12, &[7u8; 100_000]).unwrap();
        spool.push(11, b"dropped too").unwrap();
        spool.push(10, b"last").unwrap();
        spool.abort_subtransaction(11);
        assert_eq!(spool.bytes(), 6 * 8 + 1 + 2 + 100_000 + 11 + 4);
        let mut replay = spool.into_replay().unwrap();
        let mut got = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            got.push(m.to_vec());
        }
        assert_eq!(
            got,
            vec![
                b"a".to_vec(),
                Vec::new(),
                vec![7u8; 100_000],
                b"last".to_vec()
            ]
        );
        // The spool is an anonymous file: nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_truncated_spool_is_an_error_not_a_short_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = TransactionSpool::create(dir.path()).unwrap();
        spool.push(1, b"whole").unwrap();
        let mut file = spool.file.into_inner().map_err(|e| e.into_error()).unwrap();
        file.write_all(&1u32.to_le_bytes()).unwrap();
        file.write_all(&50u32.to_le_bytes()).unwrap();
        file.write_all(b"short").unwrap();
        let spool = TransactionSpool {
            file: BufWriter::new(file),
            aborted: HashSet::new(),
            bytes: 0,
        };
        let mut replay = spool.into_replay().unwrap();
        assert_eq!(replay.next_message().unwrap(), Some(&b"whole"[..]));
        assert!(replay.next_message().is_err());
    }
}
