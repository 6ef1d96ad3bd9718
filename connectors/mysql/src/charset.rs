//! Text in any MySQL character set decoded to UTF-8. The binlog carries a column's bytes in
//! the column's own charset (the full load asks the server to convert with `SET NAMES
//! utf8mb4`); the charset names are the server's (`latin1`, `cp1251`, `sjis`, …).

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::values::ValueError;

/// Decodes `bytes` written in the MySQL charset `charset`. Bytes that are not valid in it are an
/// error, never replaced.
pub(crate) fn decode_text<'a>(bytes: &'a [u8], charset: &str) -> Result<Cow<'a, str>, ValueError> {
    match charset {
        "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => simdutf8::basic::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| invalid(bytes, charset)),
        "utf32" => {
            if !bytes.len().is_multiple_of(4) {
                return Err(invalid(bytes, charset));
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .map(Cow::Owned)
                .ok_or_else(|| invalid(bytes, charset))
        }
        other => {
            let encoding = encoding_for(other).ok_or_else(|| {
                ValueError::Malformed(format!(
                    "character set {other} is not supported; convert the column to utf8mb4 \
                     (ALTER TABLE … MODIFY … CHARACTER SET utf8mb4)"
                ))
            })?;
            let text = encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(|| invalid(bytes, charset))?;
            // cp1251 leaves 0x98 unassigned. WHATWG decodes it to U+0098; the server, which
            // has no mapping for it, sends '?' when it converts the column to utf8mb4 (as for
            // the full load and every client). The binlog path gives the same '?', so load and
            // change files agree with what the source shows.
            if other == "cp1251" && text.contains('\u{98}') {
                return Ok(Cow::Owned(text.replace('\u{98}', "?")));
            }
            Ok(text)
        }
    }
}

fn invalid(bytes: &[u8], charset: &str) -> ValueError {
    let shown: Vec<u8> = bytes.iter().take(16).copied().collect();
    ValueError::Malformed(format!("bytes {shown:02x?} are not valid {charset}"))
}

/// The WHATWG encoding that decodes a MySQL charset. MySQL's `latin1` is Windows-1252 (not
/// ISO-8859-1), which is exactly what WHATWG calls windows-1252.
fn encoding_for(charset: &str) -> Option<&'static Encoding> {
    use encoding_rs::*;
    Some(match charset {
        "latin1" => WINDOWS_1252,
        "latin2" => ISO_8859_2,
        "latin5" => WINDOWS_1254,
        "latin7" => ISO_8859_13,
        "cp1250" => WINDOWS_1250,
        "cp1251" => WINDOWS_1251,
        "cp1256" => WINDOWS_1256,
        "cp1257" => WINDOWS_1257,
        "cp866" => IBM866,
        "greek" => ISO_8859_7,
        "hebrew" => ISO_8859_8,
        "koi8r" => KOI8_R,
        "koi8u" => KOI8_U,
        "macroman" => MACINTOSH,
        "tis620" => WINDOWS_874,
        "sjis" | "cp932" => SHIFT_JIS,
        "ujis" | "eucjpms" => EUC_JP,
        "euckr" => EUC_KR,
        "gbk" | "gb2312" => GBK,
        "gb18030" => GB18030,
        "big5" => BIG5,
        "ucs2" | "utf16" => UTF_16BE,
        "utf16le" => UTF_16LE,
        _ => return None,
    })
}

/// The charset of a collation id from a binlog TABLE_MAP (columns added after discovery).
pub(crate) fn charset_of_collation(id: u16) -> Option<&'static str> {
    use mysql_common::collations::{Collation, CollationId};
    let c: Collation<'static> = Collation::resolve(CollationId::from(id));
    let name: &'static str = c.charset;
    (name != "unknown").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets() {
        assert_eq!(decode_text(b"caf\xe9 \x80", "latin1").unwrap(), "café €");
        assert_eq!(decode_text(b"\xcf\xf0\xe8", "cp1251").unwrap(), "При");
        assert_eq!(decode_text("żółw".as_bytes(), "utf8mb4").unwrap(), "żółw");
        assert_eq!(decode_text(b"\x00A\x00\xe9", "ucs2").unwrap(), "Aé");
        assert_eq!(decode_text(b"\x00\x01\xf6\x00", "utf32").unwrap(), "😀");
        assert!(decode_text(b"\xff", "utf8mb4").is_err());
        assert!(decode_text(b"x", "klingon").is_err());
        assert_eq!(charset_of_collation(8), Some("latin1"));
        assert_eq!(charset_of_collation(45), Some("utf8mb4"));
    }
}
