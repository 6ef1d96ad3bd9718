//! MySQL/MariaDB column type → Arrow type (DESIGN.md's mapping table), per column: what Arrow
//! field a column becomes and how its values are decoded, planned once from
//! `information_schema.COLUMNS.COLUMN_TYPE` (`int(10) unsigned`, `enum('a','b')`, …).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use inlet_core::{Unrepresentable, JSON_EXTENSION};

/// How a column's values are decoded into Arrow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MysqlType {
    /// tinyint(1)/bool and bit(1).
    Bool,
    /// Integers: `bytes` is the source width (1, 2, 3, 4, 8); the Arrow type is one size up
    /// when unsigned.
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Float,
    Double,
    /// decimal(p,s) with p <= 38.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// decimal with p > 38, or any temporal column under `on_unrepresentable = "text"`: the
    /// source's exact text. `fsp` is the column's fractional-second digits, for rendering
    /// temporal values from the binlog exactly as the server renders them.
    Text {
        fsp: u8,
        date_only: bool,
        /// A TIMESTAMP: the binlog sends it as seconds since the epoch, rendered in UTC.
        epoch: bool,
    },
    /// char, varchar, text in `charset` (the server's name); decoded to UTF-8.
    String {
        charset: Arc<str>,
    },
    /// varbinary, blob.
    Binary,
    /// binary(n): the server pads with 0x00 and the binlog strips the padding, so values from
    /// the binlog are padded back to `len`.
    FixedBinary {
        len: u32,
    },
    Date,
    Year,
    Time,
    DateTime,
    Timestamp,
    Json,
    /// The label; `labels[i]` is index i+1.
    Enum {
        labels: Arc<[String]>,
    },
    /// List of labels; bit i of the value is `labels[i]`.
    Set {
        labels: Arc<[String]>,
    },
    /// bit(n), n > 1: the n binary digits as text, as `BIN()` shows them zero-padded.
    Bits {
        width: u16,
    },
    /// geometry types: WKB, without MySQL's leading 4-byte SRID.
    Geometry,
    /// MariaDB's fixed-size binary types with a text form: `uuid` (16 bytes), `inet6` (16),
    /// `inet4` (4). The full load reads the server's text; the binlog carries the stored
    /// bytes, which are rendered to the same text.
    Uuid,
    Inet6,
    Inet4,
}

impl MysqlType {
    pub fn data_type(&self) -> DataType {
        match self {
            MysqlType::Bool => DataType::Boolean,
            MysqlType::Int { bytes, unsigned } => match (bytes, unsigned) {
                (1, _) | (2, false) => DataType::Int16,
                (2, true) | (3, _) | (4, false) => DataType::Int32,
                (4, true) | (8, false) => DataType::Int64,
                _ => DataType::Decimal128(20, 0),
            },
            MysqlType::Float => DataType::Float32,
            MysqlType::Double => DataType::Float64,
            MysqlType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            MysqlType::Text { .. }
            | MysqlType::String { .. }
            | MysqlType::Json
            | MysqlType::Enum { .. }
            | MysqlType::Bits { .. }
            | MysqlType::Uuid
            | MysqlType::Inet6
            | MysqlType::Inet4 => DataType::Utf8,
            MysqlType::Binary | MysqlType::FixedBinary { .. } | MysqlType::Geometry => {
                DataType::Binary
            }
            MysqlType::Date => DataType::Date32,
            MysqlType::Year => DataType::Int16,
            MysqlType::Time => DataType::Time64(TimeUnit::Microsecond),
            MysqlType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MysqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            MysqlType::Set { .. } => {
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
            }
        }
    }

    /// Can a value of this column be one Arrow cannot hold (a zero date, a TIME outside a day)?
    pub fn may_be_unrepresentable(&self) -> bool {
        matches!(
            self,
            // A tinyint(1) is read as a boolean and may hold any other tinyint.
            MysqlType::Bool
                | MysqlType::Date
                | MysqlType::Time
                | MysqlType::DateTime
                | MysqlType::Timestamp
        )
    }
}

