//! Hashes of key ranges: the source server computes, per range of a table's first key column,
//! the row count and the sum of a 60-bit hash of each row's canonical text; the target side
//! computes the same from the rows it read back. Only the ranges whose (count, hash) differ are
//! then read from the source row by row. See the README's "Validate a task" for the canonical
//! text of each type and what falls back to row comparison.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type, Int8Type, Time64MicrosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampSecondType, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use inlet_core::validation::{RangeHashes, TableHashing};
use md5::{Digest, Md5};

use super::Span;
use crate::load_pool::source_error;
use crate::JobError;

/// Rows per range at most (by the source's estimate): finer than a full-load chunk, so that a
/// range that differs costs little to read again, and each range's statement is short.
const RANGE_ROWS: u64 = 10_000;
/// Ranges per table at most.
const MAX_RANGES: u64 = 100_000;

/// The ranges of one table: `[bounds[i-1], bounds[i])` of its first key column, the first and
/// last open; no bounds is one range, the whole table.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyRanges {
    /// The first key column (source name), None when the table is one range.
    pub(super) key: Option<String>,
    pub(super) bounds: Vec<i64>,
}

impl KeyRanges {
    /// `[min, max]` cut into ranges of about [`RANGE_ROWS`] rows (by `rows`, else the span)
    /// and at least `chunks` (the full load's chunks of the table).
    pub(super) fn plan(key: String, min: i64, max: i64, rows: Option<u64>, chunks: u64) -> Self {
        let span = (i128::from(max) - i128::from(min) + 1).max(1) as u128;
        let rows = rows
            .filter(|&r| r > 0)
            .unwrap_or(span.min(u128::from(u64::MAX)) as u64);
        let n = rows.div_ceil(RANGE_ROWS).max(chunks).clamp(1, MAX_RANGES) as u128;
        let step = (span / n).max(1);
        let mut bounds = Vec::new();
        let mut next = i128::from(min) + step as i128;
        while next <= i128::from(max) {
            bounds.push(next as i64);
            next += step as i128;
        }
        Self {
            key: Some(key),
            bounds,
        }
    }

    /// The whole table as one range.
    pub(super) fn whole() -> Self {
        Self::default()
    }

    pub(super) fn len(&self) -> usize {
        self.bounds.len() + 1
    }

    /// The range of a key whose first column is `v`.
    pub(super) fn index_of(&self, v: i64) -> u32 {
        self.bounds.partition_point(|b| *b <= v) as u32
    }

    /// `[start, end)` of range `i`.
    pub(super) fn span(&self, i: usize) -> (Option<i64>, Option<i64>) {
        let start = i.checked_sub(1).and_then(|j| self.bounds.get(j)).copied();
        (start, self.bounds.get(i).copied())
    }
}

/// The first key column's values of `array` (an integer column as the target holds it).
pub(super) fn key_values(array: &ArrayRef) -> Result<Vec<i64>, String> {
    let n = array.len();
    let get = |f: &dyn Fn(usize) -> i64| (0..n).map(f).collect::<Vec<i64>>();
    Ok(match array.data_type() {
        DataType::Int8 => get(&|i| i64::from(array.as_primitive::<Int8Type>().value(i))),
        DataType::Int16 => get(&|i| i64::from(array.as_primitive::<Int16Type>().value(i))),
        DataType::Int32 => get(&|i| i64::from(array.as_primitive::<Int32Type>().value(i))),
        DataType::Int64 => get(&|i| array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => get(&|i| i64::from(array.as_primitive::<UInt8Type>().value(i))),
        DataType::UInt16 => get(&|i| i64::from(array.as_primitive::<UInt16Type>().value(i))),
        DataType::UInt32 => get(&|i| i64::from(array.as_primitive::<UInt32Type>().value(i))),
        // Past i64::MAX: the last range (the server's bound is an i64 too).
        DataType::UInt64 => {
            get(&|i| i64::try_from(array.as_primitive::<UInt64Type>().value(i)).unwrap_or(i64::MAX))
        }
        DataType::Decimal128(_, 0) => get(&|i| {
            let v = array.as_primitive::<Decimal128Type>().value(i);
            i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
        }),
        other => return Err(format!("its first key column is {other}, not an integer")),
    })
}

/// Whether a column of this type (as the target holds it) has a canonical text.
pub(super) fn has_canonical_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::FixedSizeBinary(16)
            | DataType::Date32
            | DataType::Time64(TimeUnit::Microsecond)
            | DataType::Timestamp(
                TimeUnit::Second | TimeUnit::Millisecond | TimeUnit::Microsecond,
                _
            )
    )
}

