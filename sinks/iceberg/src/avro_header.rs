//! The Avro schema in a manifest's file header, made the way Iceberg Java writes it.
//!
//! The iceberg crate writes the `initial_default` of its manifest fields into the Avro schema as
//! a field `default` (`"default": 0` on `data_file.content`, field 134). Iceberg Java writes no
//! default on a required field, and only `"default": null` on optional ones; some readers refuse
//! anything else (Tableau Hyper: "default values of type JSON number not supported", so it read
//! no inlet table). The default only matters when a reader resolves a file that lacks the field,
//! which never happens for a field every record carries, so the rows are untouched: only the
//! header's `avro.schema` is rewritten, and the data blocks after it are copied as they are
//! (they are found by the header's sync marker, which is kept).

use bytes::{BufMut, Bytes, BytesMut};

/// Why an Avro container file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the Avro file header is invalid: {0}")]
pub struct HeaderError(String);

const MAGIC: &[u8; 4] = b"Obj\x01";
const SCHEMA_KEY: &str = "avro.schema";

/// The container file `file` with every non-null field `default` removed from its schema.
/// A file whose schema has none comes back unchanged.
pub(crate) fn without_value_defaults(file: &[u8]) -> Result<Bytes, HeaderError> {
    let (metadata, rest) = read_header(file)?;
    let mut changed = false;
    let mut out_meta = Vec::with_capacity(metadata.len());
    for (key, value) in metadata {
        if key == SCHEMA_KEY {
            let mut schema: serde_json::Value = serde_json::from_slice(&value)
                .map_err(|e| HeaderError(format!("{SCHEMA_KEY} is not JSON: {e}")))?;
            if drop_value_defaults(&mut schema) {
                changed = true;
                let text = serde_json::to_vec(&schema)
                    .map_err(|e| HeaderError(format!("cannot print {SCHEMA_KEY}: {e}")))?;
                out_meta.push((key, text));
                continue;
            }
        }
        out_meta.push((key, value));
    }
    if !changed {
        return Ok(Bytes::copy_from_slice(file));
    }
    let mut out = BytesMut::with_capacity(file.len());
    out.put_slice(MAGIC);
    put_long(&mut out, out_meta.len() as i64);
    for (key, value) in &out_meta {
        put_long(&mut out, key.len() as i64);
        out.put_slice(key.as_bytes());
        put_long(&mut out, value.len() as i64);
        out.put_slice(value);
    }
    put_long(&mut out, 0);
    // `rest` starts with the 16-byte sync marker the data blocks repeat.
    out.put_slice(rest);
    Ok(out.freeze())
}

/// Removes `default` from every record field whose default is not null; true when any was.
fn drop_value_defaults(schema: &mut serde_json::Value) -> bool {
    let mut changed = false;
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(fields)) = map.get_mut("fields") {
                for field in fields.iter_mut() {
                    if let serde_json::Value::Object(f) = field {
                        if f.get("default").is_some_and(|d| !d.is_null()) {
                            f.remove("default");
                            changed = true;
                        }
                    }
                }
            }
            for v in map.values_mut() {
                changed |= drop_value_defaults(v);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                changed |= drop_value_defaults(v);
            }
        }
        _ => {}
    }
    changed
}

/// An Avro file header's metadata entries: (key, value bytes), in file order.
pub type HeaderEntries = Vec<(String, Vec<u8>)>;

/// The header's metadata entries (`avro.schema`, `avro.codec`, ...), and the bytes after them
/// (sync marker, then blocks). Public for the tests that compare schemas with Iceberg Java's.
pub fn read_header(file: &[u8]) -> Result<(HeaderEntries, &[u8]), HeaderError> {
    let mut rest = file
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| HeaderError("no Avro magic".into()))?;
    let mut entries = Vec::new();
    loop {
        let mut count = get_long(&mut rest)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            count = -count;
            get_long(&mut rest)?;
        }
        for _ in 0..count {
            let key = get_bytes(&mut rest)?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| HeaderError("a metadata key is not UTF-8".into()))?;
            let value = get_bytes(&mut rest)?.to_vec();
            entries.push((key, value));
        }
    }
    if rest.len() < 16 {
        return Err(HeaderError("no sync marker".into()));
    }
    Ok((entries, rest))
}

fn get_long(buf: &mut &[u8]) -> Result<i64, HeaderError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = buf
            .split_first()
            .ok_or_else(|| HeaderError("the header ends inside a number".into()))?;
        *buf = tail;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            // Zig-zag: the low bit is the sign.
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(HeaderError("a number in the header is too long".into()))
}

fn get_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], HeaderError> {
    let len = usize::try_from(get_long(buf)?)
        .map_err(|_| HeaderError("a negative length in the header".into()))?;
    if buf.len() < len {
        return Err(HeaderError("the header ends inside a string".into()));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn put_long(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            put_long(&mut out, v);
            let mut buf: &[u8] = &out;
            assert_eq!(get_long(&mut buf).unwrap(), v);
            assert!(buf.is_empty());
        }
    }
}