/// Why a column of this `COLUMN_TYPE` cannot be replicated, or None. VECTOR (MySQL 9,
/// MariaDB 11.7) has no entry in DESIGN.md's mapping yet, and read as text its float bytes
/// would load as garbage rather than fail.
pub(crate) fn unsupported(table: &str, column: &str, column_type: &str) -> Option<String> {
    let t = column_type.trim_start().to_ascii_lowercase();
    t.starts_with("vector").then(|| {
        format!(
            "column {column} is {column_type}, which inlet does not replicate yet; exclude it: \
             [tables.exclude_columns] \"{table}\" = [\"{column}\"]"
        )
    })
}

/// How one source column is read and written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnPlan {
    pub name: String,
    /// `COLUMN_TYPE` as the server shows it, without display widths (`int unsigned`).
    pub source_type: String,
    pub decoder: MysqlType,
    pub field: Field,
    /// The column's own value policy (`[values.columns]`, else the task's default): what an
    /// unrepresentable value becomes when it is decoded.
    pub policy: Unrepresentable,
}

/// Plans a column from `COLUMN_TYPE` (`decimal(12,2)`, `int(10) unsigned`, `enum('a','b')`)
/// and `CHARACTER_SET_NAME`.
pub(crate) fn plan_column(
    name: &str,
    column_type: &str,
    charset: Option<&str>,
    nullable: bool,
    policy: Unrepresentable,
) -> ColumnPlan {
    let lower = column_type.trim().to_ascii_lowercase();
    let (base, _, rest) = split_type(&lower);
    // Labels keep their case.
    let (_, args, _) = split_type(column_type.trim());
    let unsigned = rest.split_whitespace().any(|w| w == "unsigned");
    let arg = |i: usize| -> Option<u32> { args.get(i).and_then(|a| a.trim().parse().ok()) };
    let text_policy = policy == Unrepresentable::Text;
    let fsp = arg(0).unwrap_or(0).min(6) as u8;
    let decoder = match base.as_str() {
        // Under "text" a tinyint(1) is the plain tinyint, so a value other than 0 or 1 is kept
        // exactly (as the number, which needs no text to be exact).
        "tinyint" if arg(0) == Some(1) && !unsigned && text_policy => MysqlType::Int {
            bytes: 1,
            unsigned: false,
        },
        "tinyint" if arg(0) == Some(1) && !unsigned => MysqlType::Bool,
        "bool" | "boolean" => MysqlType::Bool,
        "tinyint" => MysqlType::Int { bytes: 1, unsigned },
        "smallint" => MysqlType::Int { bytes: 2, unsigned },
        "mediumint" => MysqlType::Int { bytes: 3, unsigned },
        "int" | "integer" => MysqlType::Int { bytes: 4, unsigned },
        "bigint" => MysqlType::Int { bytes: 8, unsigned },
        "float" => MysqlType::Float,
        "double" | "real" | "double precision" => MysqlType::Double,
        "decimal" | "numeric" | "dec" | "fixed" => {
            let precision = arg(0).unwrap_or(10);
            let scale = arg(1).unwrap_or(0);
            if precision <= 38 && scale <= precision {
                MysqlType::Decimal {
                    precision: precision as u8,
                    scale: scale as i8,
                }
            } else {
                MysqlType::Text {
                    fsp: 0,
                    date_only: false,
                    epoch: false,
                }
            }
        }
        "char" | "nchar" if charset == Some("binary") => MysqlType::FixedBinary {
            len: arg(0).unwrap_or(1),
        },
        "binary" => MysqlType::FixedBinary {
            len: arg(0).unwrap_or(1),
        },
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "nchar"
        | "nvarchar" => match charset {
            Some("binary") => MysqlType::Binary,
            cs => MysqlType::String {
                charset: cs.unwrap_or("utf8mb4").into(),
            },
        },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => MysqlType::Binary,
        "date" if text_policy => MysqlType::Text {
            fsp: 0,
            date_only: true,
            epoch: false,
        },
        "date" => MysqlType::Date,
        "year" => MysqlType::Year,
        "time" if text_policy => MysqlType::Text {
            fsp,
            date_only: false,
            epoch: false,
        },
        "time" => MysqlType::Time,
        "datetime" if text_policy => MysqlType::Text {
            fsp,
            date_only: false,
            epoch: false,
        },
        "datetime" => MysqlType::DateTime,
        "timestamp" if text_policy => MysqlType::Text {
            fsp,
            date_only: false,
            epoch: true,
        },
        "timestamp" => MysqlType::Timestamp,
        "json" => MysqlType::Json,
        "enum" => MysqlType::Enum {
            labels: parse_labels(&args).into(),
        },
        "set" => MysqlType::Set {
            labels: parse_labels(&args).into(),
        },
        "bit" if arg(0).unwrap_or(1) == 1 => MysqlType::Bool,
        "bit" => MysqlType::Bits {
            width: arg(0).unwrap_or(1) as u16,
        },
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => MysqlType::Geometry,
        "uuid" => MysqlType::Uuid,
        "inet6" => MysqlType::Inet6,
        "inet4" => MysqlType::Inet4,
        // Anything newer: the server's text form.
        _ => MysqlType::String {
            charset: "utf8mb4".into(),
        },
    };
    let nullable =
        nullable || (policy == Unrepresentable::Null && decoder.may_be_unrepresentable());
    let mut field = Field::new(name, decoder.data_type(), nullable);
    if decoder == MysqlType::Json {
        field = field.with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            JSON_EXTENSION.to_string(),
        )]));
    }
    ColumnPlan {
        name: name.to_string(),
        source_type: source_type_name(column_type.trim()),
        decoder,
        field,
        policy,
    }
}

