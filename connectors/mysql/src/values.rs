//! Typed Arrow builders for MySQL values, shared by the full load (binary-protocol rows) and
//! the binlog (row images). Each value is appended to its column's builder as it is read; the
//! few places where the two sources send a type differently (ENUM/SET as labels or as index
//! and bitmask, TIMESTAMP as a date or as epoch seconds, text already UTF-8 or still in the
//! column's charset) are told apart by [`Origin`].

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
use chrono::NaiveDate;
use inlet_core::Unrepresentable;
use mysql_common::Value;

use crate::charset::decode_text;
use crate::types::MysqlType;

/// The text MariaDB shows for the stored bytes of a `uuid`, `inet6` or `inet4` value (as the
/// binlog carries them; trailing zero bytes may be cut, as for any fixed binary string).
fn render_fixed_binary(
    kind: &MysqlType,
    stored: &[u8],
    out: &mut String,
) -> Result<(), ValueError> {
    use std::fmt::Write;
    let len = if *kind == MysqlType::Inet4 { 4 } else { 16 };
    if stored.len() > len {
        return Err(ValueError::Malformed(format!(
            "{} bytes for a {len}-byte value",
            stored.len()
        )));
    }
    let mut b = [0u8; 16];
    b[..stored.len()].copy_from_slice(stored);
    // Writing to a String cannot fail.
    let _ = match kind {
        MysqlType::Inet4 => write!(out, "{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        MysqlType::Inet6 => write!(out, "{}", std::net::Ipv6Addr::from(b)),
        _ => {
            // MariaDB stores an RFC 4122 time-based UUID (variant bit set in byte 8 of the
            // text order) with its groups reversed, for index locality: node(6), clock_seq(2),
            // time_hi(2), time_mid(2), time_low(4). Stored byte 6 then holds the variant bit.
            let text_order: [u8; 16] = if b[6] & 0x80 != 0 {
                let mut t = [0u8; 16];
                t[0..4].copy_from_slice(&b[12..16]);
                t[4..6].copy_from_slice(&b[10..12]);
                t[6..8].copy_from_slice(&b[8..10]);
                t[8..10].copy_from_slice(&b[6..8]);
                t[10..16].copy_from_slice(&b[0..6]);
                t
            } else {
                b
            };
            for (i, x) in text_order.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                let _ = write!(out, "{x:02x}");
            }
            Ok(())
        }
    };
    Ok(())
}

/// Days between 0001-01-01 (chrono's day 1 of the common era) and 1970-01-01.
const UNIX_EPOCH_CE_DAYS: i32 = 719_163;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A binary-protocol result row of a session with `SET NAMES utf8mb4` and UTC.
    Snapshot,
    /// A binlog row image.
    Binlog,
}

/// Why a value could not be appended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueError {
    /// The value does not fit the column's type: a protocol or catalog mismatch.
    Malformed(String),
    /// A valid value with no exact Arrow equivalent (zero date, TIME outside a day); the policy
    /// decides.
    Unrepresentable(String),
}

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Decimal(Decimal128Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    List {
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        values: StringBuilder,
    },
}

/// The builder of one column, with the plan that says how to read its values.
pub(crate) struct ColumnBuilder {
    kind: MysqlType,
    builder: Builder,
    /// Scratch space for text rendering (JSON, bits), reused across values.
    scratch: String,
    /// The target writes time as text, so a TIME outside 00:00:00..24:00:00 is kept
    /// ([`Self::with_times_as_text`]).
    times_as_text: bool,
}

