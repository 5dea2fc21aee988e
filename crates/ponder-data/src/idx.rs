//! Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).
//!
//! An IDX file is a big-endian header followed by the data:
//!
//! | bytes | content                                                   |
//! |-------|-----------------------------------------------------------|
//! | 0..4  | magic `00 00 TT DD`: `TT` element type, `DD` dimensions    |
//! | 4..   | `DD` sizes, `u32` big-endian each                          |
//! | ...   | the elements, row-major                                    |
//!
//! Only unsigned bytes (`TT = 08`) are supported: images are `0x00000803` (count × rows ×
//! columns), labels `0x00000801` (count). The data must be exactly as long as the header
//! says: short files and trailing bytes are both errors.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::gzip::read_maybe_gzip;

/// Magic number of an IDX file of `u8` images (3 dimensions).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of `u8` labels (1 dimension).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// A set of equally sized images of `u8` pixels, with one or more channels: what
/// [`read_idx_images`] reads (grey scale) and
/// [`read_image_folder`](crate::read_image_folder) makes (grey scale or RGB).
///
/// The fields must agree: `pixels.len() == n_images * n_channels * n_rows * n_cols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Number of images.
    pub n_images: usize,
    /// Channels of every image: 1 (grey scale, as in IDX files) or 3 (RGB).
    pub n_channels: usize,
    /// Rows (height) of every image.
    pub n_rows: usize,
    /// Columns (width) of every image.
    pub n_cols: usize,
    /// All pixels, image after image; each image channel-major, then row-major
    /// (`[channel][row][col]`, the order of a `[batch, channels, height, width]` tensor);
    /// `n_images * n_channels * n_rows * n_cols` bytes, 0 = black.
    pub pixels: Vec<u8>,
}

impl ImageSet {
    /// Bytes per image (`n_channels * n_rows * n_cols`).
    pub fn image_len(&self) -> usize {
        self.n_channels * self.n_rows * self.n_cols
    }

    /// Per-channel mean and standard deviation of `pixel / 255` over the images
    /// `indices` (typically the training split, to normalise every split with):
    /// `(means, stds)`, one value per channel each.
    ///
    /// Computed exactly on the integer sums and then in `f64`; the standard deviation is
    /// the population one (divided by the number of pixels). A standard deviation of 0
    /// (a channel with one value everywhere) is returned as 1, so that normalising with
    /// it never divides by zero; with no indices every mean is 0 and every std 1.
    ///
    /// # Panics
    /// If an index is `>= n_images`.
    pub fn channel_stats(&self, indices: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let plane = self.n_rows * self.n_cols;
        let mut sums = vec![0u64; self.n_channels];
        let mut squares = vec![0u64; self.n_channels];
        for &i in indices {
            let image = self.image(i);
            for (c, values) in image.chunks_exact(plane.max(1)).enumerate() {
                for &v in values {
                    let v = u64::from(v);
                    sums[c] += v;
                    squares[c] += v * v;
                }
            }
        }
        let n = (indices.len() * plane) as f64;
        sums.iter()
            .zip(&squares)
            .map(|(&sum, &square)| {
                if n == 0.0 {
                    return (0.0, 1.0);
                }
                let mean = sum as f64 / n;
                let var = (square as f64 / n - mean * mean).max(0.0);
                let std = var.sqrt() / 255.0;
                let std = if std > 0.0 { std } else { 1.0 };
                ((mean / 255.0) as f32, std as f32)
            })
            .unzip()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n_images
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.n_images == 0
    }

    /// The pixels of image `i` (`image_len()` bytes, channel-major, then row-major).
    ///
    /// # Panics
    /// If `i >= n_images`; see [`ImageSet::get`] for a checked version.
    pub fn image(&self, i: usize) -> &[u8] {
        match self.get(i) {
            Some(image) => image,
            None => panic!(
                "image index {i} out of range (n_images = {})",
                self.n_images
            ),
        }
    }

    /// The pixels of image `i` (as [`ImageSet::image`]), or `None` if `i >= n_images`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n_images {
            return None;
        }
        let len = self.image_len();
        self.pixels.get(i * len..(i + 1) * len)
    }
}

