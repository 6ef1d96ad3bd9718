//! The binlog event feed: a dump connection to the server (MySQL or MariaDB, by file/offset or
//! by GTID), or the events of binlog files read offline. Also what mysql_common does not
//! decode: MariaDB's GTID and GTID-list events (types 162 and 163), read from their raw bytes,
//! and checksum verification.

use std::collections::VecDeque;
use std::io::{BufReader, Cursor};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion, EventType};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;

use crate::config::MysqlConnector;
use crate::error::MysqlError;
use crate::position::StartFrom;

/// MariaDB's event types that mysql_common leaves undecoded.
pub(crate) const MARIADB_ANNOTATE_ROWS: u8 = 160;
/// XA_PREPARE_LOG_EVENT (MySQL and MariaDB): the end of an XA transaction's prepare (or of a
/// one-phase XA COMMIT).
pub(crate) const XA_PREPARE: u8 = 0x26;
pub(crate) const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
pub(crate) const MARIADB_GTID: u8 = 162;
pub(crate) const MARIADB_GTID_LIST: u8 = 163;
pub(crate) const MARIADB_START_ENCRYPTION: u8 = 164;
pub(crate) const MARIADB_QUERY_COMPRESSED: u8 = 165;
/// 166..=171: the compressed row events of `log_bin_compress=ON`.
pub(crate) const MARIADB_ROWS_COMPRESSED: std::ops::RangeInclusive<u8> = 166..=171;

/// Which server family: they differ in how a dump is started, in GTIDs, and in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mysql,
    MariaDb,
}

impl Flavor {
    pub async fn detect(conn: &mut Conn, connector: &MysqlConnector) -> Result<Self, MysqlError> {
        let version: Option<String> = connector
            .within("SELECT VERSION()", async {
                conn.query_first("SELECT VERSION()")
                    .await
                    .map_err(|e| connector.query_error("SELECT VERSION()", &e))
            })
            .await?;
        Ok(if version.unwrap_or_default().contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::Mysql
        })
    }

    /// The server's `@@server_id`: whose binlog positions these are.
    pub async fn server_id(conn: &mut Conn, connector: &MysqlConnector) -> Result<u64, MysqlError> {
        let id: Option<u64> = connector
            .within("SELECT @@server_id", async {
                conn.query_first("SELECT @@server_id")
                    .await
                    .map_err(|e| connector.query_error("SELECT @@server_id", &e))
            })
            .await?;
        Ok(id.unwrap_or(0))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Mysql => "mysql",
            Flavor::MariaDb => "mariadb",
        }
    }
}

/// One MariaDB GTID event: the start of a transaction (event group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MariaGtid {
    pub seq: u64,
    pub domain: u32,
    pub server: u32,
    /// FL_STANDALONE: a group of one statement (DDL) with no XID or COMMIT after it.
    pub standalone: bool,
    /// FL_PREPARED_XA: the group is an XA transaction that ends with its XA PREPARE.
    pub prepared_xa: bool,
}

pub(crate) fn parse_maria_gtid(data: &[u8], server: u32) -> Option<MariaGtid> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some(MariaGtid {
        seq,
        domain,
        server,
        standalone: flags & 1 != 0,
        prepared_xa: flags & 0x40 != 0,
    })
}

/// A GTID-list event: `(domain, server, seq)` of the last GTID of each domain before this point.
pub(crate) fn parse_maria_gtid_list(data: &[u8]) -> Option<Vec<(u32, u32, u64)>> {
    let count = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) & 0x0fff_ffff;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let at = 4 + i * 16;
        let d = data.get(at..at + 16)?;
        out.push((
            u32::from_le_bytes(d[0..4].try_into().ok()?),
            u32::from_le_bytes(d[4..8].try_into().ok()?),
            u64::from_le_bytes(d[8..16].try_into().ok()?),
        ));
    }
    Some(out)
}

/// An XA_PREPARE_LOG_EVENT's body: whether it is a one-phase commit, and the transaction's
/// xid in the form the server's `XA COMMIT` / `XA ROLLBACK` statements spell it ([`xa_key`]).
pub(crate) fn parse_xa_prepare(data: &[u8]) -> Option<(bool, String)> {
    use std::fmt::Write;
    let one_phase = *data.first()? != 0;
    let format_id = i32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
    let gtrid_len = u32::from_le_bytes(data.get(5..9)?.try_into().ok()?) as usize;
    let bqual_len = u32::from_le_bytes(data.get(9..13)?.try_into().ok()?) as usize;
    let gtrid = data.get(13..13 + gtrid_len)?;
    let bqual = data.get(13 + gtrid_len..13 + gtrid_len + bqual_len)?;
    let hex = |b: &[u8]| {
        let mut s = String::with_capacity(b.len() * 2);
        for x in b {
            // Writing to a String cannot fail.
            let _ = write!(s, "{x:02x}");
        }
        s
    };
    Some((
        one_phase,
        format!("x'{}',x'{}',{format_id}", hex(gtrid), hex(bqual)),
    ))
}