impl ColumnBuilder {
    pub fn new(kind: &MysqlType, capacity: usize) -> Self {
        let builder = match kind.data_type() {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int16 => Builder::Int16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => Builder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(p, s)
                    // p <= 38 and s <= p were checked when the column was planned.
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(capacity)),
            ),
            DataType::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Binary => {
                Builder::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time64(_) => Builder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            DataType::Timestamp(_, None) => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            DataType::Timestamp(_, Some(_)) => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            DataType::List(_) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Builder::List {
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    values: StringBuilder::new(),
                }
            }
            _ => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
        };
        Self {
            kind: kind.clone(),
            builder,
            scratch: String::new(),
            times_as_text: false,
        }
    }

    /// The builder for a target that writes time as text (`target.types = "portable"`) when
    /// `yes`: a TIME column then keeps MySQL's negative and over-24-hour values (down to
    /// `-838:59:59`, up to `838:59:59`) as signed microseconds, which the sink writes as their
    /// text (see `inlet_core::ValuePolicy::times_as_text`), instead of following the column's
    /// policy.
    pub fn with_times_as_text(mut self, yes: bool) -> Self {
        self.times_as_text = yes;
        self
    }

    /// Replaces the column's enum/set labels (same Arrow type, so the rows already appended
    /// stay as they are).
    pub fn set_labels(&mut self, kind: &MysqlType) {
        if kind.data_type() == self.kind.data_type() {
            self.kind = kind.clone();
        }
    }

    pub fn append_null(&mut self) {
        match &mut self.builder {
            Builder::Bool(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Appends one value; a value with no exact Arrow equivalent follows `policy`.
    pub fn append(
        &mut self,
        value: &Value,
        origin: Origin,
        policy: Unrepresentable,
    ) -> Result<(), ValueError> {
        if matches!(value, Value::NULL) {
            self.append_null();
            return Ok(());
        }
        match self.append_value(value, origin) {
            Err(ValueError::Unrepresentable(_)) if policy == Unrepresentable::Null => {
                self.append_null();
                Ok(())
            }
            other => other,
        }
    }

    /// Appends a binlog JSON value (MySQL 8's binary form), rendered as the server renders it.
    pub fn append_jsonb(
        &mut self,
        value: &mysql_common::binlog::jsonb::Value<'_>,
    ) -> Result<(), ValueError> {
        self.scratch.clear();
        crate::json::render(value, &mut self.scratch)
            .map_err(|e| ValueError::Malformed(format!("binary JSON: {e}")))?;
        match &mut self.builder {
            Builder::Utf8(b) => {
                b.append_value(&self.scratch);
                Ok(())
            }
            _ => Err(ValueError::Malformed(
                "a JSON value for a column that is not JSON".into(),
            )),
        }
    }

    fn append_value(&mut self, value: &Value, origin: Origin) -> Result<(), ValueError> {
        let kind = &self.kind;
        match (&mut self.builder, kind) {
            (Builder::Bool(b), MysqlType::Bool) => {
                let n = match value {
                    Value::Bytes(bytes) if bytes.len() == 1 && bytes[0] <= 1 => {
                        // bit(1) arrives as one byte in both protocols.
                        i64::from(bytes[0])
                    }
                    v => int_value(v, 1, false)?,
                };
                match n {
                    0 => b.append_value(false),
                    1 => b.append_value(true),
                    n => {
                        return Err(ValueError::Unrepresentable(format!(
                            "{n} in a boolean column (tinyint(1) holding a value other than 0 or 1)"
                        )))
                    }
                }
            }
            (Builder::Int16(b), MysqlType::Int { bytes, unsigned }) => {
                let n = int_value(value, *bytes, *unsigned)?;
                b.append_value(i16::try_from(n).map_err(|_| out_of_range(n))?)
            }
            (Builder::Int32(b), MysqlType::Int { bytes, unsigned }) => {
                let n = int_value(value, *bytes, *unsigned)?;
                b.append_value(i32::try_from(n).map_err(|_| out_of_range(n))?)
            }
            (Builder::Int64(b), MysqlType::Int { bytes, unsigned }) => {
                b.append_value(int_value(value, *bytes, *unsigned)?)
            }
            (Builder::Decimal(b), MysqlType::Int { .. }) => {
                // bigint unsigned → decimal(20,0)
                let n: i128 = match value {
                    Value::UInt(u) => i128::from(*u),
                    Value::Int(i) => i128::from(*i as u64),
                    Value::Bytes(t) => parse_decimal(t, 20, 0)?,
                    other => return Err(unexpected(other, "bigint unsigned")),
                };
                b.append_value(n)
            }
            (Builder::Decimal(b), MysqlType::Decimal { precision, scale }) => match value {
                Value::Bytes(t) => b.append_value(parse_decimal(t, *precision, *scale)?),
                Value::Int(i) => b.append_value(scaled(i128::from(*i), *precision, *scale)?),
                Value::UInt(u) => b.append_value(scaled(i128::from(*u), *precision, *scale)?),
                other => return Err(unexpected(other, "decimal")),
            },
            (Builder::Float32(b), _) => match value {
                Value::Float(f) => b.append_value(*f),
                Value::Double(f) => b.append_value(*f as f32),
                Value::Bytes(t) => b.append_value(parse_text::<f32>(t, "float")?),
                other => return Err(unexpected(other, "float")),
            },
            (Builder::Float64(b), _) => match value {
                Value::Double(f) => b.append_value(*f),
                Value::Float(f) => b.append_value(f64::from(*f)),
                Value::Bytes(t) => b.append_value(parse_text::<f64>(t, "double")?),
                other => return Err(unexpected(other, "double")),
            },
            (Builder::Int16(b), MysqlType::Year) => {
                let y = match value {
                    Value::Int(i) => *i,
                    Value::UInt(u) => *u as i64,
                    // The binlog decoder sends 1900 + the stored byte; byte 0 is year 0000.
                    Value::Bytes(t) => match parse_text::<i64>(t, "year")? {
                        1900 if origin == Origin::Binlog => 0,
                        y => y,
                    },
                    other => return Err(unexpected(other, "year")),
                };
                b.append_value(i16::try_from(y).map_err(|_| out_of_range(y))?)
            }
            (Builder::Date(b), _) => {
                let days = date_days(value)?;
                b.append_value(days)
            }
            (Builder::Time(b), _) => b.append_value(time_micros(value, self.times_as_text)?),
            (Builder::Timestamp(b), MysqlType::DateTime) => b.append_value(datetime_micros(value)?),
            (Builder::Timestamp(b), MysqlType::Timestamp) => {
                b.append_value(timestamp_micros(value, origin)?)
            }
            (Builder::Binary(b), MysqlType::Geometry) => match value {
                // MySQL's geometry: a 4-byte SRID, then WKB.
                Value::Bytes(v) if v.len() >= 4 => b.append_value(&v[4..]),
                other => return Err(unexpected(other, "geometry")),
            },
            (Builder::Binary(b), MysqlType::FixedBinary { len }) => match value {
                Value::Bytes(v) if origin == Origin::Binlog && v.len() < *len as usize => {
                    let mut padded = v.clone();
                    padded.resize(*len as usize, 0);
                    b.append_value(&padded)
                }
                Value::Bytes(v) => b.append_value(v),
                other => return Err(unexpected(other, "binary")),
            },
            (Builder::Binary(b), _) => match value {
                Value::Bytes(v) => b.append_value(v),
                other => return Err(unexpected(other, "binary")),
            },
            (Builder::Utf8(b), MysqlType::String { charset }) => match value {
                Value::Bytes(v) => {
                    let cs = if origin == Origin::Snapshot {
                        "utf8mb4"
                    } else {
                        charset
                    };
                    b.append_value(decode_text(v, cs)?.as_ref())
                }
                other => {
                    self.scratch.clear();
                    render_scalar(other, &mut self.scratch)?;
                    b.append_value(&self.scratch)
                }
            },
            (Builder::Utf8(b), MysqlType::Json) => match value {
                Value::Bytes(v) => b.append_value(decode_text(v, "utf8mb4")?.as_ref()),
                other => return Err(unexpected(other, "json")),
            },
            (Builder::Utf8(b), MysqlType::Enum { labels }) => match value {
                Value::Bytes(v) => b.append_value(decode_text(v, "utf8mb4")?.as_ref()),
                Value::Int(_) | Value::UInt(_) => {
                    let i = int_value(value, 2, true)?;
                    // Index 0 is the empty string MySQL stores for an invalid value.
                    if i == 0 {
                        b.append_value("")
                    } else {
                        match labels.get(i as usize - 1) {
                            Some(l) => b.append_value(l),
                            None => {
                                return Err(ValueError::Malformed(format!(
                                    "enum index {i} but the column has {} labels",
                                    labels.len()
                                )))
                            }
                        }
                    }
                }
                other => return Err(unexpected(other, "enum")),
            },
            (Builder::Utf8(b), MysqlType::Uuid | MysqlType::Inet6 | MysqlType::Inet4) => {
                match value {
                    Value::Bytes(v) if origin == Origin::Snapshot => {
                        b.append_value(decode_text(v, "utf8mb4")?.as_ref())
                    }
                    Value::Bytes(v) => {
                        self.scratch.clear();
                        render_fixed_binary(kind, v, &mut self.scratch)?;
                        b.append_value(&self.scratch)
                    }
                    other => return Err(unexpected(other, "uuid/inet")),
                }
            }
            (Builder::Utf8(b), MysqlType::Bits { width }) => match value {
                Value::Bytes(v) => {
                    self.scratch.clear();
                    let mut n: u64 = 0;
                    for byte in v.iter() {
                        n = (n << 8) | u64::from(*byte);
                    }
                    let w = usize::from(*width);
                    use std::fmt::Write;
                    let _ = write!(self.scratch, "{n:0w$b}");
                    b.append_value(&self.scratch)
                }
                Value::Int(_) | Value::UInt(_) => {
                    let n = int_value(value, 8, true)? as u64;
                    let w = usize::from(*width);
                    b.append_value(format!("{n:0w$b}"))
                }
                other => return Err(unexpected(other, "bit")),
            },
            (
                Builder::Utf8(b),
                MysqlType::Text {
                    fsp,
                    date_only,
                    epoch,
                },
            ) => {
                self.scratch.clear();
                match value {
                    // A TIMESTAMP from the binlog: epoch seconds, rendered in UTC like the
                    // snapshot session renders it.
                    Value::Bytes(t) if origin == Origin::Binlog && *epoch && is_epoch_text(t) => {
                        render_epoch(t, *fsp, &mut self.scratch)?
                    }
                    Value::Bytes(t) => self.scratch.push_str(&decode_text(t, "utf8mb4")?),
                    Value::Date(..) | Value::Time(..) => {
                        render_temporal(value, *fsp, *date_only, &mut self.scratch)
                    }
                    other => render_scalar(other, &mut self.scratch)?,
                }
                b.append_value(&self.scratch)
            }
            (
                Builder::List {
                    offsets,
                    nulls,
                    values,
                },
                MysqlType::Set { labels },
            ) => {
                let mut n = 0i32;
                match value {
                    Value::Bytes(v) if origin == Origin::Snapshot => {
                        let text = decode_text(v, "utf8mb4")?;
                        if !text.is_empty() {
                            for label in text.split(',') {
                                values.append_value(label);
                                n += 1;
                            }
                        }
                    }
                    // The binlog sends the member bitmask, little-endian.
                    Value::Bytes(v) => {
                        for (i, label) in labels.iter().enumerate() {
                            if v.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                                values.append_value(label);
                                n += 1;
                            }
                        }
                    }
                    Value::Int(_) | Value::UInt(_) => {
                        let bits = int_value(value, 8, true)? as u64;
                        for (i, label) in labels.iter().enumerate().take(64) {
                            if bits & (1 << i) != 0 {
                                values.append_value(label);
                                n += 1;
                            }
                        }
                    }
                    other => return Err(unexpected(other, "set")),
                }
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + n);
                nulls.append_non_null();
            }
            (_, kind) => {
                return Err(ValueError::Malformed(format!(
                    "no decoder for {kind:?} from {value:?}"
                )))
            }
        }
        Ok(())
    }

    /// The values appended so far, as an array; the builder is left empty.
    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.builder {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Decimal(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::List {
                offsets,
                nulls,
                values,
            } => {
                let offs = std::mem::replace(offsets, vec![0]);
                let values = Arc::new(values.finish());
                let item = Arc::new(Field::new("item", DataType::Utf8, false));
                // Offsets start at 0 and only grow, one per appended row: always valid.
                Arc::new(ListArray::new(
                    item,
                    OffsetBuffer::new(ScalarBuffer::from(offs)),
                    values,
                    nulls.finish(),
                ))
            }
        }
    }
}

