//! Decoder for the messages of PostgreSQL's `pgoutput` logical decoding plugin, protocol
//! versions 1 and 2 (streamed in-progress transactions). Messages are parsed from a borrowed
//! buffer and tuple values are returned as views into it, so the change stream is decoded into
//! Arrow builders without copying or allocating per value (DESIGN.md decisions 1 and 6).
//!
//! Every input is untrusted: a malformed message yields a [`PgoutputError`], never a panic, and
//! no count read from the wire is used to size an allocation before the bytes behind it are
//! known to be there.

use std::fmt;

#[doc(hidden)]
pub use crate::text::fuzz_text_value;

/// A decoding failure. Each names what was being read, so a protocol mismatch can be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgoutputError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message type {}", show_byte(*.0))]
    UnknownMessageType(u8),
    #[error("{message} message truncated while reading {field}")]
    Truncated {
        message: MessageKind,
        field: &'static str,
    },
    #[error("{message} message has {extra} unexpected trailing bytes")]
    TrailingBytes { message: MessageKind, extra: usize },
    #[error("{message} message: {field} is not valid UTF-8")]
    InvalidUtf8 {
        message: MessageKind,
        field: &'static str,
    },
    #[error("{message} message: negative {field} ({value})")]
    NegativeCount {
        message: MessageKind,
        field: &'static str,
        value: i64,
    },
    #[error("{message} message: unknown tuple column kind {}", show_byte(*.kind))]
    UnknownColumnKind { message: MessageKind, kind: u8 },
    #[error("{message} message: expected {expected}, found {}", show_byte(*.found))]
    UnexpectedSubmessage {
        message: MessageKind,
        expected: &'static str,
        found: u8,
    },
    #[error("{message} message {state}")]
    StreamState {
        message: MessageKind,
        state: &'static str,
    },
}

fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}' ({b:#04x})", b as char)
    } else {
        format!("{b:#04x}")
    }
}

/// The kind of a pgoutput message, named by its leading type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Begin,
    Commit,
    Origin,
    Relation,
    Type,
    Insert,
    Update,
    Delete,
    Truncate,
    Message,
    StreamStart,
    StreamStop,
    StreamCommit,
    StreamAbort,
}

impl MessageKind {
    /// The message type byte on the wire.
    pub fn tag(self) -> u8 {
        match self {
            Self::Begin => b'B',
            Self::Commit => b'C',
            Self::Origin => b'O',
            Self::Relation => b'R',
            Self::Type => b'Y',
            Self::Insert => b'I',
            Self::Update => b'U',
            Self::Delete => b'D',
            Self::Truncate => b'T',
            Self::Message => b'M',
            Self::StreamStart => b'S',
            Self::StreamStop => b'E',
            Self::StreamCommit => b'c',
            Self::StreamAbort => b'A',
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            b'B' => Self::Begin,
            b'C' => Self::Commit,
            b'O' => Self::Origin,
            b'R' => Self::Relation,
            b'Y' => Self::Type,
            b'I' => Self::Insert,
            b'U' => Self::Update,
            b'D' => Self::Delete,
            b'T' => Self::Truncate,
            b'M' => Self::Message,
            b'S' => Self::StreamStart,
            b'E' => Self::StreamStop,
            b'c' => Self::StreamCommit,
            b'A' => Self::StreamAbort,
            _ => return None,
        })
    }

    /// Whether the message carries a leading xid when sent inside a streamed block.
    fn has_stream_xid(self) -> bool {
        matches!(
            self,
            Self::Relation
                | Self::Type
                | Self::Insert
                | Self::Update
                | Self::Delete
                | Self::Truncate
                | Self::Message
        )
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Begin => "Begin",
            Self::Commit => "Commit",
            Self::Origin => "Origin",
            Self::Relation => "Relation",
            Self::Type => "Type",
            Self::Insert => "Insert",
            Self::Update => "Update",
            Self::Delete => "Delete",
            Self::Truncate => "Truncate",
            Self::Message => "Message",
            Self::StreamStart => "Stream Start",
            Self::StreamStop => "Stream Stop",
            Self::StreamCommit => "Stream Commit",
            Self::StreamAbort => "Stream Abort",
        };
        f.write_str(name)
    }
}

