//! [`ImageDataset`]: labelled images (grey scale or RGB), turned into `f32` batches.

use crate::batch::ImageBatch;
use crate::error::{DataError, Result};
use crate::idx::ImageSet;

/// A borrowed view of labelled images with any number of channels, e.g.
/// [`MnistSplits::train`](crate::MnistSplits::train) (grey scale).
///
/// Pixels come out as `f32` in `[0, 1]` (byte / 255), in the layout of the
/// [`ImageSet`]: channel-major, then row-major. Labels are bytes (at most 256 classes),
/// as IDX files store them.
#[derive(Debug, Clone, Copy)]
pub struct ImageDataset<'a> {
    images: &'a ImageSet,
    labels: &'a [u8],
    n_classes: usize,
}

impl<'a> ImageDataset<'a> {
    /// A view of `images` with `labels` (one per image); the number of classes is the
    /// largest label + 1.
    pub fn new(images: &'a ImageSet, labels: &'a [u8]) -> Result<Self> {
        if images.n_images != labels.len() {
            return Err(DataError::InvalidInput {
                message: format!("{} images but {} labels", images.n_images, labels.len()),
            });
        }
        let n_classes = labels.iter().max().map_or(0, |&m| usize::from(m) + 1);
        Ok(Self::from_parts(images, labels, n_classes))
    }

    /// A view whose counts were checked already.
    pub(crate) fn from_parts(images: &'a ImageSet, labels: &'a [u8], n_classes: usize) -> Self {
        Self {
            images,
            labels,
            n_classes,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.n_images
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.n_images == 0
    }

    /// Number of classes (labels are `0..n_classes`).
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Channels per image (1: grey scale, 3: RGB).
    pub fn channels(&self) -> usize {
        self.images.n_channels
    }

    /// Image height (rows).
    pub fn height(&self) -> usize {
        self.images.n_rows
    }

    /// Image width (columns).
    pub fn width(&self) -> usize {
        self.images.n_cols
    }

    /// The underlying images.
    pub fn images(&self) -> &'a ImageSet {
        self.images
    }

    /// All labels, one per image.
    pub fn labels(&self) -> &'a [u8] {
        self.labels
    }

    /// Pixels of the images at `indices`, concatenated (image-major, then channel-major,
    /// then row-major), as `f32` in `[0, 1]`: `indices.len() * channels * height * width`
    /// values.
    ///
    /// # Panics
    /// If an index is `>= len()`; [`ImageDataset::batch`] checks instead.
    pub fn pixels_f32(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * self.images.image_len());
        for &i in indices {
            out.extend(self.images.image(i).iter().map(|&p| f32::from(p) / 255.0));
        }
        out
    }

    /// Labels of the images at `indices`.
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn labels_of(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .map(|&i| usize::from(self.labels[i]))
            .collect()
    }

    /// The batch of the images at `indices` (shape
    /// `[indices.len(), channels, height, width]`).
    ///
    /// Errors with [`DataError::InvalidInput`] if an index is out of range.
    pub fn batch(&self, indices: &[usize]) -> Result<ImageBatch> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidInput {
                message: format!(
                    "image index {bad} out of range for a data set of {} images",
                    self.len()
                ),
            });
        }
        Ok(ImageBatch {
            pixels: self.pixels_f32(indices),
            batch_size: indices.len(),
            channels: self.channels(),
            height: self.height(),
            width: self.width(),
            labels: self.labels_of(indices),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ImageSet {
        ImageSet {
            n_images: 3,
            n_channels: 1,
            n_rows: 1,
            n_cols: 2,
            pixels: vec![0, 255, 51, 102, 255, 0],
        }
    }

    #[test]
    fn pixels_are_normalised_and_ordered() {
        let images = set();
        let labels = [2, 0, 1];
        let ds = ImageDataset::new(&images, &labels).unwrap();
        assert_eq!(ds.n_classes(), 3);
        assert_eq!(ds.pixels_f32(&[1, 0]), vec![0.2, 0.4, 0.0, 1.0]);
        let b = ds.batch(&[2, 1]).unwrap();
        assert_eq!((b.batch_size, b.channels, b.height, b.width), (2, 1, 1, 2));
        assert_eq!(b.labels, vec![1, 0]);
        assert_eq!(b.pixels, vec![1.0, 0.0, 0.2, 0.4]);
    }

    #[test]
    fn rgb_batches_have_three_channels() {
        // two 1×1 RGB images
        let images = ImageSet {
            n_images: 2,
            n_channels: 3,
            n_rows: 1,
            n_cols: 1,
            pixels: vec![255, 0, 51, 0, 102, 255],
        };
        let labels = [0, 1];
        let ds = ImageDataset::new(&images, &labels).unwrap();
        assert_eq!(ds.channels(), 3);
        let b = ds.batch(&[1, 0]).unwrap();
        assert_eq!(b.shape(), [2, 3, 1, 1]);
        assert_eq!(b.pixels, vec![0.0, 0.4, 1.0, 1.0, 0.0, 0.2]);
    }

    #[test]
    fn mismatched_labels_and_bad_index_are_errors() {
        let images = set();
        assert!(ImageDataset::new(&images, &[1, 2]).is_err());
        let labels = [0, 0, 0];
        let ds = ImageDataset::new(&images, &labels).unwrap();
        let msg = ds.batch(&[0, 3]).unwrap_err().to_string();
        assert!(msg.contains("index 3"), "{msg}");
    }
}