fn unexpected(value: &Value, what: &str) -> ValueError {
    ValueError::Malformed(format!("unexpected {value:?} for a {what} column"))
}

fn out_of_range(n: i64) -> ValueError {
    ValueError::Malformed(format!("{n} is out of the column's range"))
}

/// An integer value. Without the binlog's signedness metadata an unsigned column's value
/// arrives as a negative signed one: reinterpreted here by the column's width.
fn int_value(value: &Value, bytes: u8, unsigned: bool) -> Result<i64, ValueError> {
    let n = match value {
        Value::Int(i) => *i,
        Value::UInt(u) => {
            return i64::try_from(*u).map_err(|_| {
                ValueError::Malformed(format!("{u} does not fit a signed 64-bit integer"))
            })
        }
        Value::Bytes(t) => parse_text::<i64>(t, "integer")?,
        other => return Err(unexpected(other, "integer")),
    };
    // mysql_common reads a signed MEDIUMINT from the binlog without extending its sign bit.
    if !unsigned && bytes == 3 && (1 << 23..1 << 24).contains(&n) {
        return Ok(n - (1 << 24));
    }
    if unsigned && n < 0 && bytes < 8 {
        let mask = (1i64 << (8 * u32::from(bytes))) - 1;
        return Ok(n & mask);
    }
    Ok(n)
}

