//! PostgreSQL type → Arrow type, per column: what Arrow field a column becomes, how its COPY
//! binary value is decoded, and whether it is read as PostgreSQL's own text form instead.
//!
//! Types with a fixed binary layout worth decoding (integers, floats, numeric, text, bytea, uuid,
//! date/time, json/jsonb, enums, domains and one-dimensional arrays of these) are decoded from
//! COPY binary. Everything else is cast to `text` in the COPY query, so the server renders its
//! exact text form (inet, money, ranges, geometric types, interval in ISO 8601, …).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use inlet_core::{Unrepresentable, JSON_EXTENSION};

/// One row of `pg_type`, the parts needed to resolve a column's type.
#[derive(Debug, Clone)]
pub(crate) struct PgType {
    pub name: String,
    pub namespace: String,
    /// `b` base, `d` domain, `e` enum, `c` composite, `r` range, `m` multirange, `p` pseudo.
    pub kind: u8,
    pub base: u32,
    pub base_typmod: i32,
    pub element: u32,
    pub category: u8,
}

pub(crate) type TypeCatalog = HashMap<u32, PgType>;

/// How a column's binary COPY value is turned into Arrow.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decoder {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// numeric(p,s) with 0 <= s <= p <= 38.
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// text, varchar, char(n), name, citext, json, enum labels, and anything cast to text.
    Text,
    /// jsonb's binary form: a version byte, then the text.
    Jsonb,
    Bytea,
    Uuid,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    /// One-dimensional array of the element decoder.
    Array(Box<Decoder>),
}

impl Decoder {
    pub fn data_type(&self) -> DataType {
        match self {
            Decoder::Bool => DataType::Boolean,
            Decoder::Int2 => DataType::Int16,
            Decoder::Int4 => DataType::Int32,
            Decoder::Int8 => DataType::Int64,
            Decoder::Float4 => DataType::Float32,
            Decoder::Float8 => DataType::Float64,
            Decoder::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Decoder::Text | Decoder::Jsonb => DataType::Utf8,
            Decoder::Bytea => DataType::Binary,
            Decoder::Uuid => DataType::FixedSizeBinary(16),
            Decoder::Date => DataType::Date32,
            Decoder::Time => DataType::Time64(TimeUnit::Microsecond),
            Decoder::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Decoder::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Decoder::Array(elem) => DataType::List(Arc::new(elem.field("item", true))),
        }
    }

    /// Can a value of this column be one Arrow cannot hold (NaN, ±infinity, out of range,
    /// a multi-dimensional array)?
    pub fn may_be_unrepresentable(&self) -> bool {
        matches!(
            self,
            Decoder::Numeric { .. }
                | Decoder::Date
                | Decoder::Time
                | Decoder::Timestamp
                | Decoder::TimestampTz
                | Decoder::Array(_)
        )
    }

    fn field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.data_type(), nullable);
        match self {
            Decoder::Uuid => field.with_metadata(extension("arrow.uuid")),
            Decoder::Jsonb => field.with_metadata(extension(JSON_EXTENSION)),
            _ => field,
        }
    }
}

fn extension(name: &str) -> HashMap<String, String> {
    HashMap::from([("ARROW:extension:name".to_string(), name.to_string())])
}

/// How one source column is read and written.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    /// The expression in the COPY query's select list: the quoted column, possibly `::text`.
    pub select: String,
    pub decoder: Decoder,
    pub field: Field,
    /// The column's type and modifier as pg_attribute has them, to tell whether a Relation
    /// message of the change stream describes the same column.
    pub type_oid: u32,
    pub typmod: i32,
    /// The column's own value policy (`[values.columns]`, else the task's default): what an
    /// unrepresentable value becomes when it is decoded.
    pub policy: Unrepresentable,
}