/// The 60-bit hash of each row's canonical text (`columns` in the source's column order, as
/// the target holds them): the first 15 hex digits of its md5, as the server computes it. Each
/// column is `V<length>:<text>` or `N` (NULL), joined by the byte 0x1f: with the length, no
/// text can pass for a part of the next column's.
/// Rows `keep` marks false are not hashed (0).
pub(super) fn row_hashes(columns: &[ArrayRef], keep: Option<&[bool]>) -> Result<Vec<u64>, String> {
    let n = columns.first().map_or(0, |c| c.len());
    let mut out = Vec::with_capacity(n);
    let mut text = Vec::with_capacity(256);
    let mut value = Vec::with_capacity(64);
    for i in 0..n {
        if keep.is_some_and(|k| k.get(i) == Some(&false)) {
            out.push(0);
            continue;
        }
        text.clear();
        for (c, a) in columns.iter().enumerate() {
            if c > 0 {
                text.push(0x1f);
            }
            if a.is_null(i) {
                text.push(b'N');
            } else {
                value.clear();
                canonical(a, i, &mut value)?;
                // `V<length>:<text>`, the length in characters as the server's char_length()
                // counts them: the text is UTF-8, so every byte but a continuation byte
                // (10xxxxxx) starts a character.
                let chars = value.iter().filter(|b| (**b & 0xc0) != 0x80).count();
                text.push(b'V');
                text.extend_from_slice(chars.to_string().as_bytes());
                text.push(b':');
                text.extend_from_slice(&value);
            }
        }
        let digest = Md5::digest(&text);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        out.push(u64::from_be_bytes(first) >> 4);
    }
    Ok(out)
}