fn parse_text<T: std::str::FromStr>(t: &[u8], what: &str) -> Result<T, ValueError> {
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            ValueError::Malformed(format!("{:?} is not a {what}", String::from_utf8_lossy(t)))
        })
}

const POW10: [i128; 39] = {
    let mut p = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

fn scaled(n: i128, precision: u8, scale: i8) -> Result<i128, ValueError> {
    let v = n.checked_mul(POW10[scale.max(0) as usize]).ok_or_else(|| {
        ValueError::Malformed(format!("{n} does not fit decimal({precision},{scale})"))
    })?;
    if v.abs() >= POW10[usize::from(precision).min(38)] {
        return Err(ValueError::Malformed(format!(
            "{n} does not fit decimal({precision},{scale})"
        )));
    }
    Ok(v)
}

/// `-123.45` → -12345 at scale 2. Exact: more decimals than the scale is an error, never a
/// rounding.
pub(crate) fn parse_decimal(t: &[u8], precision: u8, scale: i8) -> Result<i128, ValueError> {
    let bad = || {
        ValueError::Malformed(format!(
            "{:?} is not a decimal({precision},{scale})",
            String::from_utf8_lossy(t)
        ))
    };
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match digits.iter().position(|&c| c == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &[][..]),
    };
    let scale_u = scale.max(0) as usize;
    let frac_trimmed = {
        let mut f = frac_part;
        while f.len() > scale_u && f.last() == Some(&b'0') {
            f = &f[..f.len() - 1];
        }
        f
    };
    if frac_trimmed.len() > scale_u || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(bad());
    }
    let mut n: i128 = 0;
    for &c in int_part.iter().chain(frac_trimmed) {
        if !c.is_ascii_digit() {
            return Err(bad());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i128::from(c - b'0')))
            .ok_or_else(bad)?;
    }
    n = n
        .checked_mul(POW10[scale_u - frac_trimmed.len()])
        .ok_or_else(bad)?;
    if n >= POW10[usize::from(precision).min(38)] {
        return Err(bad());
    }
    Ok(if neg { -n } else { n })
}