/// `COLUMN_TYPE` without integer display widths and `zerofill`, which MySQL 8 dropped and
/// which say nothing about the values: `int(10) unsigned` → `int unsigned`. `tinyint(1)` keeps
/// its width, since it marks a boolean.
fn source_type_name(original: &str) -> String {
    let lower = original.to_ascii_lowercase();
    let (base, _, rest) = split_type(&lower);
    let (_, args, _) = split_type(original);
    let is_int = matches!(
        base.as_str(),
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
    );
    let keep_args = !(is_int && !(base == "tinyint" && args.len() == 1 && args[0] == "1"));
    let mut s = base.clone();
    if keep_args && !args.is_empty() {
        let inner = original
            .find('(')
            .zip(original.rfind(')'))
            .map(|(a, b)| &original[a + 1..b])
            .unwrap_or("");
        s.push('(');
        s.push_str(inner);
        s.push(')');
    }
    for w in rest.split_whitespace() {
        if w != "zerofill" {
            s.push(' ');
            s.push_str(w);
        }
    }
    s
}

/// `enum('a','b') unsigned` → ("enum", ["'a'", "'b'"], " unsigned"). Quoted arguments may
/// hold commas and parentheses.
fn split_type(t: &str) -> (String, Vec<String>, String) {
    let Some(open) = t.find('(') else {
        let (base, rest) = match t.find(' ') {
            // "double precision" is one type name.
            Some(i) if !t.starts_with("double precision") => (&t[..i], &t[i..]),
            _ => (t, ""),
        };
        return (base.to_string(), Vec::new(), rest.to_string());
    };
    let base = t[..open].trim().to_string();
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let bytes: Vec<char> = t[open + 1..].chars().collect();
    let mut i = 0;
    let mut end = bytes.len();
    while i < bytes.len() {
        let c = bytes[i];
        if in_quote {
            if c == '\'' {
                if bytes.get(i + 1) == Some(&'\'') {
                    cur.push_str("''");
                    i += 2;
                    continue;
                }
                in_quote = false;
            }
            cur.push(c);
        } else if c == '\'' {
            in_quote = true;
            cur.push(c);
        } else if c == ',' {
            args.push(std::mem::take(&mut cur));
        } else if c == ')' {
            end = i;
            break;
        } else {
            cur.push(c);
        }
        i += 1;
    }
    args.push(cur);
    let rest: String = bytes.get(end + 1..).unwrap_or(&[]).iter().collect();
    (base, args, rest)
}

/// The labels of `enum('a','it''s')`: quotes removed, doubled quotes and backslash escapes
/// undone.
fn parse_labels(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let a = a.trim();
            let inner = a
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .unwrap_or(a);
            inner.replace("''", "'").replace("\\\\", "\\")
        })
        .collect()
}