/// Reads an IDX file of `u8` images (magic `0x00000803`), gzip-compressed or raw, of any
/// size (rows × columns from the header), as grey scale (`n_channels = 1`).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<ImageSet> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    let dims = parse_header(path, &bytes, IDX_IMAGES_MAGIC, "images")?;
    let [n_images, n_rows, n_cols] = [dims[0], dims[1], dims[2]];
    if n_rows == 0 || n_cols == 0 {
        return Err(DataError::format(
            path,
            format!("header says images of {n_rows}x{n_cols}; both sizes must be positive"),
        ));
    }
    let what = format!("header says {n_images} images of {n_rows}x{n_cols}");
    let total = n_images
        .checked_mul(n_rows)
        .and_then(|n| n.checked_mul(n_cols))
        .ok_or_else(|| DataError::format(path, format!("{what}: too many bytes")))?;
    let pixels = take_data(path, bytes, 16, total, &what)?;
    Ok(ImageSet {
        n_images: to_usize(path, n_images)?,
        n_channels: 1,
        n_rows: to_usize(path, n_rows)?,
        n_cols: to_usize(path, n_cols)?,
        pixels,
    })
}

/// Reads an IDX file of `u8` labels (magic `0x00000801`), gzip-compressed or raw.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let bytes = read_maybe_gzip(path)?;
    let dims = parse_header(path, &bytes, IDX_LABELS_MAGIC, "labels")?;
    let what = format!("header says {} labels", dims[0]);
    take_data(path, bytes, 8, dims[0], &what)
}

/// Checks the magic number and returns the dimension sizes (as `u64`, so that their
/// product cannot overflow).
fn parse_header(path: &Path, bytes: &[u8], magic: u32, kind: &str) -> Result<Vec<u64>> {
    let n_dims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * n_dims;
    let truncated = || DataError::Truncated {
        path: path.to_path_buf(),
        what: format!("expected an IDX {kind} header"),
        expected: header_len as u64,
        actual: bytes.len() as u64,
    };
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(i..i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(truncated)?;
    if found != magic {
        let expected_other = if magic == IDX_IMAGES_MAGIC {
            IDX_LABELS_MAGIC
        } else {
            IDX_IMAGES_MAGIC
        };
        let extra = if found == expected_other {
            " (this looks like the other kind of IDX file: images and labels swapped?)"
        } else if found >> 16 != 0 {
            " (not an IDX file)"
        } else if (found >> 8) & 0xff != 0x08 {
            " (only unsigned byte data, type 0x08, is supported)"
        } else {
            ""
        };
        return Err(DataError::format(
            path,
            format!("bad magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {kind}{extra}"),
        ));
    }
    (0..n_dims)
        .map(|d| word(4 + 4 * d).map(u64::from).ok_or_else(truncated))
        .collect()
}

/// Checks that exactly `expected` bytes follow the header and returns them.
fn take_data(
    path: &Path,
    mut bytes: Vec<u8>,
    header_len: usize,
    expected: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let actual = (bytes.len() - header_len) as u64;
    if actual < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: what.to_string(),
            expected,
            actual,
        });
    }
    if actual > expected {
        return Err(DataError::format(
            path,
            format!(
                "{what} ({expected} bytes) but {actual} bytes follow ({} trailing bytes)",
                actual - expected
            ),
        ));
    }
    bytes.drain(..header_len);
    Ok(bytes)
}

fn to_usize(path: &Path, n: u64) -> Result<usize> {
    usize::try_from(n)
        .map_err(|_| DataError::format(path, format!("size {n} does not fit in memory")))
}

/// Builds the bytes of IDX files, for tests in this crate.
#[cfg(test)]
pub(crate) mod testutil {
    use std::io::Write;