/// Plans a column of type `type_oid` with modifier `typmod` (from pg_attribute) under the
/// column's own value policy.
pub(crate) fn plan_column(
    types: &TypeCatalog,
    name: &str,
    type_oid: u32,
    typmod: i32,
    not_null: bool,
    policy: Unrepresentable,
) -> ColumnPlan {
    let quoted = quote_ident(name);
    let column_typmod = typmod;
    let (oid, typmod) = resolve_domain(types, type_oid, typmod);
    let is_json = types
        .get(&oid)
        .is_some_and(|t| t.namespace == "pg_catalog" && t.name == "json");
    let (decoder, select) = match types.get(&oid) {
        // box is the one built-in type whose array text separates elements with ';', which no
        // element-wise reading of the change stream would split right: such arrays are kept
        // whole, as PostgreSQL's text.
        Some(t)
            if t.category == b'A'
                && types
                    .get(&t.element)
                    .is_some_and(|e| e.namespace == "pg_catalog" && e.name == "box") =>
        {
            (Decoder::Text, format!("{quoted}::text"))
        }
        // Under the text policy an array column is PostgreSQL's array text, as pgoutput sends
        // it: a multi-dimensional value (which no Arrow list holds) survives whole.
        Some(t) if t.category == b'A' && t.element != 0 && policy == Unrepresentable::Text => {
            (Decoder::Text, format!("{quoted}::text"))
        }
        Some(t) if t.category == b'A' && t.element != 0 => {
            // Arrays keep the column's typmod for their elements (numeric(10,2)[]).
            let (elem, elem_typmod) = resolve_domain(types, t.element, typmod);
            match scalar_decoder(types, elem, elem_typmod, policy) {
                Some(d) => (Decoder::Array(Box::new(d)), quoted),
                None if cast_differs_from_output(types, elem) => (
                    Decoder::Array(Box::new(Decoder::Text)),
                    // Element by element through the output function; a multi-dimensional
                    // value keeps its shape so the decoder can apply the policy to it.
                    format!(
                        "CASE WHEN {quoted} IS NULL THEN NULL \
                         WHEN array_ndims({quoted}) > 1 THEN {quoted}::text[] \
                         ELSE ARRAY(SELECT CASE WHEN x IS NULL THEN NULL ELSE format('%s', x) END \
                         FROM unnest({quoted}) WITH ORDINALITY AS u(x, n) ORDER BY n) END"
                    ),
                ),
                None => (
                    Decoder::Array(Box::new(Decoder::Text)),
                    format!("{quoted}::text[]"),
                ),
            }
        }
        _ => match scalar_decoder(types, oid, typmod, policy) {
            Some(d) => (d, quoted),
            None if cast_differs_from_output(types, oid) => (
                Decoder::Text,
                format!("CASE WHEN {quoted} IS NULL THEN NULL ELSE format('%s', {quoted}) END"),
            ),
            None => (Decoder::Text, format!("{quoted}::text")),
        },
    };
    let nullable =
        !not_null || (policy == Unrepresentable::Null && decoder.may_be_unrepresentable());
    let mut field = decoder.field(name, nullable);
    if is_json {
        field = field.with_metadata(extension(JSON_EXTENSION));
    }
    ColumnPlan {
        type_oid,
        typmod: column_typmod,
        select,
        decoder,
        field,
        policy,
    }
}

/// Types whose cast to text is a function that renders differently from the type's output
/// function (what every client shows): `inet::text` always appends the netmask, `"char"::text`
/// passes control bytes raw. These are rendered with `format('%s', …)`, which uses the output
/// function. (`pg_cast` lists bool, bpchar and name too, but those are decoded in binary.)
fn cast_differs_from_output(types: &TypeCatalog, oid: u32) -> bool {
    types.get(&oid).is_some_and(|t| {
        t.namespace == "pg_catalog" && matches!(t.name.as_str(), "inet" | "cidr" | "char")
    })
}

/// A readable name for a type seen only in the change stream (a column added after
/// discovery), where `format_type()` cannot be asked.
pub(crate) fn type_name(types: &TypeCatalog, oid: u32, typmod: i32) -> String {
    match types.get(&oid) {
        Some(t) if t.name == "numeric" => match numeric_typmod(typmod) {
            Some((p, s)) => format!("numeric({p},{s})"),
            None => "numeric".into(),
        },
        Some(t) if t.category == b'A' => match types.get(&t.element) {
            Some(e) => format!("{}[]", e.name),
            None => t.name.clone(),
        },
        Some(t) => t.name.clone(),
        None => format!("type {oid}"),
    }
}

/// Follows domains down to their base type; a domain's own typmod applies when the column has
/// none.
fn resolve_domain(types: &TypeCatalog, mut oid: u32, mut typmod: i32) -> (u32, i32) {
    // Domains nest, but never in a cycle; the bound guards against a corrupt catalog.
    for _ in 0..32 {
        match types.get(&oid) {
            Some(t) if t.kind == b'd' => {
                if typmod < 0 {
                    typmod = t.base_typmod;
                }
                oid = t.base;
            }
            _ => break,
        }
    }
    (oid, typmod)
}

/// The decoder for a scalar type read in binary, or None when it is read as text.
fn scalar_decoder(
    types: &TypeCatalog,
    oid: u32,
    typmod: i32,
    policy: Unrepresentable,
) -> Option<Decoder> {
    let t = types.get(&oid)?;
    if t.kind == b'e' {
        return Some(Decoder::Text); // an enum's binary form is its label
    }
    if t.name == "citext" {
        return Some(Decoder::Text); // extension type, any schema; sent as text
    }
    if t.namespace != "pg_catalog" {
        return None;
    }
    let as_text_if = |cond: bool, d: Decoder| if cond { None } else { Some(d) };
    let text_policy = policy == Unrepresentable::Text;
    match t.name.as_str() {
        "bool" => Some(Decoder::Bool),
        "int2" => Some(Decoder::Int2),
        "int4" => Some(Decoder::Int4),
        "int8" => Some(Decoder::Int8),
        "float4" => Some(Decoder::Float4),
        "float8" => Some(Decoder::Float8),
        "numeric" => {
            let (precision, scale) = numeric_typmod(typmod)?;
            if scale < 0 || scale > precision || precision > 38 || text_policy {
                return None;
            }
            Some(Decoder::Numeric {
                precision: precision as u8,
                scale: scale as i8,
            })
        }
        "text" | "varchar" | "bpchar" | "name" | "json" => Some(Decoder::Text),
        "jsonb" => Some(Decoder::Jsonb),
        "bytea" => Some(Decoder::Bytea),
        "uuid" => Some(Decoder::Uuid),
        "date" => as_text_if(text_policy, Decoder::Date),
        // 24:00:00, PostgreSQL's end of day, has no Time64 equivalent.
        "time" => as_text_if(text_policy, Decoder::Time),
        "timestamp" => as_text_if(text_policy, Decoder::Timestamp),
        "timestamptz" => as_text_if(text_policy, Decoder::TimestampTz),
        _ => None,
    }
}

