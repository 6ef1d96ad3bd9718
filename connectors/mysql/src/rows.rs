//! Row events → Arrow builders. A TABLE_MAP event describes the columns of the rows events that
//! follow it (with `binlog_row_metadata=FULL`: names, signedness, charsets, enum/set labels);
//! [`TableMapping`] matches those columns to the captured table's, so every row is decoded with
//! the shape the server wrote it in, never with a stale one. Row images are parsed column by
//! column and each value is appended to its column's builder as it is read.

use inlet_core::Unrepresentable;
use mysql_common::binlog::events::OptionalMetaExtractor;
use mysql_common::binlog::events::OptionalMetadataField;
use mysql_common::binlog::events::TableMapEvent;
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;

use crate::binlog::Flavor;
use crate::charset::charset_of_collation;
use crate::types::{plan_column, quote_label, ColumnPlan, MysqlType};

/// One column as a TABLE_MAP event describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BinlogColumn {
    pub col_type: ColumnType,
    pub meta: Vec<u8>,
    /// None when the event carries no signedness metadata.
    pub unsigned: Option<bool>,
    pub name: Option<String>,
    /// Collation id, for character, blob, enum and set columns.
    pub collation: Option<u16>,
    /// ENUM or SET labels.
    pub labels: Option<Vec<String>>,
}

impl BinlogColumn {
    /// The column as `information_schema.COLUMNS.COLUMN_TYPE` would show it, as far as the
    /// event tells (display widths and `tinyint(1)` are not in the binlog).
    pub fn column_type(&self) -> String {
        use ColumnType::*;
        let unsigned = if self.unsigned == Some(true) {
            " unsigned"
        } else {
            ""
        };
        let m0 = self.meta.first().copied().unwrap_or(0);
        let m1 = self.meta.get(1).copied().unwrap_or(0);
        let binary = self.collation == Some(63);
        let labels = || {
            self.labels
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|l| quote_label(l))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.col_type {
            MYSQL_TYPE_TINY => format!("tinyint{unsigned}"),
            MYSQL_TYPE_SHORT => format!("smallint{unsigned}"),
            MYSQL_TYPE_INT24 => format!("mediumint{unsigned}"),
            MYSQL_TYPE_LONG => format!("int{unsigned}"),
            MYSQL_TYPE_LONGLONG => format!("bigint{unsigned}"),
            MYSQL_TYPE_FLOAT => "float".into(),
            MYSQL_TYPE_DOUBLE => "double".into(),
            MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => format!("decimal({m0},{m1})"),
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => "date".into(),
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => format!("time({m0})"),
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => format!("datetime({m0})"),
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => format!("timestamp({m0})"),
            MYSQL_TYPE_YEAR => "year".into(),
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING if binary => "varbinary".into(),
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => "varchar".into(),
            MYSQL_TYPE_STRING if binary => {
                // CHAR's metadata: real type and length packed in two bytes (see MySQL's
                // Field_string::do_save_field_metadata).
                let len = u32::from(m1) | ((u32::from(m0) & 0x30) ^ 0x30) << 4;
                format!("binary({len})")
            }
            MYSQL_TYPE_STRING => "char".into(),
            MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB => {
                let size = ["tiny", "", "medium", "long"][usize::from(m0.clamp(1, 4) - 1)];
                if binary || self.collation.is_none() {
                    format!("{size}blob")
                } else {
                    format!("{size}text")
                }
            }
            MYSQL_TYPE_JSON => "json".into(),
            MYSQL_TYPE_GEOMETRY => "geometry".into(),
            MYSQL_TYPE_VECTOR => "vector".into(),
            MYSQL_TYPE_BIT => format!("bit({})", u32::from(m1) * 8 + u32::from(m0)),
            MYSQL_TYPE_ENUM => format!("enum({})", labels()),
            MYSQL_TYPE_SET => format!("set({})", labels()),
            other => format!("{other:?}"),
        }
    }

    fn charset(&self) -> Option<&'static str> {
        self.collation.and_then(charset_of_collation)
    }

    /// A plan for a column known only from the binlog (added after discovery).
    pub fn plan(&self, name: &str, policy: Unrepresentable) -> ColumnPlan {
        plan_column(name, &self.column_type(), self.charset(), true, policy)
    }
}