/// Appends the canonical text of value `i` (not NULL) of `a`.
fn canonical(a: &ArrayRef, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
    use std::io::Write;
    let w = |out: &mut Vec<u8>, v: &dyn std::fmt::Display| {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{v}");
    };
    match a.data_type() {
        DataType::Boolean => out.push(if a.as_boolean().value(i) { b't' } else { b'f' }),
        DataType::Int8 => w(out, &a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => w(out, &a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => w(out, &a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => w(out, &a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => w(out, &a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => w(out, &a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => w(out, &a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => w(out, &a.as_primitive::<UInt64Type>().value(i)),
        DataType::Decimal128(_, scale) => {
            decimal_text(a.as_primitive::<Decimal128Type>().value(i), *scale, out)
        }
        DataType::Utf8 => out.extend_from_slice(a.as_string::<i32>().value(i).as_bytes()),
        DataType::LargeUtf8 => out.extend_from_slice(a.as_string::<i64>().value(i).as_bytes()),
        DataType::Binary => hex(a.as_binary::<i32>().value(i), out),
        DataType::LargeBinary => hex(a.as_binary::<i64>().value(i), out),
        DataType::FixedSizeBinary(16) => {
            for (j, b) in a.as_fixed_size_binary().value(i).iter().enumerate() {
                if matches!(j, 4 | 6 | 8 | 10) {
                    out.push(b'-');
                }
                hex(&[*b], out);
            }
        }
        DataType::Date32 => w(out, &a.as_primitive::<Date32Type>().value(i)),
        DataType::Time64(TimeUnit::Microsecond) => out.extend_from_slice(
            inlet_core::time_text(a.as_primitive::<Time64MicrosecondType>().value(i)).as_bytes(),
        ),
        DataType::Timestamp(TimeUnit::Second, _) => w(
            out,
            &i128::from(a.as_primitive::<TimestampSecondType>().value(i)).saturating_mul(1_000_000),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => w(
            out,
            &(i128::from(a.as_primitive::<TimestampMillisecondType>().value(i)) * 1_000),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            w(out, &a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        other => return Err(format!("no canonical text for {other}")),
    }
    Ok(())
}

/// `123.45`, `-0.50`, `0.00`: the value with exactly `scale` fractional digits.
fn decimal_text(v: i128, scale: i8, out: &mut Vec<u8>) {
    if scale <= 0 {
        let v = v * 10i128.pow(u32::from(scale.unsigned_abs()));
        out.extend_from_slice(v.to_string().as_bytes());
        return;
    }
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let digits = format!("{digits:0>width$}", width = scale + 1);
    if v < 0 {
        out.push(b'-');
    }
    let (int, frac) = digits.split_at(digits.len() - scale);
    out.extend_from_slice(int.as_bytes());
    out.push(b'.');
    out.extend_from_slice(frac.as_bytes());
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// The count and hash sum of one range, on one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RangeSum {
    pub(super) rows: u64,
    pub(super) hash: u128,
}

impl RangeSum {
    pub(super) fn add(&mut self, hash: u64, copies: u32) {
        self.rows += u64::from(copies);
        self.hash += u128::from(hash) * u128::from(copies);
    }
}

/// What the source computes a table's range hashes with.
pub(super) struct RangePlan {
    pub(super) ranges: KeyRanges,
    hashing: TableHashing,
}

/// The ranges of table `t` and how the source hashes them, or why the table is compared row by
/// row. `written`: its columns' types as the target holds them, in the source's column order;
/// `estimate`: the source's estimate of its rows.
pub(super) async fn plan<R: RangeHashes>(
    source: &R,
    t: usize,
    written: &[DataType],
    estimate: Option<u64>,
) -> Result<Result<RangePlan, String>, JobError> {
    let hashing = match source.plan(t, written).await.map_err(source_error)? {
        Ok(hashing) => hashing,
        Err(why) => return Ok(Err(why)),
    };
    let ranges = match &hashing.key {
        Some((key, Some((min, max)))) => {
            KeyRanges::plan(key.clone(), *min, *max, estimate, hashing.chunks)
        }
        Some((_, None)) => KeyRanges::whole(),
        // One statement over the whole table holds its lock that long: only for a table of one
        // chunk.
        None if hashing.chunks <= 1 => KeyRanges::whole(),
        None => {
            return Ok(Err(
                "its key does not start with an integer column, and it is larger than one \
                 full-load chunk"
                    .into(),
            ))
        }
    };
    Ok(Ok(RangePlan { ranges, hashing }))
}

/// The source's (count, hash) of ranges `which` of table `t`.
pub(super) async fn hashes<R: RangeHashes>(
    source: &R,
    t: usize,
    plan: &RangePlan,
    which: &[usize],
) -> Result<Vec<RangeSum>, JobError> {
    let spans: Vec<Span> = which.iter().map(|&r| plan.ranges.span(r)).collect();
    let sums = source
        .hashes(t, &plan.hashing, plan.ranges.key.as_deref(), &spans)
        .await
        .map_err(source_error)?;
    Ok(sums
        .into_iter()
        .map(|(rows, hash)| RangeSum { rows, hash })
        .collect())
}

/// Reads the rows of table `t` in `span` of `key`, batch by batch, as the full load reads
/// them. Stops at `visit`'s first error.
pub(super) async fn read<R: RangeHashes>(
    source: &R,
    t: usize,
    key: Option<&str>,
    span: Span,
    mut visit: impl FnMut(RecordBatch) -> Result<(), JobError> + Send,
) -> Result<(), JobError> {
    let mut failed: Option<JobError> = None;
    let done = source
        .read(t, key, span, |batch| {
            visit(batch).map_err(|e| {
                let m = e.message().to_string();
                failed = Some(e);
                m
            })
        })
        .await
        .map_err(source_error)?;
    if let Err(m) = done {
        return Err(failed.unwrap_or(JobError::Failed(m)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_have_their_scale() {
        let t = |v, s| {
            let mut out = Vec::new();
            decimal_text(v, s, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(t(12345, 2), "123.45");
        assert_eq!(t(-50, 2), "-0.50");
        assert_eq!(t(0, 2), "0.00");
        assert_eq!(t(7, 0), "7");
        assert_eq!(t(-7, 3), "-0.007");
    }

    #[test]
    fn ranges_place_keys() {
        let r = KeyRanges::plan("id".into(), 1, 30_000, Some(30_000), 1);
        assert_eq!(r.len(), 3);
        assert_eq!(r.span(0), (None, Some(10_001)));
        assert_eq!(r.span(2), (Some(20_001), None));
        assert_eq!(r.index_of(1), 0);
        assert_eq!(r.index_of(10_001), 1);
        assert_eq!(r.index_of(i64::MAX), 2);
        assert_eq!(KeyRanges::whole().len(), 1);
    }

    #[test]
    fn row_hashes_are_md5_of_the_canonical_text() {
        use arrow_array::{Int64Array, StringArray};
        use std::sync::Arc;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1)])),
            Arc::new(StringArray::from(vec![None::<&str>])),
        ];
        // The first 60 bits of the digest, as the server's
        // ('x' || substr(md5(E'V1:1\x1fN'), 1, 15))::bit(60)::int8.
        let digest = Md5::digest(b"V1:1\x1fN");
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        assert_eq!(
            row_hashes(&columns, None).unwrap(),
            [u64::from_be_bytes(first) >> 4]
        );
    }

    #[test]
    fn text_moved_into_the_next_column_changes_the_hash() {
        use arrow_array::StringArray;
        use std::sync::Arc;
        // ("a\x1fVb", "c") and ("a", "b\x1fVc") joined as V<text> with 0x1f were the same
        // text ("Va\x1fVb\x1fVc"); each value's length tells them apart.
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a\x1fVb", "a", "é"])),
            Arc::new(StringArray::from(vec!["c", "b\x1fVc", "x"])),
        ];
        let hashes = row_hashes(&columns, None).unwrap();
        assert_ne!(hashes[0], hashes[1]);
        // The length counts characters, as char_length() does: "é" is 1, not its 2 bytes.
        let digest = Md5::digest("V1:é\x1fV1:x".as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        assert_eq!(hashes[2], u64::from_be_bytes(first) >> 4);
    }
}
