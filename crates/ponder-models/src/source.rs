//! How data reaches a model: batches of encoder input with their targets.

use std::sync::Arc;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_data::ImageSet;
use ponder_transformer::EncoderInput;

/// A batch: the encoder's input and the class of each row.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Encoder input.
    pub input: EncoderInput,
    /// Class index of each row.
    pub targets: Vec<usize>,
}

impl Batch {
    /// The targets as a tensor on `device`.
    ///
    /// # Shapes
    /// `[batch_size]`
    pub fn targets_tensor(&self, device: &Device) -> Tensor<1, Int> {
        let data: Vec<i64> = self.targets.iter().map(|&t| t as i64).collect();
        Tensor::from_data(TensorData::new(data, [self.targets.len()]), device)
    }
}

/// A classification data set that can hand out batches by position.
pub trait ClassificationSource {
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes.
    fn n_classes(&self) -> usize;
    /// The class of each example, in order.
    fn targets(&self) -> Vec<usize>;
    /// The examples at `positions` (indices into this source) as a batch on `device`.
    fn batch(&self, positions: &[usize], device: &Device) -> Batch;
}

/// Grey images from an IDX set (MNIST, Fashion-MNIST): a subset of the set, chosen by
/// index, so train and validation splits share one copy of the pixels.
///
/// Pixels are scaled to `[0, 1]` and standardised with the given mean and standard
/// deviation (Fashion-MNIST's: 0.2860, 0.3530).
#[derive(Debug, Clone)]
pub struct ImageSource {
    images: Arc<ImageSet>,
    labels: Arc<Vec<u8>>,
    indices: Vec<usize>,
    n_classes: usize,
    mean: f32,
    std: f32,
}

impl ImageSource {
    /// The examples `indices` of `images`/`labels`.
    ///
    /// # Panics
    /// If an index is out of range or the labels do not match the images (the loaders
    /// of `ponder-data` check this on real files).
    pub fn new(
        images: Arc<ImageSet>,
        labels: Arc<Vec<u8>>,
        indices: Vec<usize>,
        n_classes: usize,
    ) -> Self {
        assert_eq!(
            images.n_images,
            labels.len(),
            "ImageSource: one label per image"
        );
        assert!(
            indices.iter().all(|&i| i < images.n_images),
            "ImageSource: index out of range"
        );
        Self {
            images,
            labels,
            indices,
            n_classes,
            mean: 0.2860,
            std: 0.3530,
        }
    }

    /// Uses another normalisation.
    pub fn with_normalisation(mut self, mean: f32, std: f32) -> Self {
        self.mean = mean;
        self.std = std;
        self
    }
}

impl ClassificationSource for ImageSource {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn targets(&self) -> Vec<usize> {
        self.indices
            .iter()
            .map(|&i| self.labels[i] as usize)
            .collect()
    }

    fn batch(&self, positions: &[usize], device: &Device) -> Batch {
        let (h, w) = (self.images.n_rows, self.images.n_cols);
        let mut pixels = Vec::with_capacity(positions.len() * h * w);
        let mut targets = Vec::with_capacity(positions.len());
        for &p in positions {
            let i = self.indices[p];
            pixels.extend(
                self.images
                    .image(i)
                    .iter()
                    .map(|&v| (v as f32 / 255.0 - self.mean) / self.std),
            );
            targets.push(self.labels[i] as usize);
        }
        let images =
            Tensor::<4>::from_data(TensorData::new(pixels, [positions.len(), 1, h, w]), device);
        Batch {
            input: EncoderInput::Images(images),
            targets,
        }
    }
}

/// Tokenized texts with their classes; batches are right-padded to their longest
/// sequence, with a padding mask.
#[derive(Debug, Clone)]
pub struct TextSource {
    ids: Arc<Vec<Vec<u32>>>,
    labels: Arc<Vec<usize>>,
    indices: Vec<usize>,
    n_classes: usize,
    pad_id: u32,
}

impl TextSource {
    /// The examples `indices` of the token-id sequences `ids` and their `labels`.
    ///
    /// # Panics
    /// If the lengths differ, an index is out of range or a sequence is empty.
    pub fn new(
        ids: Arc<Vec<Vec<u32>>>,
        labels: Arc<Vec<usize>>,
        indices: Vec<usize>,
        n_classes: usize,
        pad_id: u32,
    ) -> Self {
        assert_eq!(ids.len(), labels.len(), "TextSource: one label per text");
        assert!(
            indices.iter().all(|&i| i < ids.len()),
            "TextSource: index out of range"
        );
        assert!(
            ids.iter().all(|s| !s.is_empty()),
            "TextSource: empty token sequence"
        );
        Self {
            ids,
            labels,
            indices,
            n_classes,
            pad_id,
        }
    }
}

impl ClassificationSource for TextSource {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn targets(&self) -> Vec<usize> {
        self.indices.iter().map(|&i| self.labels[i]).collect()
    }

    fn batch(&self, positions: &[usize], device: &Device) -> Batch {
        let seqs: Vec<&Vec<u32>> = positions
            .iter()
            .map(|&p| &self.ids[self.indices[p]])
            .collect();
        let seq_len = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
        let b = seqs.len();
        let mut ids = Vec::with_capacity(b * seq_len);
        let mut pad = Vec::with_capacity(b * seq_len);
        for s in &seqs {
            for t in 0..seq_len {
                ids.push(s.get(t).map_or(self.pad_id as i64, |&v| v as i64));
                pad.push(t >= s.len());
            }
        }
        let targets = positions
            .iter()
            .map(|&p| self.labels[self.indices[p]])
            .collect();
        let any_pad = pad.iter().any(|&p| p);
        Batch {
            input: EncoderInput::Tokens {
                ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, seq_len]), device),
                type_ids: None,
                mask_pad: any_pad.then(|| {
                    Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, seq_len]), device)
                }),
            },
            targets,
        }
    }
}