fn days_from_ymd(y: u16, m: u8, d: u8) -> Result<i32, ValueError> {
    if y == 0 && m == 0 && d == 0 {
        return Err(ValueError::Unrepresentable(
            "the zero date 0000-00-00".into(),
        ));
    }
    NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
        .map(|date| chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_CE_DAYS)
        .ok_or_else(|| {
            ValueError::Unrepresentable(format!(
                "the date {y:04}-{m:02}-{d:02}, which has no calendar day"
            ))
        })
}

fn date_days(value: &Value) -> Result<i32, ValueError> {
    match value {
        Value::Date(y, m, d, ..) => days_from_ymd(*y, *m, *d),
        other => Err(unexpected(other, "date")),
    }
}

fn datetime_micros(value: &Value) -> Result<i64, ValueError> {
    match value {
        Value::Date(y, mo, d, h, mi, s, us) => {
            let days = days_from_ymd(*y, *mo, *d).map_err(|e| match e {
                ValueError::Unrepresentable(_) => ValueError::Unrepresentable(format!(
                    "the datetime {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"
                )),
                e => e,
            })?;
            Ok(i64::from(days) * MICROS_PER_DAY
                + (i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*s)) * 1_000_000
                + i64::from(*us))
        }
        other => Err(unexpected(other, "datetime")),
    }
}

