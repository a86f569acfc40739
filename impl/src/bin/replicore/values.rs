//! Values on the command line: read from argv, a file or stdin, and shown in JSON.

use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;

/// The value of an update: `value` from argv, or the bytes of `file` (`-` is stdin).
pub fn read(value: Option<String>, file: Option<&Path>) -> Result<Vec<u8>> {
    match (value, file) {
        (Some(v), None) => Ok(v.into_bytes()),
        (None, Some(p)) if p == Path::new("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the value from stdin")?;
            Ok(bytes)
        }
        (None, Some(p)) => {
            std::fs::read(p).with_context(|| format!("cannot read the value file {}", p.display()))
        }
        // clap requires exactly one of them.
        _ => Err(crate::exit::fail(
            crate::exit::USAGE,
            "give the value, or --value-file PATH (- for stdin)",
        )),
    }
}

/// [`read`], for a protocol whose values are text: bytes that are not UTF-8 are refused.
pub fn read_text(value: Option<String>, file: Option<&Path>) -> Result<String> {
    let bytes = read(value, file)?;
    String::from_utf8(bytes).map_err(|e| {
        crate::exit::fail(
            crate::exit::USAGE,
            format!(
                "the value is not UTF-8 (byte {}): this protocol's values are text",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Refuses an empty key, which no protocol's user can name again.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(crate::exit::fail(crate::exit::USAGE, "the key is empty"));
    }
    Ok(())
}

/// A value's JSON fields: `value` (the text, or null when it is not UTF-8) and
/// `value_base64` (its bytes, always).
pub fn json_fields(value: &[u8], object: &mut serde_json::Map<String, serde_json::Value>) {
    object.insert(
        "value".into(),
        std::str::from_utf8(value).map_or(serde_json::Value::Null, |s| s.into()),
    );
    object.insert("value_base64".into(), base64(value).into());
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
