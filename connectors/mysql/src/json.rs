//! MySQL 8's binary JSON (the binlog's form of a JSON column) rendered as text exactly as the
//! server renders it (`{"a": 1, "b": [true, null]}`: keys in stored order, `": "` and `", "`
//! separators), so a value reads the same from the full load and from the binlog.

use std::fmt::Write;

use mysql_common::binlog::jsonb::{self, JsonDom, JsonNumber, JsonScalar};

/// Appends the text form of `value` to `out`.
pub(crate) fn render(value: &jsonb::Value<'_>, out: &mut String) -> std::io::Result<()> {
    match value {
        jsonb::Value::Null => out.push_str("null"),
        jsonb::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        jsonb::Value::I16(x) => push_display(out, x),
        jsonb::Value::U16(x) => push_display(out, x),
        jsonb::Value::I32(x) => push_display(out, x),
        jsonb::Value::U32(x) => push_display(out, x),
        jsonb::Value::I64(x) => push_display(out, x),
        jsonb::Value::U64(x) => push_display(out, x),
        jsonb::Value::F64(x) => push_double(out, *x),
        jsonb::Value::String(s) => push_string(out, &s.str()),
        jsonb::Value::SmallArray(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(&v?, out)?;
            }
            out.push(']');
        }
        jsonb::Value::LargeArray(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(&v?, out)?;
            }
            out.push(']');
        }
        jsonb::Value::SmallObject(o) => {
            out.push('{');
            for (i, kv) in o.iter().enumerate() {
                let (k, v) = kv?;
                if i > 0 {
                    out.push_str(", ");
                }
                push_string(out, &k.value());
                out.push_str(": ");
                render(&v, out)?;
            }
            out.push('}');
        }
        jsonb::Value::LargeObject(o) => {
            out.push('{');
            for (i, kv) in o.iter().enumerate() {
                let (k, v) = kv?;
                if i > 0 {
                    out.push_str(", ");
                }
                push_string(out, &k.value());
                out.push_str(": ");
                render(&v, out)?;
            }
            out.push('}');
        }
        jsonb::Value::Opaque(_) => match value.clone().parse()? {
            // A DECIMAL inside JSON prints as a number; dates and times as quoted strings;
            // anything else as MySQL's "base64:typeN:…" string.
            JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(d))) => push_display(out, &d),
            dom => {
                let v: mysql_common::serde_json::Value = dom.into();
                out.push_str(&v.to_string());
            }
        },
    }
    Ok(())
}

fn push_display(out: &mut String, x: &dyn std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{x}");
}

/// Doubles as MySQL prints them: shortest round-trip digits, `1.0` keeps its point, large and
/// small magnitudes in exponent form (`1e30`).
fn push_double(out: &mut String, x: f64) {
    let _ = write!(out, "{x:?}");
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