fn timestamp_micros(value: &Value, origin: Origin) -> Result<i64, ValueError> {
    match value {
        // The binlog's TIMESTAMP: "seconds[.micros]" since the epoch; 0 is the zero timestamp.
        Value::Bytes(t) if origin == Origin::Binlog => {
            let (secs, micros) = epoch_parts(t)?;
            if secs == 0 && micros == 0 {
                return Err(ValueError::Unrepresentable(
                    "the zero timestamp 0000-00-00 00:00:00".into(),
                ));
            }
            Ok(secs * 1_000_000 + micros)
        }
        Value::Int(secs) if origin == Origin::Binlog => {
            if *secs == 0 {
                return Err(ValueError::Unrepresentable(
                    "the zero timestamp 0000-00-00 00:00:00".into(),
                ));
            }
            Ok(secs * 1_000_000)
        }
        // The session's time zone is UTC, so the server sends UTC wall time.
        v => datetime_micros(v),
    }
}

fn is_epoch_text(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|c| c.is_ascii_digit() || *c == b'.')
}

fn epoch_parts(t: &[u8]) -> Result<(i64, i64), ValueError> {
    let s = std::str::from_utf8(t).map_err(|_| ValueError::Malformed("timestamp text".into()))?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| ValueError::Malformed(format!("{s:?} is not a timestamp")))?;
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")
            .get(..6)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ValueError::Malformed(format!("{s:?} is not a timestamp")))?
    };
    Ok((secs, micros))
}