/// The xid of an `XA …` statement as the server logs it (`X'6131',X'62',7`), normalized so the
/// statement's and the XA_PREPARE event's spellings compare equal.
pub(crate) fn xa_key(xid: &str) -> String {
    let mut key: String = xid
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if let Some(k) = key.strip_suffix("onephase") {
        key = k.to_string();
    }
    key.trim_end_matches(';').to_string()
}

/// Checks an event's CRC32 when the server writes checksums. Events unpacked from a compressed
/// transaction carry none (the payload event's own checksum covered them).
pub(crate) fn verify_checksum(event: &Event) -> Result<(), String> {
    let footer = event.footer();
    if !footer.get_checksum_enabled() {
        return Ok(());
    }
    match footer.get_checksum_alg() {
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) => {
            let Some(stored) = event.checksum() else {
                return Ok(());
            };
            let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
            if u32::from_le_bytes(stored) != computed {
                return Err(format!(
                    "checksum mismatch in a type {} event ending at offset {}: the binlog is \
                     corrupt or was altered in transit",
                    event.header().event_type_raw(),
                    event.header().log_pos()
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `uuid` bytes as text: `3e11fa47-71ca-11e1-9e33-c80aa9429562`.
pub(crate) fn uuid_text(sid: &[u8; 16]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(36);
    for (i, b) in sid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Where events come from.
pub(crate) enum EventFeed {
    /// A dump connection, and how long it may stay silent: the server sends a heartbeat every
    /// `heartbeat_seconds` when it has nothing else, so silence beyond a few of them means the
    /// connection is dead.
    Server(Box<BinlogStream>, std::time::Duration),
    /// Events already read (binlog files read offline, for tests and tools).
    Events(VecDeque<Event>),
}

impl EventFeed {
    /// The next event; None when the feed has ended.
    pub async fn next(&mut self) -> Result<Option<Event>, String> {
        let event = match self {
            EventFeed::Server(stream, silence) => {
                match tokio::time::timeout(*silence, stream.next()).await {
                    Err(_) => {
                        return Err(format!(
                            "timed out: no event and no heartbeat from the server in {} s (3 \
                             heartbeat periods and 10 s); the connection is dead or the server \
                             hangs",
                            silence.as_secs()
                        ))
                    }
                    Ok(None) => None,
                    Ok(Some(Ok(e))) => Some(e),
                    Ok(Some(Err(e))) => {
                        let text = crate::error::describe(&e);
                        // tokio-util's words for a connection that ended inside a packet: the
                        // server was killed or the network cut it while it sent an event.
                        if text.contains("bytes remaining on stream") {
                            return Err(format!(
                                "the connection ended in the middle of a packet (the server \
                                 stopped or the network cut it): {text}"
                            ));
                        }
                        return Err(text);
                    }
                }
            }
            EventFeed::Events(q) => q.pop_front(),
        };
        Ok(event)
    }

    pub async fn close(self) -> Result<(), String> {
        match self {
            EventFeed::Server(stream, _) => {
                stream.close().await.map_err(|e| crate::error::describe(&e))
            }
            EventFeed::Events(_) => Ok(()),
        }
    }
}

/// The server's binlog files and their sizes, oldest first (`SHOW BINARY LOGS`).
pub(crate) async fn binlog_files(
    conn: &mut Conn,
    connector: &MysqlConnector,
) -> Result<Vec<(String, u64)>, MysqlError> {
    let rows: Vec<mysql_async::Row> = connector
        .within("SHOW BINARY LOGS", async {
            conn.query("SHOW BINARY LOGS")
                .await
                .map_err(|e| connector.query_error("SHOW BINARY LOGS", &e))
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect())
}

/// Whether a dump error is the server finding a binlog file that ends inside an event
/// (MySQL and MariaDB word it the same): a file torn by a crash of the server while it wrote.
pub(crate) fn is_torn_event(message: &str) -> bool {
    message.contains("1236") && message.contains("truncated in the middle of event")
}

/// Opens a dump connection and starts streaming from `start`, registering as replica
/// `server_id`. Heartbeats every `connector`'s heartbeat interval.
pub(crate) async fn open_stream(
    connector: &MysqlConnector,
    flavor: Flavor,
    server_id: u32,
    start: &StartFrom,
) -> Result<EventFeed, MysqlError> {
    // Connecting has its own bound; the session setup and the dump request are bounded as one.
    connector
        .within(
            "starting the binlog dump",
            open_stream_unbounded(connector, flavor, server_id, start),
        )
        .await
}

async fn open_stream_unbounded(
    connector: &MysqlConnector,
    flavor: Flavor,
    server_id: u32,
    start: &StartFrom,
) -> Result<EventFeed, MysqlError> {
    let mut conn = connector.connect().await?;
    let heartbeat_ns = u64::from(connector.heartbeat_seconds()) * 1_000_000_000;
    let mut setup = vec![format!("SET @master_heartbeat_period = {heartbeat_ns}")];
    if flavor == Flavor::MariaDb {
        // GTID-aware replica: the server sends GTID events (not fake BEGINs), annotate events
        // only on request, and accepts @slave_connect_state.
        setup.push("SET @mariadb_slave_capability = 4".into());
        if let StartFrom::MariaGtid(state) = start {
            if crate::position::MariaGtidState::parse(state).is_none() {
                return Err(MysqlError::Config {
                    key: "gtid",
                    message: format!(
                        "{state:?} is not a MariaDB GTID position (domain-server-seq,…)"
                    ),
                });
            }
            setup.push(format!("SET @slave_connect_state = '{state}'"));
            setup.push("SET @slave_gtid_strict_mode = 1".into());
            setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
        }
    }
    for sql in &setup {
        conn.query_drop(sql)
            .await
            .map_err(|e| connector.query_error(&format!("binlog session setup ({sql})"), &e))?;
    }
    let mut request = BinlogStreamRequest::new(server_id);
    let file_bytes;
    match start {
        StartFrom::Position(p) => {
            file_bytes = p.file.clone().into_bytes();
            request = request.with_filename(&file_bytes).with_pos(p.offset);
        }
        StartFrom::MariaGtid(_) => {
            // The server starts from @slave_connect_state; file and offset are ignored.
            request = request.with_pos(4u64);
        }
        StartFrom::MysqlGtid(set) => {
            let mut sids = Vec::new();
            for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let sid: mysql_common::packets::Sid<'static> =
                    part.parse().map_err(|e| MysqlError::Config {
                        key: "gtid",
                        message: format!("{part:?} is not a MySQL GTID set: {e}"),
                    })?;
                sids.push(sid);
            }
            request = request.with_gtid().with_gtid_set(sids);
        }
    }
    let stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| connector.query_error("starting the binlog dump", &e))?;
    let silence = std::time::Duration::from_secs(3 * u64::from(connector.heartbeat_seconds()) + 10);
    Ok(EventFeed::Server(Box::new(stream), silence))
}

/// Reads a binlog file's events, unpacking compressed transactions the way the dump connection
/// does (the payload event, then the events inside it).
pub fn read_binlog_file(bytes: &[u8]) -> std::io::Result<Vec<Event>> {
    const MAGIC: &[u8] = b"\xfebin";
    let body = bytes.strip_prefix(MAGIC).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a binlog file (no magic)",
        )
    })?;
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut input = BufReader::new(Cursor::new(body));
    let mut out = Vec::new();
    // A file may end in the middle of an event (a live server's last file): stop there, as
    // mysql_common's own file reader does. (Its Event::read panics on a truncated body, so
    // check the length from the header first.)
    let mut at = 0usize;
    while at + 19 <= body.len() {
        let size = u32::from_le_bytes([body[at + 9], body[at + 10], body[at + 11], body[at + 12]])
            as usize;
        if size < 19 || at + size > body.len() {
            break;
        }
        let Some(event) = reader.read(&mut input)? else {
            break;
        };
        at += size;
        let payload = event.header().event_type_raw() == EventType::TRANSACTION_PAYLOAD_EVENT as u8;
        let inner = if payload {
            let tpe: TransactionPayloadEvent<'_> = event.read_event()?;
            Some(tpe.danger_decompress())
        } else {
            None
        };
        out.push(event);
        if let Some(data) = inner {
            let mut cursor = Cursor::new(data);
            while let Some(e) = reader.read_decompressed(&mut cursor)? {
                out.push(e);
            }
        }
    }
    Ok(out)
}

impl EventFeed {
    pub fn from_events(events: Vec<Event>) -> Self {
        EventFeed::Events(events.into())
    }
}