/// One decoded pgoutput message. Names, prefixes and tuple values borrow from the input buffer.
///
/// LSNs are raw `u64` XLogRecPtr values; timestamps are microseconds since 2000-01-01 (the
/// PostgreSQL epoch), as on the wire. `xid` is `Some` only for messages inside a streamed block.
#[derive(Debug, Clone, PartialEq)]
pub enum PgoutputMessage<'a> {
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        lsn: u64,
        name: &'a str,
    },
    Relation(RelationMessage),
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        xid: Option<u32>,
        relation: u32,
        new: TupleData<'a>,
    },
    Update {
        xid: Option<u32>,
        relation: u32,
        /// The old key columns ('K'), sent when the key changed under the default replica
        /// identity or a replica identity index.
        key: Option<TupleData<'a>>,
        /// The whole old row ('O'), sent under `REPLICA IDENTITY FULL`.
        old: Option<TupleData<'a>>,
        new: TupleData<'a>,
    },
    Delete {
        xid: Option<u32>,
        relation: u32,
        /// Exactly one of `key` ('K') and `old` ('O') is `Some`.
        key: Option<TupleData<'a>>,
        old: Option<TupleData<'a>>,
    },
    Truncate {
        xid: Option<u32>,
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`), sent with the `messages` option.
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: u64,
        prefix: &'a str,
        content: &'a [u8],
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    /// Abort of a streamed transaction (`subxid == xid`) or of one of its subtransactions.
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

impl PgoutputMessage<'_> {
    /// The (sub)transaction a message inside a streamed block belongs to.
    pub fn stream_xid(&self) -> Option<u32> {
        match self {
            Self::Relation(r) => r.xid,
            Self::Type { xid, .. }
            | Self::Insert { xid, .. }
            | Self::Update { xid, .. }
            | Self::Delete { xid, .. }
            | Self::Truncate { xid, .. }
            | Self::Message { xid, .. } => *xid,
            _ => None,
        }
    }

    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Begin { .. } => MessageKind::Begin,
            Self::Commit { .. } => MessageKind::Commit,
            Self::Origin { .. } => MessageKind::Origin,
            Self::Relation(_) => MessageKind::Relation,
            Self::Type { .. } => MessageKind::Type,
            Self::Insert { .. } => MessageKind::Insert,
            Self::Update { .. } => MessageKind::Update,
            Self::Delete { .. } => MessageKind::Delete,
            Self::Truncate { .. } => MessageKind::Truncate,
            Self::Message { .. } => MessageKind::Message,
            Self::StreamStart { .. } => MessageKind::StreamStart,
            Self::StreamStop => MessageKind::StreamStop,
            Self::StreamCommit { .. } => MessageKind::StreamCommit,
            Self::StreamAbort { .. } => MessageKind::StreamAbort,
        }
    }
}

/// A Relation message: the shape of a table, sent before the first change to it in a session
/// and again whenever it changed. It outlives the buffer (it is kept in a relation cache), so it
/// is owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationMessage {
    pub xid: Option<u32>,
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// The published columns in order. Generated columns are sent only by PostgreSQL 18 and
    /// only when the publication publishes them (`publish_generated_columns = stored`, or a
    /// column list naming them); the message has no flag for them, so they are matched by name
    /// like any other column.
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: the column is part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

impl RelationColumn {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    Null,
    /// A TOASTed value that did not change; the server does not send it.
    UnchangedToast,
    /// The value in the type's text output format.
    Text(&'a [u8]),
    /// The value in the type's binary send format (only with the `binary` option).
    Binary(&'a [u8]),
}

/// One tuple of an Insert, Update or Delete. Validated when the message was decoded, so walking
/// its columns cannot fail and allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TupleData<'a> {
    count: u16,
    /// The column entries, without the leading count.
    data: &'a [u8],
}

impl<'a> TupleData<'a> {
    /// The number of columns.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The column values in order.
    pub fn columns(&self) -> TupleColumns<'a> {
        TupleColumns {
            remaining: self.count,
            data: self.data,
        }
    }
}

impl fmt::Debug for TupleData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.columns()).finish()
    }
}

impl<'a> IntoIterator for TupleData<'a> {
    type Item = TupleValue<'a>;
    type IntoIter = TupleColumns<'a>;
    fn into_iter(self) -> TupleColumns<'a> {
        self.columns()
    }
}

/// Iterator over a [`TupleData`]'s columns.
#[derive(Clone)]
pub struct TupleColumns<'a> {
    remaining: u16,
    data: &'a [u8],
}

impl<'a> Iterator for TupleColumns<'a> {
    type Item = TupleValue<'a>;

    fn next(&mut self) -> Option<TupleValue<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // The tuple was validated by `scan_tuple`, so this cannot fail; if it somehow did, the
        // iterator ends early rather than panicking, and the short count is visible to callers
        // comparing against the relation's column count.
        match read_column(&mut self.data) {
            Ok(v) => {
                self.remaining -= 1;
                Some(v)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// Why a column entry could not be read; turned into a [`PgoutputError`] by the caller, which
/// knows the message kind.
enum ColumnError {
    Truncated,
    NegativeLength(i32),
    UnknownKind(u8),
}

/// Reads one column entry (`n`, `u`, or `t`/`b` with an Int32 length) and advances `data`.
#[inline]
fn read_column<'a>(data: &mut &'a [u8]) -> Result<TupleValue<'a>, ColumnError> {
    let (&kind, rest) = data.split_first().ok_or(ColumnError::Truncated)?;
    let value = match kind {
        b'n' => {
            *data = rest;
            return Ok(TupleValue::Null);
        }
        b'u' => {
            *data = rest;
            return Ok(TupleValue::UnchangedToast);
        }
        b't' | b'b' => {
            let (len, rest) = rest
                .split_first_chunk::<4>()
                .ok_or(ColumnError::Truncated)?;
            let len = i32::from_be_bytes(*len);
            let len = usize::try_from(len).map_err(|_| ColumnError::NegativeLength(len))?;
            if rest.len() < len {
                return Err(ColumnError::Truncated);
            }
            let (value, rest) = rest.split_at(len);
            *data = rest;
            value
        }
        other => return Err(ColumnError::UnknownKind(other)),
    };
    Ok(if kind == b't' {
        TupleValue::Text(value)
    } else {
        TupleValue::Binary(value)
    })
}

/// A stateful decoder for one replication stream: it tracks whether it is inside a streamed
/// block (between Stream Start and Stream Stop), where messages carry a leading xid.
#[derive(Debug, Clone, Default)]
pub struct PgoutputDecoder {
    in_stream: bool,
}

impl PgoutputDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the last message decoded left the stream inside a streamed block.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes one message (the payload of one XLogData, or one row of
    /// `pg_logical_slot_*_binary_changes`). Stream Start and Stream Stop change the state only
    /// when they decode successfully; a misplaced one is an error, since it means the decoder
    /// and the server disagree about the stream.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<PgoutputMessage<'a>, PgoutputError> {
        let msg = decode_message(buf, self.in_stream)?;
        let misplaced = |state| PgoutputError::StreamState {
            message: msg.kind(),
            state,
        };
        match (&msg, self.in_stream) {
            (PgoutputMessage::StreamStart { .. }, true) => {
                return Err(misplaced("inside a streamed block"))
            }
            (PgoutputMessage::StreamStart { .. }, false) => self.in_stream = true,
            (PgoutputMessage::StreamStop, false) => {
                return Err(misplaced("outside a streamed block"))
            }
            (PgoutputMessage::StreamStop, true) => self.in_stream = false,
            (
                PgoutputMessage::Begin { .. }
                | PgoutputMessage::Commit { .. }
                | PgoutputMessage::Origin { .. }
                | PgoutputMessage::StreamCommit { .. }
                | PgoutputMessage::StreamAbort { .. },
                true,
            ) => return Err(misplaced("inside a streamed block")),
            _ => {}
        }
        Ok(msg)
    }
}

/// Decodes one message without stream-state checks. `in_stream` says whether the message was
/// sent inside a streamed block (protocol 2), where Relation, Type, Insert, Update, Delete,
/// Truncate and Message carry a leading xid.
pub fn decode_message(buf: &[u8], in_stream: bool) -> Result<PgoutputMessage<'_>, PgoutputError> {
    let (&tag, body) = buf.split_first().ok_or(PgoutputError::Empty)?;
    let kind = MessageKind::from_tag(tag).ok_or(PgoutputError::UnknownMessageType(tag))?;
    let mut r = Reader { kind, buf: body };
    let xid = if in_stream && kind.has_stream_xid() {
        Some(r.u32("xid")?)
    } else {
        None
    };
    let msg = match kind {
        MessageKind::Begin => PgoutputMessage::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_time: r.i64("commit timestamp")?,
            xid: r.u32("xid")?,
        },
        MessageKind::Commit => PgoutputMessage::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        },
        MessageKind::Origin => PgoutputMessage::Origin {
            lsn: r.u64("origin LSN")?,
            name: r.string("origin name")?,
        },
        MessageKind::Relation => PgoutputMessage::Relation(relation(&mut r, xid)?),
        MessageKind::Type => PgoutputMessage::Type {
            xid,
            oid: r.u32("type oid")?,
            namespace: r.string("type namespace")?,
            name: r.string("type name")?,
        },
        MessageKind::Insert => {
            let relation = r.u32("relation oid")?;
            r.expect(b'N', "'N' (new tuple)")?;
            PgoutputMessage::Insert {
                xid,
                relation,
                new: r.tuple()?,
            }
        }
        MessageKind::Update => {
            let relation = r.u32("relation oid")?;
            let (mut key, mut old) = (None, None);
            let mut tag = r.u8("tuple tag")?;
            match tag {
                b'K' => key = Some(r.tuple()?),
                b'O' => old = Some(r.tuple()?),
                _ => {}
            }
            if key.is_some() || old.is_some() {
                tag = r.u8("tuple tag")?;
            }
            if tag != b'N' {
                return Err(PgoutputError::UnexpectedSubmessage {
                    message: kind,
                    expected: "'K', 'O' or 'N' tuple",
                    found: tag,
                });
            }
            PgoutputMessage::Update {
                xid,
                relation,
                key,
                old,
                new: r.tuple()?,
            }
        }
        MessageKind::Delete => {
            let relation = r.u32("relation oid")?;
            let tag = r.u8("tuple tag")?;
            let (key, old) = match tag {
                b'K' => (Some(r.tuple()?), None),
                b'O' => (None, Some(r.tuple()?)),
                found => {
                    return Err(PgoutputError::UnexpectedSubmessage {
                        message: kind,
                        expected: "'K' or 'O' tuple",
                        found,
                    })
                }
            };
            PgoutputMessage::Delete {
                xid,
                relation,
                key,
                old,
            }
        }
        MessageKind::Truncate => {
            let count = r.count_i32("relation count")?;
            let options = r.u8("options")?;
            // Bounded by the bytes present: each oid takes 4.
            let oids = r.take(count.saturating_mul(4), "relation oids")?;
            let relations = oids
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            PgoutputMessage::Truncate {
                xid,
                options,
                relations,
            }
        }
        MessageKind::Message => {
            let flags = r.u8("flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.string("prefix")?;
            let len = r.count_i32("content length")?;
            PgoutputMessage::Message {
                xid,
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.take(len, "content")?,
            }
        }
        MessageKind::StreamStart => PgoutputMessage::StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first segment flag")? == 1,
        },
        MessageKind::StreamStop => PgoutputMessage::StreamStop,
        MessageKind::StreamCommit => PgoutputMessage::StreamCommit {
            xid: r.u32("xid")?,
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        },
        MessageKind::StreamAbort => PgoutputMessage::StreamAbort {
            xid: r.u32("xid")?,
            subxid: r.u32("subtransaction xid")?,
        },
    };
    // A message longer than its format means the two sides disagree about the protocol
    // (version, options); decoding on would misread values, so it is an error.
    if !r.buf.is_empty() {
        return Err(PgoutputError::TrailingBytes {
            message: kind,
            extra: r.buf.len(),
        });
    }
    Ok(msg)
}

fn relation(r: &mut Reader<'_>, xid: Option<u32>) -> Result<RelationMessage, PgoutputError> {
    let oid = r.u32("relation oid")?;
    let namespace = r.string("namespace")?.to_owned();
    let name = r.string("relation name")?.to_owned();
    let replica_identity = r.u8("replica identity")?;
    let count = r.i16("column count")?;
    let count = usize::try_from(count).map_err(|_| PgoutputError::NegativeCount {
        message: MessageKind::Relation,
        field: "column count",
        value: count.into(),
    })?;
    // A column takes at least 10 bytes (flags, an empty name's NUL, type oid, typmod): the
    // capacity is bounded by what the buffer can actually hold.
    let mut columns = Vec::with_capacity(count.min(r.buf.len() / 10));
    for _ in 0..count {
        columns.push(RelationColumn {
            flags: r.u8("column flags")?,
            name: r.string("column name")?.to_owned(),
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(RelationMessage {
        xid,
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

/// A cursor over a message body; errors name the message kind and the field being read.
struct Reader<'a> {
    kind: MessageKind,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn truncated(&self, field: &'static str) -> PgoutputError {
        PgoutputError::Truncated {
            message: self.kind,
            field,
        }
    }

    #[inline]
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PgoutputError> {
        if self.buf.len() < n {
            return Err(self.truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], PgoutputError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(field))?;
        self.buf = tail;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PgoutputError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, PgoutputError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, PgoutputError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PgoutputError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, PgoutputError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, PgoutputError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// An Int32 count or length that must not be negative.
    fn count_i32(&mut self, field: &'static str) -> Result<usize, PgoutputError> {
        let v = self.i32(field)?;
        usize::try_from(v).map_err(|_| PgoutputError::NegativeCount {
            message: self.kind,
            field,
            value: v.into(),
        })
    }

    fn expect(&mut self, want: u8, expected: &'static str) -> Result<(), PgoutputError> {
        let found = self.u8("tuple tag")?;
        if found != want {
            return Err(PgoutputError::UnexpectedSubmessage {
                message: self.kind,
                expected,
                found,
            });
        }
        Ok(())
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, field: &'static str) -> Result<&'a str, PgoutputError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated(field))?;
        let (s, rest) = self.buf.split_at(end);
        // `rest` starts with the NUL found above.
        self.buf = rest.get(1..).unwrap_or_default();
        std::str::from_utf8(s).map_err(|_| PgoutputError::InvalidUtf8 {
            message: self.kind,
            field,
        })
    }

    /// A TupleData: Int16 column count, then the columns. Walks it once to find its end and to
    /// validate every entry, so [`TupleColumns`] cannot fail later.
    fn tuple(&mut self) -> Result<TupleData<'a>, PgoutputError> {
        let count = self.i16("tuple column count")?;
        let count = u16::try_from(count).map_err(|_| PgoutputError::NegativeCount {
            message: self.kind,
            field: "tuple column count",
            value: count.into(),
        })?;
        let start = self.buf;
        let mut rest = start;
        for _ in 0..count {
            read_column(&mut rest).map_err(|e| match e {
                ColumnError::Truncated => self.truncated("tuple column"),
                ColumnError::NegativeLength(len) => PgoutputError::NegativeCount {
                    message: self.kind,
                    field: "tuple value length",
                    value: len.into(),
                },
                ColumnError::UnknownKind(kind) => PgoutputError::UnknownColumnKind {
                    message: self.kind,
                    kind,
                },
            })?;
        }
        let used = start.len() - rest.len();
        self.buf = rest;
        Ok(TupleData {
            count,
            data: &start[..used],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(values: &[TupleValue<'_>]) -> Vec<u8> {
        let mut v = (values.len() as i16).to_be_bytes().to_vec();
        for x in values {
            match x {
                TupleValue::Null => v.push(b'n'),
                TupleValue::UnchangedToast => v.push(b'u'),
                TupleValue::Text(b) | TupleValue::Binary(b) => {
                    v.push(if matches!(x, TupleValue::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    v.extend((b.len() as i32).to_be_bytes());
                    v.extend(*b);
                }
            }
        }
        v
    }

    #[test]
    fn begin_commit() {
        let mut m = vec![b'B'];
        m.extend(0x0123_4567_89ab_cdefu64.to_be_bytes());
        m.extend((-5i64).to_be_bytes());
        m.extend(742u32.to_be_bytes());
        assert_eq!(
            decode_message(&m, false).unwrap(),
            PgoutputMessage::Begin {
                final_lsn: 0x0123_4567_89ab_cdef,
                commit_time: -5,
                xid: 742
            }
        );
        // Every proper prefix is truncated, never a panic.
        for n in 0..m.len() {
            assert!(decode_message(&m[..n], false).is_err());
        }
        m.push(0);
        assert!(matches!(
            decode_message(&m, false),
            Err(PgoutputError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn insert_update_delete() {
        let vals = [
            TupleValue::Text(b"42"),
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Binary(&[0, 1]),
            TupleValue::Text(b""),
        ];
        let mut m = vec![b'I'];
        m.extend(16384u32.to_be_bytes());
        m.push(b'N');
        m.extend(tuple_bytes(&vals));
        match decode_message(&m, false).unwrap() {
            PgoutputMessage::Insert { xid, relation, new } => {
                assert_eq!((xid, relation, new.len()), (None, 16384, 5));
                assert_eq!(new.columns().collect::<Vec<_>>(), vals);
            }
            other => panic!("{other:?}"),
        }
        // The same inside a streamed block carries an xid first.
        let mut s = vec![b'I'];
        s.extend(9u32.to_be_bytes());
        s.extend(&m[1..]);
        assert!(matches!(
            decode_message(&s, true).unwrap(),
            PgoutputMessage::Insert {
                xid: Some(9),
                relation: 16384,
                ..
            }
        ));

        let mut u = vec![b'U'];
        u.extend(7u32.to_be_bytes());
        u.push(b'O');
        u.extend(tuple_bytes(&vals[..2]));
        u.push(b'N');
        u.extend(tuple_bytes(&vals[2..]));
        match decode_message(&u, false).unwrap() {
            PgoutputMessage::Update { key, old, new, .. } => {
                assert!(key.is_none());
                assert_eq!(old.unwrap().columns().collect::<Vec<_>>(), &vals[..2]);
                assert_eq!(new.columns().collect::<Vec<_>>(), &vals[2..]);
            }
            other => panic!("{other:?}"),
        }
        for n in 0..u.len() {
            assert!(decode_message(&u[..n], false).is_err());
        }

        let mut d = vec![b'D'];
        d.extend(7u32.to_be_bytes());
        d.push(b'X');
        assert!(matches!(
            decode_message(&d, false),
            Err(PgoutputError::UnexpectedSubmessage { found: b'X', .. })
        ));
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        // A relation claiming 32767 columns with none present.
        let mut r = vec![b'R'];
        r.extend(1u32.to_be_bytes());
        r.extend(b"s\0t\0d");
        r.extend(i16::MAX.to_be_bytes());
        assert!(matches!(
            decode_message(&r, false),
            Err(PgoutputError::Truncated { .. })
        ));
        // A truncate claiming 2^31-1 relations.
        let mut t = vec![b'T'];
        t.extend(i32::MAX.to_be_bytes());
        t.push(0);
        assert!(decode_message(&t, false).is_err());
        let mut t = vec![b'T'];
        t.extend((-1i32).to_be_bytes());
        t.push(0);
        assert!(matches!(
            decode_message(&t, false),
            Err(PgoutputError::NegativeCount { .. })
        ));
        // A text value claiming 2 GiB.
        let mut i = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't'];
        i.extend(i32::MAX.to_be_bytes());
        assert!(decode_message(&i, false).is_err());
    }

    #[test]
    fn stream_state() {
        let mut d = PgoutputDecoder::new();
        let start = [b'S', 0, 0, 2, 0xf0, 1];
        assert_eq!(
            d.decode(&start).unwrap(),
            PgoutputMessage::StreamStart {
                xid: 0x2f0,
                first_segment: true
            }
        );
        assert!(d.in_stream());
        assert!(d.decode(&start).is_err());
        assert!(d.in_stream());
        let ty = b"Y\0\0\x02\xf0\0\0@\x01public\0mood\0";
        assert_eq!(
            d.decode(ty).unwrap(),
            PgoutputMessage::Type {
                xid: Some(0x2f0),
                oid: 0x4001,
                namespace: "public",
                name: "mood"
            }
        );
        assert_eq!(d.decode(b"E").unwrap(), PgoutputMessage::StreamStop);
        assert!(!d.in_stream());
        assert!(d.decode(b"E").is_err());
        assert_eq!(
            d.decode(b"A\0\0\x02\xf4\0\0\x02\xf5").unwrap(),
            PgoutputMessage::StreamAbort {
                xid: 0x2f4,
                subxid: 0x2f5
            }
        );
        assert_eq!(
            d.decode(b"?").unwrap_err(),
            PgoutputError::UnknownMessageType(b'?')
        );
    }

    #[test]
    fn names_must_be_utf8() {
        let o = b"O\0\0\0\0\0\0\0\x01\xff\0";
        assert!(matches!(
            decode_message(o, false),
            Err(PgoutputError::InvalidUtf8 { .. })
        ));
        let o = b"O\0\0\0\0\0\0\0\x01up\0";
        assert_eq!(
            decode_message(o, false).unwrap(),
            PgoutputMessage::Origin { lsn: 1, name: "up" }
        );
    }
}