/// A TIME value in microseconds. Arrow's (and Parquet's and Iceberg's) time of day ends below
/// 24:00:00, so a value outside a day follows the column's policy, unless `any` says the target
/// writes time as text, which holds every TIME.
fn time_micros(value: &Value, any: bool) -> Result<i64, ValueError> {
    match value {
        Value::Time(neg, days, h, m, s, us) => {
            let micros = ((i64::from(*days) * 24 + i64::from(*h)) * 3600
                + i64::from(*m) * 60
                + i64::from(*s))
                * 1_000_000
                + i64::from(*us);
            if any {
                return Ok(if *neg { -micros } else { micros });
            }
            if *neg && micros != 0 || micros >= MICROS_PER_DAY {
                let mut text = String::new();
                render_temporal(value, 6, false, &mut text);
                return Err(ValueError::Unrepresentable(format!(
                    "the time {text}, outside 00:00:00..24:00:00"
                )));
            }
            Ok(micros)
        }
        other => Err(unexpected(other, "time")),
    }
}

/// Renders a date, datetime or time as MySQL does, with `fsp` fractional digits.
pub(crate) fn render_temporal(value: &Value, fsp: u8, date_only: bool, out: &mut String) {
    use std::fmt::Write;
    let frac = |us: u32, out: &mut String| {
        if fsp > 0 {
            let digits = format!("{us:06}");
            out.push('.');
            out.push_str(&digits[..usize::from(fsp.min(6))]);
        }
    };
    match value {
        Value::Date(y, m, d, h, mi, s, us) => {
            let _ = write!(out, "{y:04}-{m:02}-{d:02}");
            if !date_only {
                let _ = write!(out, " {h:02}:{mi:02}:{s:02}");
                frac(*us, out);
            }
        }
        Value::Time(neg, days, h, m, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            let _ = write!(out, "{sign}{hours:02}:{m:02}:{s:02}");
            frac(*us, out);
        }
        _ => {}
    }
}

fn render_epoch(t: &[u8], fsp: u8, out: &mut String) -> Result<(), ValueError> {
    let (secs, micros) = epoch_parts(t)?;
    if secs == 0 && micros == 0 {
        out.push_str("0000-00-00 00:00:00");
        if fsp > 0 {
            out.push('.');
            out.push_str(&"000000"[..usize::from(fsp.min(6))]);
        }
        return Ok(());
    }
    let dt = chrono::DateTime::from_timestamp(secs, (micros * 1000) as u32)
        .ok_or_else(|| ValueError::Malformed(format!("timestamp {secs} out of range")))?
        .naive_utc();
    use chrono::{Datelike, Timelike};
    let v = Value::Date(
        dt.year() as u16,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
        micros as u32,
    );
    render_temporal(&v, fsp, false, out);
    Ok(())
}

