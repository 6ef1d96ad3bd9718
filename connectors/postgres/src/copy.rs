//! COPY binary format → Arrow builders. Tuples are parsed as they arrive and each field is
//! appended to its column's typed builder; no per-row value is ever materialised.
//!
//! Format: an 11-byte signature, flags, a header extension, then tuples of
//! `i16 field count, (i32 length | -1 for NULL, bytes)*`, and a trailer of `-1`.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{FieldRef, SchemaRef};
use inlet_core::Unrepresentable;

use crate::types::Decoder;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days and microseconds between 1970-01-01 (Arrow's epoch) and 2000-01-01 (PostgreSQL's).
const EPOCH_DAYS: i32 = 10_957;
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why a field could not be appended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueError {
    /// The bytes do not fit the column's type: a protocol or catalog mismatch.
    Malformed(String),
    /// A valid value with no exact Arrow equivalent; the policy decides.
    Unrepresentable(String),
}

/// Typed Arrow builder for one column.
pub(crate) enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Numeric {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Bytea(BinaryBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Date(Date32Builder),
    Time {
        builder: Time64MicrosecondBuilder,
        /// Whether `24:00:00` is kept (as 86,400,000,000 µs): the target writes time as text
        /// ([`ColumnBuilder::with_times_as_text`]).
        end_of_day: bool,
    },
    Timestamp(TimestampMicrosecondBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
    List {
        item: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        values: Box<ColumnBuilder>,
    },
}

impl ColumnBuilder {
    pub fn new(decoder: &Decoder, capacity: usize) -> Self {
        match decoder {
            Decoder::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            Decoder::Int2 => Self::Int16(Int16Builder::with_capacity(capacity)),
            Decoder::Int4 => Self::Int32(Int32Builder::with_capacity(capacity)),
            Decoder::Int8 => Self::Int64(Int64Builder::with_capacity(capacity)),
            Decoder::Float4 => Self::Float32(Float32Builder::with_capacity(capacity)),
            Decoder::Float8 => Self::Float64(Float64Builder::with_capacity(capacity)),
            Decoder::Numeric { precision, scale } => Self::Numeric {
                builder: decimal_builder(capacity, *precision, *scale),
                precision: *precision,
                scale: *scale,
            },
            Decoder::Text => Self::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            Decoder::Jsonb => Self::Jsonb(StringBuilder::with_capacity(capacity, capacity * 32)),
            Decoder::Bytea => Self::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Decoder::Uuid => Self::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
            Decoder::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            Decoder::Time => Self::Time {
                builder: Time64MicrosecondBuilder::with_capacity(capacity),
                end_of_day: false,
            },
            Decoder::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            Decoder::TimestampTz => Self::TimestampTz(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            Decoder::Array(elem) => {
                let item = match decoder.data_type() {
                    arrow_schema::DataType::List(f) => f,
                    // data_type() of an Array decoder is always a List.
                    _ => Arc::new(arrow_schema::Field::new("item", elem.data_type(), true)),
                };
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Self::List {
                    item,
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    values: Box::new(ColumnBuilder::new(elem, capacity)),
                }
            }
        }
    }

    /// The builder for a target that writes time as text (`target.types = "portable"`) when
    /// `yes`: a time column (or a time array's elements) then keeps PostgreSQL's `24:00:00` as
    /// 86,400,000,000 µs, which the sink writes as the text `24:00:00` (see
    /// `inlet_core::ValuePolicy::times_as_text`), instead of following the column's policy.
    pub fn with_times_as_text(mut self, yes: bool) -> Self {
        self.set_times_as_text(yes);
        self
    }

    fn set_times_as_text(&mut self, yes: bool) {
        match self {
            Self::Time { end_of_day, .. } => *end_of_day = yes,
            Self::List { values, .. } => values.set_times_as_text(yes),
            _ => {}
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Numeric { builder, .. } => builder.append_null(),
            Self::Text(b) | Self::Jsonb(b) => b.append_null(),
            Self::Bytea(b) => b.append_null(),
            Self::Uuid(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Time { builder, .. } => builder.append_null(),
            Self::Timestamp(b) | Self::TimestampTz(b) => b.append_null(),
            Self::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Appends one binary-format value (`None` is SQL NULL). An unrepresentable value becomes
    /// NULL under [`Unrepresentable::Null`], and an error otherwise.
    pub fn append(
        &mut self,
        value: Option<&[u8]>,
        policy: Unrepresentable,
    ) -> Result<(), ValueError> {
        self.append_with(value, policy, Self::append_value)
    }

    /// The NULL and policy handling every value format shares; `decode` appends a non-NULL value.
    fn append_with(
        &mut self,
        value: Option<&[u8]>,
        policy: Unrepresentable,
        decode: impl FnOnce(&mut Self, &[u8], Unrepresentable) -> Result<(), ValueError>,
    ) -> Result<(), ValueError> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match decode(self, v, policy) {
            Err(ValueError::Unrepresentable(_)) if policy == Unrepresentable::Null => {
                self.append_null();
                Ok(())
            }
            other => other,
        }
    }

    fn append_value(&mut self, v: &[u8], policy: Unrepresentable) -> Result<(), ValueError> {
        match self {
            Self::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Self::Int16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Self::Int32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Self::Int64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Self::Float32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Self::Float64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Self::Numeric {
                builder,
                precision,
                scale,
            } => builder.append_value(numeric_to_i128(v, *precision, *scale)?),
            Self::Text(b) => b.append_value(utf8(v)?),
            Self::Jsonb(b) => match v.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => {
                    return Err(ValueError::Malformed(
                        "jsonb value with an unknown version byte".into(),
                    ))
                }
            },
            Self::Bytea(b) => b.append_value(v),
            Self::Uuid(b) => b
                .append_value(fixed::<16>(v)?)
                .map_err(|e| ValueError::Malformed(e.to_string()))?,
            Self::Date(b) => {
                let days = i32::from_be_bytes(fixed(v)?);
                match days {
                    i32::MAX => return Err(ValueError::Unrepresentable("date 'infinity'".into())),
                    i32::MIN => return Err(ValueError::Unrepresentable("date '-infinity'".into())),
                    // PostgreSQL dates end in year 5874897, well inside Date32 after the shift.
                    d => b.append_value(d.saturating_add(EPOCH_DAYS)),
                }
            }
            Self::Time {
                builder,
                end_of_day,
            } => builder.append_value(time_of_day(i64::from_be_bytes(fixed(v)?), *end_of_day)?),
            Self::Timestamp(b) | Self::TimestampTz(b) => {
                let micros = i64::from_be_bytes(fixed(v)?);
                match micros {
                    i64::MAX => {
                        return Err(ValueError::Unrepresentable("timestamp 'infinity'".into()))
                    }
                    i64::MIN => {
                        return Err(ValueError::Unrepresentable("timestamp '-infinity'".into()))
                    }
                    m => {
                        match m.checked_add(EPOCH_MICROS) {
                            Some(unix) => b.append_value(unix),
                            None => return Err(ValueError::Unrepresentable(
                                "timestamp beyond year 294246, outside Arrow's microsecond range"
                                    .into(),
                            )),
                        }
                    }
                }
            }
            Self::List {
                offsets,
                nulls,
                values,
                ..
            } => {
                let n = append_array(values, v, policy)?;
                end_list_value(offsets, nulls, n)?;
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Numeric { builder, .. } => Arc::new(builder.finish()),
            Self::Text(b) | Self::Jsonb(b) => Arc::new(b.finish()),
            Self::Bytea(b) => Arc::new(b.finish()),
            Self::Uuid(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Time { builder, .. } => Arc::new(builder.finish()),
            Self::Timestamp(b) | Self::TimestampTz(b) => Arc::new(b.finish()),
            Self::List {
                item,
                offsets,
                nulls,
                values,
            } => {
                let finished = std::mem::replace(offsets, vec![0]);
                // Offsets start at 0 and only ever grow (checked_add above), so they are valid.
                let offsets = OffsetBuffer::new(ScalarBuffer::from(finished));
                Arc::new(ListArray::new(
                    item.clone(),
                    offsets,
                    values.finish(),
                    nulls.finish(),
                ))
            }
        }
    }

    /// Appends one value given in PostgreSQL's text output format (as pgoutput sends it), making
    /// the same Arrow value [`append`](Self::append) makes of its binary form. Same policy
    /// handling as `append` (Unrepresentable → NULL under [`Unrepresentable::Null`], error
    /// otherwise). The parsers live in `text`.
    pub fn append_text(
        &mut self,
        value: Option<&[u8]>,
        policy: Unrepresentable,
    ) -> Result<(), ValueError> {
        self.append_with(value, policy, crate::text::append_value)
    }
}

/// Closes a list value of `n` elements just appended to the values builder.
pub(crate) fn end_list_value(
    offsets: &mut Vec<i32>,
    nulls: &mut NullBufferBuilder,
    n: i32,
) -> Result<(), ValueError> {
    let last = offsets.last().copied().unwrap_or(0);
    let next = last.checked_add(n).ok_or_else(|| {
        ValueError::Malformed("more than 2^31 array elements in one batch".into())
    })?;
    offsets.push(next);
    nulls.append_non_null();
    Ok(())
}

/// A key value in binary form as text, for an error message: integers, text and uuids as
/// PostgreSQL prints them, anything else by its size.
fn binary_text(decoder: &Decoder, v: &[u8]) -> String {
    let shown = match decoder {
        Decoder::Int2 => fixed::<2>(v)
            .map(|b| i16::from_be_bytes(b).to_string())
            .ok(),
        Decoder::Int4 => fixed::<4>(v)
            .map(|b| i32::from_be_bytes(b).to_string())
            .ok(),
        Decoder::Int8 => fixed::<8>(v)
            .map(|b| i64::from_be_bytes(b).to_string())
            .ok(),
        Decoder::Text => Some(format!(
            "{:?}",
            String::from_utf8_lossy(&v[..v.len().min(64)])
        )),
        Decoder::Uuid => fixed::<16>(v).ok().map(|b| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
        }),
        _ => None,
    };
    shown.unwrap_or_else(|| format!("({} bytes)", v.len()))
}

/// Microseconds since midnight as a Time64 value. PostgreSQL's time also has 24:00:00, the end
/// of the day, which Arrow's (and Parquet's and Iceberg's) time of day, below 24 hours, cannot
/// hold: it follows the task's policy rather than becoming an invalid value, unless
/// `end_of_day` says the target writes time as text, which holds it (the sink turns the
/// Time64 value into the text `24:00:00` before anything is written).
pub(crate) fn time_of_day(micros: i64, end_of_day: bool) -> Result<i64, ValueError> {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    match micros {
        0..MICROS_PER_DAY => Ok(micros),
        MICROS_PER_DAY if end_of_day => Ok(micros),
        MICROS_PER_DAY => Err(ValueError::Unrepresentable("time '24:00:00'".into())),
        _ => Err(ValueError::Malformed(format!(
            "time of {micros} µs since midnight, outside a day"
        ))),
    }
}

fn decimal_builder(capacity: usize, precision: u8, scale: i8) -> Decimal128Builder {
    let b = Decimal128Builder::with_capacity(capacity);
    // types::scalar_decoder only plans 1 <= precision <= 38 and 0 <= scale <= precision, which
    // arrow accepts; the fallback keeps the default (38, 10) rather than panicking.
    match b.with_precision_and_scale(precision, scale) {
        Ok(b) => b,
        Err(_) => Decimal128Builder::with_capacity(capacity),
    }
}

#[inline]
fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], ValueError> {
    v.try_into()
        .map_err(|_| ValueError::Malformed(format!("expected {N} bytes, got {}", v.len())))
}

#[inline]
pub(crate) fn utf8(v: &[u8]) -> Result<&str, ValueError> {
    // SIMD validation: std's from_utf8 was 3 % of a full load's CPU. On failure, std's error says
    // where the bad byte is.
    simdutf8::basic::from_utf8(v).map_err(|_| match std::str::from_utf8(v) {
        Err(e) => ValueError::Malformed(format!("invalid UTF-8: {e}")),
        Ok(_) => ValueError::Malformed("invalid UTF-8".into()),
    })
}

/// 10^0 ..= 10^38: every power of ten an i128 holds.
pub(crate) const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// numeric's binary form: ndigits, weight, sign, dscale (each i16), then base-10000 digits.
/// Returns the value scaled by 10^scale.
pub(crate) fn numeric_to_i128(v: &[u8], precision: u8, scale: i8) -> Result<i128, ValueError> {
    const POS: u16 = 0x0000;
    const NEG: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const PINF: u16 = 0xD000;
    const NINF: u16 = 0xF000;
    if v.len() < 8 {
        return Err(ValueError::Malformed(
            "numeric shorter than its header".into(),
        ));
    }
    let ndigits = u16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        NAN => return Err(ValueError::Unrepresentable("numeric 'NaN'".into())),
        PINF => return Err(ValueError::Unrepresentable("numeric 'Infinity'".into())),
        NINF => return Err(ValueError::Unrepresentable("numeric '-Infinity'".into())),
        POS | NEG => {}
        _ => return Err(ValueError::Malformed(format!("numeric sign {sign:#x}"))),
    }
    if v.len() != 8 + 2 * ndigits {
        return Err(ValueError::Malformed(
            "numeric length does not match its digit count".into(),
        ));
    }
    let overflow = || {
        ValueError::Malformed(format!(
            "numeric value does not fit decimal({precision},{scale})"
        ))
    };
    // Digit group i is worth d * 10000^(weight - i); scaled by 10^scale that is d * 10^e with
    // e = 4 * (weight - i) + scale. Placing each group directly (rather than accumulating all
    // groups first) keeps a 38-digit value whose last group carries padding zeros inside i128.
    let mut n: i128 = 0;
    for i in 0..ndigits {
        let d = u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as i128;
        if d == 0 {
            continue;
        }
        let e = 4 * (weight - i as i32) + scale as i32;
        let part = if e >= 0 {
            let f = POW10.get(e as usize).ok_or_else(overflow)?;
            d.checked_mul(*f).ok_or_else(overflow)?
        } else {
            // The server rounds to the column's scale, so digits past it are zero padding; a
            // group is at most 4 digits, so only e in -3..=-1 can leave a non-zero part.
            let f = match e {
                -1 => 10u32,
                -2 => 100,
                -3 => 1000,
                _ => u32::MAX,
            };
            let d = d as u32;
            if !d.is_multiple_of(f) {
                return Err(ValueError::Malformed(format!(
                    "numeric has more than {scale} decimal places"
                )));
            }
            (d / f) as i128
        };
        n = n.checked_add(part).ok_or_else(overflow)?;
    }
    if n >= POW10[(precision as usize).min(38)] {
        return Err(overflow());
    }
    Ok(if sign == NEG { -n } else { n })
}

/// Appends the elements of a binary array value; returns how many.
fn append_array(
    values: &mut ColumnBuilder,
    v: &[u8],
    policy: Unrepresentable,
) -> Result<i32, ValueError> {
    let mut r = Reader(v);
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let _element_oid = r.i32()?;
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return Err(ValueError::Unrepresentable(format!(
            "{ndim}-dimensional array (only one-dimensional arrays map to an Arrow list)"
        )));
    }
    let len = r.i32()?;
    let _lower_bound = r.i32()?;
    for _ in 0..len {
        let elem = r.field()?;
        values.append(elem, policy)?;
    }
    Ok(len)
}

/// A cursor over big-endian binary data.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if self.0.len() < n {
            return Err(ValueError::Malformed("value truncated".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    #[inline]
    fn i32(&mut self) -> Result<i32, ValueError> {
        Ok(i32::from_be_bytes(fixed(self.take(4)?)?))
    }
    /// A length-prefixed field; length -1 is NULL.
    #[inline]
    fn field(&mut self) -> Result<Option<&'a [u8]>, ValueError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }
}

/// Error from decoding a COPY stream, with the column index when one field was at fault.
#[derive(Debug)]
pub(crate) struct CopyError {
    pub column: Option<usize>,
    pub error: ValueError,
    /// The failing row's key as `name = value` text (see [`CopyDecoder::with_key`]), so that
    /// an error can say which row holds the value.
    pub key: Option<String>,
}

impl CopyError {
    fn stream(message: impl Into<String>) -> Self {
        Self {
            column: None,
            error: ValueError::Malformed(message.into()),
            key: None,
        }
    }
}

/// Decodes a COPY binary stream, arriving in arbitrary chunks, into record batches.
pub(crate) struct CopyDecoder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    /// Each column's value policy (`[values.columns]`, else the task's default).
    policies: Vec<Unrepresentable>,
    rows: usize,
    header_done: bool,
    finished: bool,
    /// Bytes of an incomplete tuple carried over to the next chunk.
    carry: Vec<u8>,
    decoders: Vec<Decoder>,
    /// The key columns (index and name) that name a row in an error.
    key: Vec<(usize, String)>,
}

impl CopyDecoder {
    pub fn new(
        schema: SchemaRef,
        decoders: Vec<Decoder>,
        policies: Vec<Unrepresentable>,
        capacity: usize,
    ) -> Self {
        let columns = decoders
            .iter()
            .map(|d| ColumnBuilder::new(d, capacity))
            .collect();
        Self {
            schema,
            columns,
            policies,
            rows: 0,
            header_done: false,
            finished: false,
            carry: Vec::new(),
            decoders,
            key: Vec::new(),
        }
    }

    /// Decodes for a target that writes time as text when `yes`: see
    /// [`ColumnBuilder::with_times_as_text`].
    pub fn with_times_as_text(mut self, yes: bool) -> Self {
        for c in &mut self.columns {
            c.set_times_as_text(yes);
        }
        self
    }

    /// Names a failing row in errors by these columns (index and name): the primary key.
    pub fn with_key(mut self, key: Vec<(usize, String)>) -> Self {
        self.key = key;
        self
    }

    /// The key of the tuple `fields` (a tuple's bytes after its field count) as text.
    fn key_text(&self, fields: &[u8]) -> Option<String> {
        if self.key.is_empty() {
            return None;
        }
        let mut values = Vec::with_capacity(self.decoders.len());
        let mut r = Reader(fields);
        for _ in 0..self.decoders.len() {
            values.push(r.field().ok()?);
        }
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|(i, name)| {
                let shown = match (values.get(*i), self.decoders.get(*i)) {
                    (Some(Some(v)), Some(d)) => binary_text(d, v),
                    (Some(None), _) => "NULL".to_string(),
                    _ => "?".to_string(),
                };
                format!("{name} = {shown}")
            })
            .collect();
        Some(parts.join(", "))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds one chunk of the stream, appending every complete tuple it holds.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CopyError> {
        if self.carry.is_empty() {
            let used = self.parse(chunk)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let used = self.parse(&buf)?;
            buf.drain(..used);
            self.carry = buf;
        }
        Ok(())
    }

    /// Parses as many complete items as `data` holds; returns the bytes consumed.
    fn parse(&mut self, data: &[u8]) -> Result<usize, CopyError> {
        let mut pos = 0;
        if !self.header_done {
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(CopyError::stream("missing PGCOPY signature"));
            }
            pos = SIGNATURE.len() + 4;
            let ext = i32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
            pos += 4;
            let ext =
                usize::try_from(ext).map_err(|_| CopyError::stream("negative header extension"))?;
            if data.len() < pos + ext {
                return Ok(0);
            }
            pos += ext;
            self.header_done = true;
        }
        while pos + 2 <= data.len() {
            if self.finished {
                return Err(CopyError::stream("data after the COPY trailer"));
            }
            let count = i16::from_be_bytes([data[pos], data[pos + 1]]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                continue;
            }
            if count as usize != self.columns.len() {
                return Err(CopyError::stream(format!(
                    "tuple has {count} fields, expected {}",
                    self.columns.len()
                )));
            }
            // Find the tuple's end before appending anything, so a tuple split across chunks is
            // never half-appended.
            let mut end = pos + 2;
            let mut complete = true;
            for _ in 0..count {
                if end + 4 > data.len() {
                    complete = false;
                    break;
                }
                let len =
                    i32::from_be_bytes([data[end], data[end + 1], data[end + 2], data[end + 3]]);
                end += 4;
                if len > 0 {
                    end += len as usize;
                }
                if end > data.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut r = Reader(&data[pos + 2..end]);
            let mut failed = None;
            for (i, col) in self.columns.iter_mut().enumerate() {
                let policy = self.policies.get(i).copied().unwrap_or_default();
                if let Err(error) = r.field().and_then(|field| col.append(field, policy)) {
                    failed = Some((i, error));
                    break;
                }
            }
            if let Some((i, error)) = failed {
                return Err(CopyError {
                    column: Some(i),
                    error,
                    key: self.key_text(&data[pos + 2..end]),
                });
            }
            self.rows += 1;
            pos = end;
        }
        Ok(pos)
    }

    /// Takes the rows appended so far as a batch.
    pub fn take_batch(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let rows = std::mem::take(&mut self.rows);
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
    }

    /// Bytes left over that never formed a complete tuple: non-zero at the end means truncation.
    pub fn leftover(&self) -> usize {
        self.carry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Decimal128Array, Int32Array, StringArray};
    use arrow_schema::{Field, Schema};

    fn numeric(digits: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as u16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics() {
        // 12345.67 = digits [1, 2345, 6700], weight 1
        assert_eq!(
            numeric_to_i128(&numeric(&[1, 2345, 6700], 1, 0, 2), 10, 2),
            Ok(1_234_567)
        );
        assert_eq!(
            numeric_to_i128(&numeric(&[1, 2345, 6700], 1, 0x4000, 2), 10, 2),
            Ok(-1_234_567)
        );
        // 0.0001 = digits [1], weight -1
        assert_eq!(numeric_to_i128(&numeric(&[1], -1, 0, 4), 10, 4), Ok(1));
        // 10000 = digits [1], weight 1 → scale 0
        assert_eq!(numeric_to_i128(&numeric(&[1], 1, 0, 0), 5, 0), Ok(10_000));
        assert_eq!(numeric_to_i128(&numeric(&[], 0, 0, 0), 5, 2), Ok(0));
        assert!(matches!(
            numeric_to_i128(&numeric(&[], 0, 0xC000, 0), 5, 2),
            Err(ValueError::Unrepresentable(_))
        ));
        // 100000 does not fit numeric(5,0)
        assert!(numeric_to_i128(&numeric(&[10], 1, 0, 0), 5, 0).is_err());
        // 38 nines
        let max = numeric(
            &[99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999],
            9,
            0,
            0,
        );
        assert_eq!(numeric_to_i128(&max, 38, 0), Ok(10i128.pow(38) - 1));
        // 28 integer digits and 10 decimals: the last group (9900) carries two padding zeros.
        let max = numeric(
            &[9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9900],
            6,
            0,
            10,
        );
        assert_eq!(numeric_to_i128(&max, 38, 10), Ok(10i128.pow(38) - 1));
        assert!(
            numeric_to_i128(&numeric(&[1, 5000], 0, 0, 1), 5, 0).is_err(),
            "1.5 in scale 0"
        );
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                None => v.extend((-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend((b.len() as i32).to_be_bytes());
                    v.extend(*b);
                }
            }
        }
        v
    }

    #[test]
    fn stream_split_at_every_byte() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", arrow_schema::DataType::Int32, true),
            Field::new("b", arrow_schema::DataType::Utf8, true),
            Field::new("n", arrow_schema::DataType::Decimal128(10, 2), true),
        ]));
        let mut stream = SIGNATURE.to_vec();
        stream.extend([0u8; 8]);
        stream.extend(tuple(&[
            Some(&7i32.to_be_bytes()),
            Some("héllo".as_bytes()),
            Some(&numeric(&[1, 2345, 6700], 1, 0, 2)),
        ]));
        stream.extend(tuple(&[None, Some(b""), None]));
        stream.extend((-1i16).to_be_bytes());
        for split in 0..stream.len() {
            let mut d = CopyDecoder::new(
                schema.clone(),
                vec![
                    Decoder::Int4,
                    Decoder::Text,
                    Decoder::Numeric {
                        precision: 10,
                        scale: 2,
                    },
                ],
                vec![Unrepresentable::Fail; 3],
                4,
            );
            d.feed(&stream[..split]).unwrap();
            d.feed(&stream[split..]).unwrap();
            assert!(d.is_finished());
            assert_eq!(d.leftover(), 0);
            let b = d.take_batch().unwrap();
            let a = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            assert_eq!(a.iter().collect::<Vec<_>>(), vec![Some(7), None]);
            let s = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(s.iter().collect::<Vec<_>>(), vec![Some("héllo"), Some("")]);
            let n = b
                .column(2)
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap();
            assert_eq!(n.value(0), 1_234_567);
            assert!(n.is_null(1));
        }
    }

    /// 24:00:00 follows the policy unless the target writes time as text; then it is kept, in
    /// both value formats and inside arrays, and a time beyond it is still malformed.
    #[test]
    fn end_of_day_is_kept_when_time_is_written_as_text() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Time64MicrosecondType;
        const DAY: i64 = 86_400_000_000;
        let mut exact = ColumnBuilder::new(&Decoder::Time, 1);
        assert!(matches!(
            exact.append(Some(&DAY.to_be_bytes()), Unrepresentable::Fail),
            Err(ValueError::Unrepresentable(_))
        ));
        assert!(matches!(
            exact.append_text(Some(b"24:00:00"), Unrepresentable::Fail),
            Err(ValueError::Unrepresentable(_))
        ));

        let mut t = ColumnBuilder::new(&Decoder::Time, 2).with_times_as_text(true);
        t.append(Some(&DAY.to_be_bytes()), Unrepresentable::Fail)
            .unwrap();
        t.append_text(Some(b"24:00:00"), Unrepresentable::Fail)
            .unwrap();
        assert!(matches!(
            t.append(Some(&(DAY + 1).to_be_bytes()), Unrepresentable::Fail),
            Err(ValueError::Malformed(_))
        ));
        let a = t.finish();
        assert_eq!(
            a.as_primitive::<Time64MicrosecondType>().values().to_vec(),
            vec![DAY, DAY]
        );

        let list = Decoder::Array(Box::new(Decoder::Time));
        let mut l = ColumnBuilder::new(&list, 1).with_times_as_text(true);
        l.append_text(Some(b"{24:00:00,12:00:00}"), Unrepresentable::Fail)
            .unwrap();
        let a = l.finish();
        let items = a.as_list::<i32>().value(0);
        assert_eq!(
            items
                .as_primitive::<Time64MicrosecondType>()
                .values()
                .to_vec(),
            vec![DAY, 12 * 3_600_000_000]
        );
    }

    #[test]
    fn arrays_and_policy() {
        let mut arr = Vec::new();
        arr.extend(1i32.to_be_bytes()); // ndim
        arr.extend(1i32.to_be_bytes()); // has nulls
        arr.extend(23i32.to_be_bytes()); // int4
        arr.extend(3i32.to_be_bytes()); // len
        arr.extend(1i32.to_be_bytes()); // lbound
        for x in [Some(1i32), None, Some(3)] {
            match x {
                Some(x) => {
                    arr.extend(4i32.to_be_bytes());
                    arr.extend(x.to_be_bytes());
                }
                None => arr.extend((-1i32).to_be_bytes()),
            }
        }
        let dec = Decoder::Array(Box::new(Decoder::Int4));
        let mut b = ColumnBuilder::new(&dec, 2);
        b.append(Some(&arr), Unrepresentable::Fail).unwrap();
        b.append(None, Unrepresentable::Fail).unwrap();
        let a = b.finish();
        let l = a.as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.is_null(1));
        let first = l.value(0);
        let ints = first.as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(
            ints.iter().collect::<Vec<_>>(),
            vec![Some(1), None, Some(3)]
        );

        let mut ts = ColumnBuilder::new(&Decoder::Timestamp, 1);
        assert!(ts
            .append(Some(&i64::MAX.to_be_bytes()), Unrepresentable::Fail)
            .is_err());
        ts.append(Some(&i64::MAX.to_be_bytes()), Unrepresentable::Null)
            .unwrap();
        ts.append(Some(&0i64.to_be_bytes()), Unrepresentable::Null)
            .unwrap();
        let a = ts.finish();
        assert!(a.is_null(0));
        assert_eq!(
            a.as_any()
                .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
                .unwrap()
                .value(1),
            EPOCH_MICROS
        );
    }
}
