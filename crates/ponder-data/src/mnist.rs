//! Loading the four IDX files of Fashion-MNIST (or MNIST) from a folder.
//!
//! `scripts/fetch-data.sh fashion-mnist` puts them in `data/fashion-mnist/`.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::idx::{ImageSet, read_idx_images, read_idx_labels};
use crate::image::ImageDataset;

/// How to get Fashion-MNIST, for [`DataError::MissingDataset`].
pub const FASHION_MNIST_HINT: &str =
    "run `scripts/fetch-data.sh fashion-mnist` (or put the four MNIST-style IDX files there)";

/// Number of classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: usize = 10;

/// Class names of Fashion-MNIST, by label.
pub const FASHION_MNIST_CLASS_NAMES: [&str; MNIST_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The train and test sets of Fashion-MNIST or MNIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistSplits {
    /// Training images (60000 of 28x28 for both data sets).
    pub train_images: ImageSet,
    /// Training labels, `0..10`, one per training image.
    pub train_labels: Vec<u8>,
    /// Test images (10000 of 28x28).
    pub test_images: ImageSet,
    /// Test labels, `0..10`, one per test image.
    pub test_labels: Vec<u8>,
}

impl MnistSplits {
    /// The training set as an [`ImageDataset`].
    pub fn train(&self) -> ImageDataset<'_> {
        ImageDataset::from_parts(&self.train_images, &self.train_labels, MNIST_CLASSES)
    }

    /// The test set as an [`ImageDataset`].
    pub fn test(&self) -> ImageDataset<'_> {
        ImageDataset::from_parts(&self.test_images, &self.test_labels, MNIST_CLASSES)
    }
}

/// Loads Fashion-MNIST (or MNIST: the file names are the same) from `dir`.
///
/// For each of `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` the first of these that exists
/// is read: `NAME.gz`, `NAME`, and the same two with the original MNIST spelling
/// (`train-images.idx3-ubyte`). Whether a file is compressed is decided from its content.
///
/// Checks that every image has a label, that labels are below 10, and that train and test
/// images have the same size. A missing folder or file gives [`DataError::MissingDataset`]
/// with a hint on how to fetch it.
pub fn load_fashion_mnist(dir: impl AsRef<Path>) -> Result<MnistSplits> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(DataError::MissingDataset {
            path: dir.to_path_buf(),
            hint: FASHION_MNIST_HINT.to_string(),
        });
    }
    let (train_images, train_labels) = load_pair(dir, "train")?;
    let (test_images, test_labels) = load_pair(dir, "t10k")?;
    if (train_images.n_rows, train_images.n_cols) != (test_images.n_rows, test_images.n_cols) {
        return Err(DataError::format(
            dir,
            format!(
                "train images are {}x{} but test images are {}x{}",
                train_images.n_rows, train_images.n_cols, test_images.n_rows, test_images.n_cols
            ),
        ));
    }
    Ok(MnistSplits {
        train_images,
        train_labels,
        test_images,
        test_labels,
    })
}

/// Loads and cross-checks the images and labels of one split (`prefix` is `train` or
/// `t10k`).
fn load_pair(dir: &Path, prefix: &str) -> Result<(ImageSet, Vec<u8>)> {
    let images_path = find_file(dir, prefix, "images", "idx3")?;
    let labels_path = find_file(dir, prefix, "labels", "idx1")?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.n_images != labels.len() {
        return Err(DataError::format(
            &labels_path,
            format!(
                "{} labels but {} has {} images",
                labels.len(),
                images_path.display(),
                images.n_images
            ),
        ));
    }
    if let Some((i, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= MNIST_CLASSES)
    {
        return Err(DataError::format(
            &labels_path,
            format!("label {label} of item {i} is not below {MNIST_CLASSES}"),
        ));
    }
    Ok((images, labels))
}

/// The first existing spelling of `{prefix}-{kind}-{idx}-ubyte[.gz]`.
fn find_file(dir: &Path, prefix: &str, kind: &str, idx: &str) -> Result<PathBuf> {
    let dashed = format!("{prefix}-{kind}-{idx}-ubyte");
    let dotted = format!("{prefix}-{kind}.{idx}-ubyte");
    let candidates = [
        format!("{dashed}.gz"),
        dashed.clone(),
        format!("{dotted}.gz"),
        dotted,
    ];
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingDataset {
            path: dir.join(format!("{dashed}.gz")),
            hint: format!(
                "none of {} exists in {}; {FASHION_MNIST_HINT}",
                candidates.join(", "),
                dir.display()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::testutil::{gz, images_bytes, labels_bytes};

    fn write_split(dir: &Path, prefix: &str, n: u32, gzip: bool, dotted: bool) {
        let sep = if dotted { '.' } else { '-' };
        let ext = if gzip { ".gz" } else { "" };
        let wrap = |b: Vec<u8>| if gzip { gz(&b) } else { b };
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images{sep}idx3-ubyte{ext}")),
            wrap(images_bytes(n, 4, 3)),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels{sep}idx1-ubyte{ext}")),
            wrap(labels_bytes(&labels)),
        )
        .unwrap();
    }

    #[test]
    fn loads_gzip_and_raw_spellings() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 12, true, false);
        write_split(dir.path(), "t10k", 5, false, true);
        let splits = load_fashion_mnist(dir.path()).unwrap();
        assert_eq!(splits.train_images.n_images, 12);
        assert_eq!(splits.train_labels.len(), 12);
        assert_eq!(splits.test_images.n_images, 5);
        assert_eq!(splits.test_labels, vec![0, 1, 2, 3, 4]);
        assert_eq!(splits.train().len(), 12);
        assert_eq!(splits.test().n_classes(), 10);
    }

    #[test]
    fn missing_folder_gives_fetch_hint() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("fashion-mnist");
        let err = load_fashion_mnist(&missing).unwrap_err();
        assert!(matches!(err, DataError::MissingDataset { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("fashion-mnist"), "{msg}");
        assert!(msg.contains("scripts/fetch-data.sh fashion-mnist"), "{msg}");
    }

    #[test]
    fn missing_file_names_candidates() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, true, false);
        let msg = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("t10k-images-idx3-ubyte.gz"), "{msg}");
        assert!(msg.contains("fetch-data.sh"), "{msg}");
    }

    #[test]
    fn label_count_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, true, false);
        write_split(dir.path(), "t10k", 3, true, false);
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte.gz"),
            gz(&labels_bytes(&[1, 2])),
        )
        .unwrap();
        let msg = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
        assert!(
            msg.contains("2 labels") && msg.contains("3 images"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_label_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, false, false);
        write_split(dir.path(), "t10k", 3, false, false);
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            labels_bytes(&[1, 12, 3]),
        )
        .unwrap();
        let msg = load_fashion_mnist(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
        assert!(msg.contains("label 12 of item 1"), "{msg}");
    }
}
