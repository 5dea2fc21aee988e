//! Reading a file that may or may not be gzip-compressed.
//!
//! Compression is detected from the gzip magic bytes (`1f 8b`), never from the file name:
//! `train-images-idx3-ubyte` may well be compressed and `x.gz` may well be raw.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// The two bytes every gzip member starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` starts with the gzip magic bytes.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads the whole of `path`, decompressing it if it is gzip data (all members of a
/// multi-member gzip file are read).
///
/// Errors: [`DataError::Io`] if the file cannot be read, [`DataError::Format`] if it looks
/// like gzip but is corrupt or cut short.
pub fn read_maybe_gzip(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, "read", e))?;
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    // Gzip stores the uncompressed size modulo 2^32 in its last four bytes; use it only as
    // a capacity hint.
    let hint = raw
        .len()
        .checked_sub(4)
        .and_then(|at| raw.get(at..))
        .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    let mut out = Vec::with_capacity(hint.min(1 << 30));
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| {
            DataError::format(
                path,
                format!(
                    "corrupt or truncated gzip data ({} compressed bytes): {e}",
                    raw.len()
                ),
            )
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_raw_and_gzip_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("looks-compressed.gz");
        std::fs::write(&raw, b"plain bytes").unwrap();
        assert_eq!(read_maybe_gzip(&raw).unwrap(), b"plain bytes");

        let packed = dir.path().join("looks-raw");
        std::fs::write(&packed, gz(b"hello gzip")).unwrap();
        assert_eq!(read_maybe_gzip(&packed).unwrap(), b"hello gzip");
    }

    #[test]
    fn truncated_gzip_is_a_format_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.gz");
        let data = gz(&[7u8; 10_000]);
        std::fs::write(&path, &data[..data.len() / 2]).unwrap();
        let err = read_maybe_gzip(&path).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{err}");
        assert!(err.to_string().contains("cut.gz"), "{err}");
    }

    #[test]
    fn missing_file_is_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_maybe_gzip(dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