/// An enum/set label quoted as in `COLUMN_TYPE`.
pub(crate) fn quote_label(label: &str) -> String {
    format!("'{}'", label.replace('\\', "\\\\").replace('\'', "''"))
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(t: &str) -> ColumnPlan {
        plan_column("c", t, Some("utf8mb4"), true, Unrepresentable::Fail)
    }

    #[test]
    fn mapping_table() {
        let cases: &[(&str, DataType, &str)] = &[
            ("tinyint(1)", DataType::Boolean, "tinyint(1)"),
            ("bit(1)", DataType::Boolean, "bit(1)"),
            ("tinyint(4)", DataType::Int16, "tinyint"),
            ("tinyint(3) unsigned", DataType::Int16, "tinyint unsigned"),
            ("smallint(6)", DataType::Int16, "smallint"),
            ("smallint(5) unsigned", DataType::Int32, "smallint unsigned"),
            (
                "mediumint(8) unsigned",
                DataType::Int32,
                "mediumint unsigned",
            ),
            ("int(11)", DataType::Int32, "int"),
            ("int(10) unsigned zerofill", DataType::Int64, "int unsigned"),
            ("bigint(20)", DataType::Int64, "bigint"),
            (
                "bigint(20) unsigned",
                DataType::Decimal128(20, 0),
                "bigint unsigned",
            ),
            ("float", DataType::Float32, "float"),
            ("double", DataType::Float64, "double"),
            (
                "decimal(12,2)",
                DataType::Decimal128(12, 2),
                "decimal(12,2)",
            ),
            ("decimal(65,10)", DataType::Utf8, "decimal(65,10)"),
            ("varchar(20)", DataType::Utf8, "varchar(20)"),
            ("varbinary(20)", DataType::Binary, "varbinary(20)"),
            ("longblob", DataType::Binary, "longblob"),
            ("date", DataType::Date32, "date"),
            ("year(4)", DataType::Int16, "year(4)"),
            (
                "time(3)",
                DataType::Time64(TimeUnit::Microsecond),
                "time(3)",
            ),
            (
                "datetime(6)",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "datetime(6)",
            ),
            (
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "timestamp",
            ),
            ("json", DataType::Utf8, "json"),
            ("bit(12)", DataType::Utf8, "bit(12)"),
            ("point", DataType::Binary, "point"),
        ];
        for (t, dt, name) in cases {
            let p = plan(t);
            assert_eq!(p.field.data_type(), dt, "{t}");
            assert_eq!(p.source_type, *name, "{t}");
        }
        assert_eq!(
            plan("json").field.metadata().get("ARROW:extension:name"),
            Some(&JSON_EXTENSION.to_string())
        );
        let char_binary = plan_column("c", "char(4)", Some("binary"), true, Unrepresentable::Fail);
        assert_eq!(char_binary.decoder, MysqlType::FixedBinary { len: 4 });
    }

    #[test]
    fn enum_and_set_labels() {
        let p = plan("enum('a','it''s','x,y','p(q)')");
        assert_eq!(
            p.decoder,
            MysqlType::Enum {
                labels: vec!["a".into(), "it's".into(), "x,y".into(), "p(q)".into()].into()
            }
        );
        let p = plan("ENUM('Ab','cD')");
        assert_eq!(p.source_type, "enum('Ab','cD')");
        let p = plan("set('r','w','x')");
        assert_eq!(
            p.field.data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
        );
    }

    #[test]
    fn unrepresentable_policies() {
        let p = plan_column("d", "date", None, false, Unrepresentable::Text);
        assert_eq!(
            p.decoder,
            MysqlType::Text {
                fsp: 0,
                date_only: true,
                epoch: false
            }
        );
        let p = plan_column("d", "datetime(3)", None, false, Unrepresentable::Null);
        assert!(p.field.is_nullable());
        let p = plan_column("d", "datetime(3)", None, false, Unrepresentable::Fail);
        assert!(!p.field.is_nullable());
        // A tinyint(1) may hold 2: NULL needs a nullable field, and "text" keeps the number.
        let p = plan_column("b", "tinyint(1)", None, false, Unrepresentable::Null);
        assert_eq!(p.decoder, MysqlType::Bool);
        assert!(p.field.is_nullable());
        let p = plan_column("b", "tinyint(1)", None, false, Unrepresentable::Text);
        assert_eq!(p.field.data_type(), &DataType::Int16);
        assert_eq!(p.source_type, "tinyint(1)");
    }
}