/// Whether a column of this binlog type has an entry in the TABLE_MAP's character-column
/// charset list (DEFAULT_CHARSET / COLUMN_CHARSET; ENUM and SET have a list of their own).
/// The servers differ: MySQL's `is_character_type` (log_event.cc) counts CHAR, VARCHAR, the
/// BLOB/TEXT family and (MySQL 9) VECTOR; MariaDB's counts every column with a charset but
/// ENUM and SET, and GEOMETRY has one (binary: its base class is BLOB). Skipping a column the
/// server counts, or counting one it skips, gives every later character column its
/// neighbour's charset.
fn in_charset_list(col_type: ColumnType, flavor: Flavor) -> bool {
    col_type.is_character_type()
        || match flavor {
            Flavor::Mysql => col_type == ColumnType::MYSQL_TYPE_VECTOR,
            Flavor::MariaDb => col_type == ColumnType::MYSQL_TYPE_GEOMETRY,
        }
}

/// Reads the column descriptions out of a TABLE_MAP event written by a `flavor` server.
pub(crate) fn describe_table_map(
    tme: &TableMapEvent<'_>,
    flavor: Flavor,
) -> Result<Vec<BinlogColumn>, String> {
    let n = tme.columns_count() as usize;
    let mut cols = Vec::with_capacity(n);
    for i in 0..n {
        let col_type = tme
            .get_column_type(i)
            .map_err(|e| format!("column {i}: {e}"))?
            .ok_or_else(|| format!("column {i} has no type"))?;
        cols.push(BinlogColumn {
            col_type,
            meta: tme.get_column_metadata(i).unwrap_or(&[]).to_vec(),
            unsigned: None,
            name: None,
            collation: None,
            labels: None,
        });
    }
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| format!("optional metadata: {e}"))?;
    let has_signedness = tme
        .iter_optional_meta()
        .any(|f| matches!(f, Ok(OptionalMetadataField::Signedness(_))));
    if has_signedness {
        let mut signs = extractor.iter_signedness();
        for c in cols.iter_mut().filter(|c| c.col_type.is_numeric_type()) {
            c.unsigned = Some(signs.next().unwrap_or(false));
        }
    }
    let mut names = extractor.iter_column_name();
    for c in cols.iter_mut() {
        match names.next() {
            Some(name) => {
                c.name = Some(
                    name.map_err(|e| format!("column names: {e}"))?
                        .name()
                        .into_owned(),
                )
            }
            None => break,
        }
    }
    let mut charsets = extractor.iter_charset();
    for c in cols
        .iter_mut()
        .filter(|c| in_charset_list(c.col_type, flavor))
    {
        match charsets.next() {
            Some(cs) => c.collation = Some(cs.map_err(|e| format!("charsets: {e}"))?),
            None => break,
        }
    }
    let mut es_charsets = extractor.iter_enum_and_set_charset();
    for c in cols.iter_mut().filter(|c| c.col_type.is_enum_or_set_type()) {
        match es_charsets.next() {
            Some(cs) => c.collation = Some(cs.map_err(|e| format!("charsets: {e}"))?),
            None => break,
        }
    }
    for field in tme.iter_optional_meta() {
        match field.map_err(|e| format!("optional metadata: {e}"))? {
            OptionalMetadataField::EnumStrValue(values) => {
                let mut it = values.iter_values();
                for c in cols
                    .iter_mut()
                    .filter(|c| c.col_type == ColumnType::MYSQL_TYPE_ENUM)
                {
                    if let Some(v) = it.next() {
                        let v = v.map_err(|e| format!("enum labels: {e}"))?;
                        c.labels =
                            Some(v.values().iter().map(|l| l.value().into_owned()).collect());
                    }
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                let mut it = values.iter_values();
                for c in cols
                    .iter_mut()
                    .filter(|c| c.col_type == ColumnType::MYSQL_TYPE_SET)
                {
                    if let Some(v) = it.next() {
                        let v = v.map_err(|e| format!("set labels: {e}"))?;
                        c.labels =
                            Some(v.values().iter().map(|l| l.value().into_owned()).collect());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(cols)
}

/// Do values of a binlog column decode correctly into a column planned as `ours`? The binlog
/// cannot tell `tinyint(1)` from `tinyint`, nor (without full metadata) signedness, charsets or
/// labels; what it can tell must agree.
pub(crate) fn compatible(ours: &MysqlType, theirs: &BinlogColumn, policy: Unrepresentable) -> bool {
    let plan = theirs.plan("c", policy);
    let t = &plan.decoder;
    match (ours, t) {
        (MysqlType::Bool, MysqlType::Int { bytes: 1, .. }) => true,
        (MysqlType::Bool, MysqlType::Bool) => true,
        (
            MysqlType::Int {
                bytes: a,
                unsigned: ua,
            },
            MysqlType::Int {
                bytes: b,
                unsigned: ub,
            },
        ) => a == b && (ua == ub || theirs.unsigned.is_none()),
        (MysqlType::String { charset: a }, MysqlType::String { charset: b }) => {
            theirs.collation.is_none() || a == b || same_utf8(a, b)
        }
        // JSON is LONGTEXT on MariaDB.
        (MysqlType::Json, MysqlType::String { .. }) => true,
        (MysqlType::Binary, MysqlType::Binary) => true,
        (MysqlType::Binary, MysqlType::String { .. }) => theirs.collation.is_none(),
        (MysqlType::FixedBinary { .. }, MysqlType::FixedBinary { .. }) => true,
        (MysqlType::FixedBinary { .. }, MysqlType::String { .. }) => theirs.collation.is_none(),
        (MysqlType::Enum { labels: a }, MysqlType::Enum { labels: b })
        | (MysqlType::Set { labels: a }, MysqlType::Set { labels: b }) => {
            theirs.labels.is_none() || a == b || catalog_lost_characters(a, b)
        }
        // MariaDB's uuid/inet6/inet4 reach the binlog as fixed binary strings.
        (
            MysqlType::Uuid | MysqlType::Inet6 | MysqlType::Inet4,
            MysqlType::FixedBinary { .. } | MysqlType::Binary,
        ) => true,
        (MysqlType::Uuid | MysqlType::Inet6 | MysqlType::Inet4, MysqlType::String { .. }) => {
            theirs.collation.is_none() || theirs.collation == Some(63)
        }
        (MysqlType::Text { .. }, MysqlType::Text { .. }) => true,
        (MysqlType::Text { .. }, MysqlType::Decimal { .. } | MysqlType::String { .. }) => true,
        (a, b) => a == b,
    }
}

/// Whether enum/set labels read from the catalog (`ours`) are the binlog's (`theirs`) with the
/// characters the catalog cannot hold shown as '?': MariaDB keeps column definitions in
/// utf8mb3, so `information_schema` (and SHOW CREATE TABLE) shows an emoji label as `?`, while
/// the TABLE_MAP carries it whole.
pub(crate) fn catalog_lost_characters(ours: &[String], theirs: &[String]) -> bool {
    ours.len() == theirs.len()
        && ours.iter().zip(theirs).all(|(a, b)| {
            a == b || {
                let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
                a.len() == b.len()
                    && a.iter()
                        .zip(&b)
                        .all(|(x, y)| x == y || (*x == '?' && u32::from(*y) > 0xffff))
            }
        })
}

fn same_utf8(a: &str, b: &str) -> bool {
    let utf8 = |s: &str| matches!(s, "utf8" | "utf8mb3" | "utf8mb4");
    utf8(a) && utf8(b)
}

/// How one TABLE_MAP's columns map onto a captured table.
#[derive(Debug, Clone)]
pub(crate) struct TableMapping {
    pub table: usize,
    pub columns: Vec<BinlogColumn>,
    /// For each binlog column, the table column it fills (None: excluded or ignored).
    pub targets: Vec<Option<usize>>,
}

/// A decoded row image: for each table column, the value if the image holds the column.
pub(crate) type Image = Vec<Option<BinlogValue<'static>>>;

/// Parses the row image at the start of `data` into `out` (indexed by table column); returns
/// the bytes it took.
pub(crate) fn read_image(
    data: &[u8],
    mapping: &TableMapping,
    present: &[bool],
    table_columns: usize,
    out: &mut Image,
) -> Result<usize, String> {
    let mut buf = ParseBuf(data);
    let buf = &mut buf;
    out.clear();
    out.resize(table_columns, None);
    let n_present = present.iter().filter(|p| **p).count();
    let null_bytes = n_present.div_ceil(8);
    let nulls: &[u8] = buf
        .checked_eat(null_bytes)
        .ok_or("row image truncated in its null bitmap")?;
    let mut k = 0usize;
    for (i, col) in mapping.columns.iter().enumerate() {
        if !present.get(i).copied().unwrap_or(false) {
            continue;
        }
        let is_null = nulls[k / 8] & (1 << (k % 8)) != 0;
        k += 1;
        let value = if is_null {
            BinlogValue::Value(mysql_common::Value::NULL)
        } else if col.col_type == ColumnType::MYSQL_TYPE_TIME2
            && matches!(col.meta.first(), Some(1 | 2))
        {
            let bytes = buf.checked_eat(4).ok_or_else(|| {
                format!(
                    "column {}: row image truncated in a TIME value",
                    col.name.clone().unwrap_or_else(|| format!("#{i}"))
                )
            })?;
            BinlogValue::Value(time2_hundredths(bytes).map_err(|e| {
                format!(
                    "column {}: {e}",
                    col.name.clone().unwrap_or_else(|| format!("#{i}"))
                )
            })?)
        } else {
            let ctx = (
                col.col_type,
                col.meta.as_slice(),
                col.unsigned.unwrap_or(false),
                false,
            );
            buf.parse::<BinlogValue<'_>>(ctx)
                .map_err(|e| {
                    format!(
                        "column {}: {e}",
                        col.name.clone().unwrap_or_else(|| format!("#{i}"))
                    )
                })?
                .into_owned()
        };
        if let Some(Some(t)) = mapping.targets.get(i) {
            out[*t] = Some(value);
        }
    }
    Ok(data.len() - buf.0.len())
}

/// A TIME(1) or TIME(2) value of a row image (MYSQL_TYPE_TIME2 with 1 or 2 fractional digits):
/// 3 bytes big-endian, the packed hours (10 bits), minutes and seconds (6 bits each) offset by
/// 0x800000, then 1 byte of hundredths, which a negative time stores as a complement.
/// Decoded here, not by mysql_common: its `my_time_packed_from_binary` (0.37.3, and still
/// 0.38.2) subtracts 0x100 from an unsigned fraction for a negative time with a fraction,
/// which panics in a debug build and yields a wrong positive time in a release build. The
/// arithmetic is MySQL's own (`my_time_packed_from_binary` in mysys/my_time.cc), on signed
/// integers; bytes no server writes are an error, never a wrapped value.
pub(crate) fn time2_hundredths(bytes: &[u8]) -> Result<mysql_common::Value, String> {
    let &[b0, b1, b2, b3] = bytes else {
        return Err(format!(
            "a TIME(1) or TIME(2) value takes 4 bytes, not {}",
            bytes.len()
        ));
    };
    const TIMEF_INT_OFS: i64 = 0x80_0000;
    let mut intpart =
        ((i64::from(b0) << 16) | (i64::from(b1) << 8) | i64::from(b2)) - TIMEF_INT_OFS;
    let mut frac = i64::from(b3);
    if intpart < 0 && frac != 0 {
        // The fraction of a negative time counts back from the next whole second.
        intpart += 1;
        frac -= 0x100;
    }
    // MY_PACKED_TIME_MAKE: |intpart| <= 2^23, so the product stays far inside an i64.
    let packed = intpart * (1 << 24) + frac * 10_000;
    let neg = packed < 0;
    let magnitude = packed.abs();
    let hms = magnitude >> 24;
    let micros = magnitude % (1 << 24);
    let hours = (hms >> 12) % (1 << 10);
    let minutes = (hms >> 6) % (1 << 6);
    let seconds = hms % (1 << 6);
    // A server writes hours up to 838, minutes and seconds below 60 and whole hundredths;
    // anything else is corrupt bytes, not a time.
    if hms >> 22 != 0 || hours > 838 || minutes > 59 || seconds > 59 || micros >= 1_000_000 {
        return Err(format!(
            "the bytes {:02x} {:02x} {:02x} {:02x} are not a TIME(1) or TIME(2) value",
            b0, b1, b2, b3
        ));
    }
    // The casts cannot truncate: hours <= 838, minutes and seconds < 60, micros < 10^6.
    Ok(mysql_common::Value::Time(
        neg,
        (hours / 24) as u32,
        (hours % 24) as u8,
        minutes as u8,
        seconds as u8,
        micros as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::time2_hundredths;
    use mysql_common::Value;

    /// The bytes MySQL's `my_time_packed_to_binary` writes for a TIME(2) of sign `neg` and the
    /// given parts (`hundredths` < 100).
    fn encode(neg: bool, hours: i64, minutes: i64, seconds: i64, hundredths: i64) -> [u8; 4] {
        let magnitude = ((hours << 12 | minutes << 6 | seconds) << 24) + hundredths * 10_000;
        let packed = if neg { -magnitude } else { magnitude };
        // MY_PACKED_TIME_GET_INT_PART (an arithmetic shift) and GET_FRAC_PART (a remainder
        // that keeps the sign), as MySQL stores them.
        let int = (packed >> 24) + 0x80_0000;
        let frac = (packed % (1 << 24)) / 10_000;
        [
            (int >> 16) as u8,
            (int >> 8) as u8,
            int as u8,
            frac as i8 as u8,
        ]
    }

    #[test]
    fn negative_and_positive_times_with_hundredths_decode_as_mysql_wrote_them() {
        let cases: &[(bool, i64, i64, i64, i64, Value)] = &[
            (true, 0, 0, 0, 50, Value::Time(true, 0, 0, 0, 0, 500_000)),
            (
                true,
                12,
                34,
                56,
                70,
                Value::Time(true, 0, 12, 34, 56, 700_000),
            ),
            (
                true,
                838,
                59,
                58,
                90,
                Value::Time(true, 34, 22, 59, 58, 900_000),
            ),
            (true, 838, 59, 59, 0, Value::Time(true, 34, 22, 59, 59, 0)),
            (true, 0, 0, 1, 25, Value::Time(true, 0, 0, 0, 1, 250_000)),
            (true, 1, 2, 3, 99, Value::Time(true, 0, 1, 2, 3, 990_000)),
            (true, 0, 0, 0, 1, Value::Time(true, 0, 0, 0, 0, 10_000)),
            (true, 0, 0, 1, 0, Value::Time(true, 0, 0, 0, 1, 0)),
            (false, 0, 0, 0, 0, Value::Time(false, 0, 0, 0, 0, 0)),
            (false, 0, 0, 0, 99, Value::Time(false, 0, 0, 0, 0, 990_000)),
            (
                false,
                12,
                34,
                56,
                70,
                Value::Time(false, 0, 12, 34, 56, 700_000),
            ),
            (false, 838, 59, 59, 0, Value::Time(false, 34, 22, 59, 59, 0)),
            (
                false,
                838,
                59,
                58,
                90,
                Value::Time(false, 34, 22, 59, 58, 900_000),
            ),
        ];
        for (neg, h, m, s, c, want) in cases {
            let bytes = encode(*neg, *h, *m, *s, *c);
            assert_eq!(
                time2_hundredths(&bytes).as_ref(),
                Ok(want),
                "{bytes:02x?} ({neg} {h}:{m}:{s}.{c})"
            );
        }
        // The bytes themselves, for -00:00:00.5: the whole second before zero, then 0xce
        // (-50 as a byte).
        assert_eq!(encode(true, 0, 0, 0, 50), [0x7f, 0xff, 0xff, 0xce]);
        assert_eq!(encode(false, 0, 0, 0, 0), [0x80, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn bytes_no_server_writes_are_an_error() {
        let bad: &[[u8; 4]] = &[
            // 100 hundredths
            [0x80, 0x00, 0x00, 0x64],
            // second 60, minute 60, hour 839
            [0x80, 0x00, 0x3c, 0x00],
            [0x80, 0x0f, 0x00, 0x00],
            [0xb4, 0x70, 0x00, 0x00],
            // the most negative offset (beyond the 22 bits of hours, minutes, seconds), and a
            // negative fraction of -1.01 s
            [0x00, 0x00, 0x00, 0x00],
            [0x7f, 0xff, 0xff, 0x9b],
        ];
        for bytes in bad {
            let err = time2_hundredths(bytes).unwrap_err();
            assert!(
                err.contains("are not a TIME(1) or TIME(2) value"),
                "{bytes:02x?}: {err}"
            );
        }
        assert_eq!(
            time2_hundredths(&[0x80, 0x00]).unwrap_err(),
            "a TIME(1) or TIME(2) value takes 4 bytes, not 2"
        );
    }
}