/// numeric's typmod packs precision and scale; -1 means unconstrained. Since PostgreSQL 15 the
/// scale is an 11-bit signed field and may be negative or exceed the precision.
fn numeric_typmod(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> TypeCatalog {
        let mut c = TypeCatalog::new();
        let mut add = |oid: u32, name: &str, kind: u8, base: u32, element: u32, category: u8| {
            c.insert(
                oid,
                PgType {
                    name: name.into(),
                    namespace: "pg_catalog".into(),
                    kind,
                    base,
                    base_typmod: -1,
                    element,
                    category,
                },
            );
        };
        add(23, "int4", b'b', 0, 0, b'N');
        add(1700, "numeric", b'b', 0, 0, b'N');
        add(1231, "_numeric", b'b', 0, 1700, b'A');
        add(869, "inet", b'b', 0, 0, b'I');
        add(1041, "_inet", b'b', 0, 869, b'A');
        add(1114, "timestamp", b'b', 0, 0, b'D');
        add(1186, "interval", b'b', 0, 0, b'T');
        add(603, "box", b'b', 0, 0, b'G');
        add(1020, "_box", b'b', 0, 603, b'A');
        add(1115, "_interval", b'b', 0, 1186, b'A');
        add(90000, "posint", b'd', 23, 0, b'N');
        c
    }

    #[test]
    fn numeric_typmods() {
        // numeric(10,2) = ((10 << 16) | 2) + 4
        assert_eq!(numeric_typmod((10 << 16 | 2) + 4), Some((10, 2)));
        assert_eq!(numeric_typmod(-1), None);
        // numeric(5,-2): scale stored as 11-bit two's complement
        assert_eq!(
            numeric_typmod((5 << 16 | (0x7ff & -2i32)) + 4),
            Some((5, -2))
        );
    }

    #[test]
    fn plans() {
        let c = catalog();
        let p = plan_column(
            &c,
            "n",
            1700,
            (12 << 16 | 3) + 4,
            true,
            Unrepresentable::Fail,
        );
        assert_eq!(
            p.decoder,
            Decoder::Numeric {
                precision: 12,
                scale: 3
            }
        );
        assert!(!p.field.is_nullable());
        // Under the null policy a NOT NULL numeric still needs a nullable field for NaN.
        let p = plan_column(
            &c,
            "n",
            1700,
            (12 << 16 | 3) + 4,
            true,
            Unrepresentable::Null,
        );
        assert!(p.field.is_nullable());
        let p = plan_column(&c, "n", 1700, -1, false, Unrepresentable::Fail);
        assert_eq!(
            (p.decoder, p.select.as_str()),
            (Decoder::Text, "\"n\"::text")
        );
        let p = plan_column(&c, "a", 1041, -1, false, Unrepresentable::Fail);
        assert!(p.select.contains("format('%s', x)"), "{}", p.select);
        let p = plan_column(&c, "i", 869, -1, false, Unrepresentable::Fail);
        assert_eq!(
            p.select,
            "CASE WHEN \"i\" IS NULL THEN NULL ELSE format('%s', \"i\") END"
        );
        let p = plan_column(&c, "bx", 1020, -1, false, Unrepresentable::Fail);
        assert_eq!(
            (p.decoder, p.select.as_str()),
            (Decoder::Text, "\"bx\"::text")
        );
        let p = plan_column(&c, "ts", 1115, -1, false, Unrepresentable::Fail);
        assert_eq!(p.select, "\"ts\"::text[]");
        assert_eq!(p.decoder, Decoder::Array(Box::new(Decoder::Text)));
        let p = plan_column(&c, "d", 90000, -1, false, Unrepresentable::Fail);
        assert_eq!(p.decoder, Decoder::Int4);
        let p = plan_column(&c, "t", 1114, -1, false, Unrepresentable::Text);
        assert_eq!(p.select, "\"t\"::text");
        // Arrays under the text policy: the array text, multi-dimensional values included.
        let p = plan_column(&c, "ts", 1115, -1, false, Unrepresentable::Text);
        assert_eq!(
            (p.decoder, p.select.as_str()),
            (Decoder::Text, "\"ts\"::text")
        );
        let p = plan_column(&c, "we\"ird", 23, -1, false, Unrepresentable::Fail);
        assert_eq!(p.select, "\"we\"\"ird\"");
    }
}