    /// IDX images file: header + pixels (pixel `k` of image `i` is `(i * 7 + k) % 256`).
    pub fn images_bytes(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&super::IDX_IMAGES_MAGIC.to_be_bytes());
        for d in [n, rows, cols] {
            out.extend_from_slice(&d.to_be_bytes());
        }
        let len = (rows * cols) as usize;
        for i in 0..n as usize {
            out.extend((0..len).map(|k| ((i * 7 + k) % 256) as u8));
        }
        out
    }

    /// IDX labels file: header + labels.
    pub fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&super::IDX_LABELS_MAGIC.to_be_bytes());
        out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        out.extend_from_slice(labels);
        out
    }

    /// Gzip-compresses `bytes`.
    pub fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn reads_raw_and_gzip_images() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("imgs");
        let packed = dir.path().join("imgs.gz");
        std::fs::write(&raw, images_bytes(3, 2, 4)).unwrap();
        std::fs::write(&packed, gz(&images_bytes(3, 2, 4))).unwrap();
        for path in [&raw, &packed] {
            let set = read_idx_images(path).unwrap();
            assert_eq!((set.n_images, set.n_rows, set.n_cols), (3, 2, 4));
            assert_eq!(set.pixels.len(), 24);
            assert_eq!(set.image(1), &[7, 8, 9, 10, 11, 12, 13, 14]);
            assert_eq!(set.get(3), None);
        }
    }

    #[test]
    fn reads_images_of_any_size_as_one_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.gz");
        std::fs::write(&path, gz(&images_bytes(4, 32, 32))).unwrap();
        let set = read_idx_images(&path).unwrap();
        assert_eq!(
            (set.n_images, set.n_channels, set.n_rows, set.n_cols),
            (4, 1, 32, 32)
        );
        assert_eq!(set.image_len(), 1024);
        assert_eq!(set.pixels.len(), 4 * 1024);
        let third = set.image(2);
        assert_eq!(
            (third[0], third[1], third[1023]),
            (14, 15, ((14 + 1023) % 256) as u8)
        );
    }

    #[test]
    fn channel_stats_are_per_channel_and_never_zero() {
        // Two 1×2 images of three channels: channel 0 takes 0 and 255 (mean 0.5, std
        // 0.5), channel 1 is 51 everywhere (mean 0.2, std 0 -> 1), channel 2 takes 0, 0,
        // 0 and 102 (mean 0.1, std sqrt(0.16 / 4 - 0.01) = 0.4 * sqrt(3) / 4).
        let set = ImageSet {
            n_images: 2,
            n_channels: 3,
            n_rows: 1,
            n_cols: 2,
            pixels: vec![0, 255, 51, 51, 0, 0, 255, 0, 51, 51, 0, 102],
        };
        let (mean, std) = set.channel_stats(&[0, 1]);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(&mean, &[0.5, 0.2, 0.1]), "{mean:?}");
        let third = 0.4 * 3f32.sqrt() / 4.0;
        assert!(close(&std, &[0.5, 1.0, third]), "{std:?}");
        // the second image alone: channel 0 is 255 and 0 again; a repeated index counts twice
        let (mean, std) = set.channel_stats(&[1, 1]);
        assert!(close(&mean, &[0.5, 0.2, 0.2]), "{mean:?}");
        assert!(close(&std, &[0.5, 1.0, 0.2]), "{std:?}");
        assert_eq!(set.channel_stats(&[]), (vec![0.0; 3], vec![1.0; 3]));
    }

    #[test]
    fn reads_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels");
        std::fs::write(&path, gz(&labels_bytes(&[3, 1, 4, 1, 5]))).unwrap();
        assert_eq!(read_idx_labels(&path).unwrap(), vec![3, 1, 4, 1, 5]);
    }

    #[test]
    fn truncated_images_name_file_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.gz");
        let mut bytes = images_bytes(5, 28, 28);
        bytes.truncate(16 + 1234);
        std::fs::write(&path, gz(&bytes)).unwrap();
        let err = read_idx_images(&path).unwrap_err();
        match &err {
            DataError::Truncated {
                expected, actual, ..
            } => assert_eq!((*expected, *actual), (5 * 784, 1234)),
            other => panic!("expected Truncated, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("short.gz"), "{msg}");
        assert!(
            msg.contains("header says 5 images of 28x28 (3920 bytes) but only 1234 bytes follow"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_header_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny");
        std::fs::write(&path, [0, 0, 8, 3, 0, 0]).unwrap();
        let err = read_idx_images(&path).unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("tiny"));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let mut bytes = labels_bytes(&[1, 2, 3]);
        bytes.extend_from_slice(&[0, 0]);
        std::fs::write(&path, bytes).unwrap();
        let err = read_idx_labels(&path).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("long") && msg.contains("2 trailing bytes"),
            "{msg}"
        );
    }

    #[test]
    fn bad_magic_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::write(&labels, labels_bytes(&[1, 2, 3])).unwrap();
        // Labels read as images: swapped files.
        let err = read_idx_images(&labels).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Format { .. }), "{msg}");
        assert!(msg.contains("bad magic number 0x00000801"), "{msg}");
        assert!(msg.contains("swapped"), "{msg}");

        let junk = dir.path().join("junk.txt");
        std::fs::write(&junk, b"hello world, this is not IDX").unwrap();
        let msg = read_idx_labels(&junk).unwrap_err().to_string();
        assert!(
            msg.contains("junk.txt") && msg.contains("not an IDX file"),
            "{msg}"
        );
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flat");
        std::fs::write(&path, images_bytes(2, 0, 5)).unwrap();
        let msg = read_idx_images(&path).unwrap_err().to_string();
        assert!(msg.contains("flat") && msg.contains("0x5"), "{msg}");
    }

    #[test]
    fn huge_header_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        let mut bytes = IDX_IMAGES_MAGIC.to_be_bytes().to_vec();
        for _ in 0..3 {
            bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        let msg = read_idx_images(&path).unwrap_err().to_string();
        assert!(
            msg.contains("huge") && msg.contains("too many bytes"),
            "{msg}"
        );
    }
}