fn render_scalar(value: &Value, out: &mut String) -> Result<(), ValueError> {
    use std::fmt::Write;
    match value {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Double(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Bytes(b) => out.push_str(&decode_text(b, "utf8mb4")?),
        v @ (Value::Date(..) | Value::Time(..)) => render_temporal(v, 6, false, out),
        Value::NULL => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Decimal128Array, Int16Array, StringArray};

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal(b"123.45", 12, 2), Ok(12345));
        assert_eq!(parse_decimal(b"-0.05", 12, 2), Ok(-5));
        assert_eq!(parse_decimal(b"7", 12, 2), Ok(700));
        assert_eq!(parse_decimal(b"1.50", 5, 1), Ok(15));
        assert!(parse_decimal(b"1.55", 5, 1).is_err());
        assert!(parse_decimal(b"100000", 5, 0).is_err());
        assert_eq!(
            parse_decimal(b"18446744073709551615", 20, 0),
            Ok(18_446_744_073_709_551_615)
        );
    }

    #[test]
    fn unsigned_without_signedness_metadata() {
        assert_eq!(int_value(&Value::Int(-1), 1, true), Ok(255));
        assert_eq!(int_value(&Value::Int(-1), 3, true), Ok(16_777_215));
        assert_eq!(int_value(&Value::Int(-1), 1, false), Ok(-1));
        assert_eq!(int_value(&Value::Int(8_388_608), 3, false), Ok(-8_388_608));
        assert_eq!(int_value(&Value::Int(8_388_607), 3, false), Ok(8_388_607));
        let mut b = ColumnBuilder::new(
            &MysqlType::Int {
                bytes: 8,
                unsigned: true,
            },
            2,
        );
        b.append(&Value::Int(-1), Origin::Binlog, Unrepresentable::Fail)
            .unwrap();
        b.append(
            &Value::UInt(u64::MAX),
            Origin::Snapshot,
            Unrepresentable::Fail,
        )
        .unwrap();
        let a = b.finish();
        let d = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(d.value(0), i128::from(u64::MAX));
        assert_eq!(d.value(1), i128::from(u64::MAX));
    }

    /// A TIME outside a day follows the policy unless the target writes time as text; then
    /// it is kept as signed microseconds.
    #[test]
    fn times_outside_a_day_are_kept_when_time_is_written_as_text() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Time64MicrosecondType;
        let times = [
            Value::Time(true, 0, 1, 0, 0, 0),
            Value::Time(false, 4, 4, 0, 0, 0),
            Value::Time(true, 34, 22, 59, 59, 0),
            Value::Time(false, 0, 12, 34, 56, 500_000),
        ];
        let mut exact = ColumnBuilder::new(&MysqlType::Time, 1);
        for v in &times[..3] {
            assert!(matches!(
                exact.append(v, Origin::Binlog, Unrepresentable::Fail),
                Err(ValueError::Unrepresentable(_))
            ));
        }
        let mut b = ColumnBuilder::new(&MysqlType::Time, 4).with_times_as_text(true);
        for v in &times {
            b.append(v, Origin::Binlog, Unrepresentable::Fail).unwrap();
        }
        let a = b.finish();
        assert_eq!(
            a.as_primitive::<Time64MicrosecondType>().values().to_vec(),
            vec![
                -3_600_000_000,
                360_000_000_000,
                -3_020_399_000_000,
                45_296_500_000
            ]
        );
    }

    #[test]
    fn zero_dates_follow_the_policy() {
        let zero = Value::Date(0, 0, 0, 0, 0, 0, 0);
        let mut b = ColumnBuilder::new(&MysqlType::Date, 2);
        assert!(matches!(
            b.append(&zero, Origin::Snapshot, Unrepresentable::Fail),
            Err(ValueError::Unrepresentable(_))
        ));
        b.append(&zero, Origin::Snapshot, Unrepresentable::Null)
            .unwrap();
        assert!(b.finish().is_null(0));
        let mut t = ColumnBuilder::new(
            &MysqlType::Text {
                fsp: 3,
                date_only: false,
                epoch: true,
            },
            2,
        );
        t.append(&zero, Origin::Snapshot, Unrepresentable::Text)
            .unwrap();
        t.append(
            &Value::Bytes(b"0".to_vec()),
            Origin::Binlog,
            Unrepresentable::Text,
        )
        .unwrap();
        t.append(
            &Value::Bytes(b"86400.5".to_vec()),
            Origin::Binlog,
            Unrepresentable::Text,
        )
        .unwrap();
        let a = t.finish();
        let s = a.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(s.value(0), "0000-00-00 00:00:00.000");
        assert_eq!(s.value(1), "0000-00-00 00:00:00.000");
        assert_eq!(s.value(2), "1970-01-02 00:00:00.500");
    }

    #[test]
    fn year_zero_from_the_binlog() {
        let mut b = ColumnBuilder::new(&MysqlType::Year, 2);
        b.append(
            &Value::Bytes(b"1900".to_vec()),
            Origin::Binlog,
            Unrepresentable::Fail,
        )
        .unwrap();
        b.append(
            &Value::Bytes(b"2155".to_vec()),
            Origin::Binlog,
            Unrepresentable::Fail,
        )
        .unwrap();
        let a = b.finish();
        let y = a.as_any().downcast_ref::<Int16Array>().unwrap();
        assert_eq!((y.value(0), y.value(1)), (0, 2155));
    }
}
