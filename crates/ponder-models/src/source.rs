//! How data reaches a model: batches of encoder input with their targets.

use std::sync::Arc;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use ponder_data::{Encoded, ImageSet, TokenBatch};
use ponder_transformer::EncoderInput;

/// A batch: the encoder's input and the class of each row (and, for a regression
/// task, the real-valued target of each row).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Encoder input.
    pub input: EncoderInput,
    /// Class index of each row (all 0 for a regression task).
    pub targets: Vec<usize>,
    /// Regression tasks (STS-B): the score of each row; the heads then have one output
    /// and train on the squared error.
    pub scores: Option<Vec<f32>>,
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

    /// The regression targets as a tensor on `device` (`None` for classification).
    ///
    /// # Shapes
    /// `[batch_size]`
    pub fn scores_tensor(&self, device: &Device) -> Option<Tensor<1>> {
        self.scores
            .as_ref()
            .map(|s| Tensor::from_data(TensorData::new(s.clone(), [s.len()]), device))
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
    /// Regression sources: the score of each example, in order (`None`: classification).
    fn scores(&self) -> Option<Vec<f32>> {
        None
    }
    /// The examples at `positions` (indices into this source) as a batch on `device`.
    fn batch(&self, positions: &[usize], device: &Device) -> Batch;
}

/// Images of an [`ImageSet`] (IDX files such as Fashion-MNIST, or an image folder), any
/// size and any number of channels: a subset of the set, chosen by index, so train and
/// validation splits share one copy of the pixels.
///
/// Pixels are scaled to `[0, 1]` and standardised per channel with a mean and standard
/// deviation each: by default Fashion-MNIST's (0.2860, 0.3530) for every channel;
/// [`ImageSource::with_channel_normalisation`] takes, e.g., the
/// [`ImageSet::channel_stats`] of the training split.
#[derive(Debug, Clone)]
pub struct ImageSource {
    images: Arc<ImageSet>,
    labels: Arc<Vec<usize>>,
    indices: Vec<usize>,
    n_classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl ImageSource {
    /// The examples `indices` of `images`/`labels` (labels `0..n_classes`).
    ///
    /// # Panics
    /// If the set has no channel or its pixels do not match its sizes, an index is out of
    /// range, the labels do not match the images, or a label is not below `n_classes`
    /// (the loaders of `ponder-data` check this on real files).
    pub fn new(
        images: Arc<ImageSet>,
        labels: Arc<Vec<usize>>,
        indices: Vec<usize>,
        n_classes: usize,
    ) -> Self {
        assert!(
            images.n_channels > 0 && images.pixels.len() == images.n_images * images.image_len(),
            "ImageSource: {} pixels for {} images of {}x{}x{} (channels x rows x cols)",
            images.pixels.len(),
            images.n_images,
            images.n_channels,
            images.n_rows,
            images.n_cols
        );
        assert_eq!(
            images.n_images,
            labels.len(),
            "ImageSource: one label per image"
        );
        assert!(
            indices.iter().all(|&i| i < images.n_images),
            "ImageSource: index out of range"
        );
        if let Some((i, label)) = labels.iter().enumerate().find(|&(_, &l)| l >= n_classes) {
            panic!("ImageSource: label {label} of image {i} is not below n_classes = {n_classes}");
        }
        let channels = images.n_channels;
        Self {
            images,
            labels,
            indices,
            n_classes,
            mean: vec![0.2860; channels],
            std: vec![0.3530; channels],
        }
    }

    /// Uses another normalisation, the same for every channel.
    ///
    /// # Panics
    /// If `mean` is not finite or `std` is not finite and positive.
    pub fn with_normalisation(self, mean: f32, std: f32) -> Self {
        let channels = self.images.n_channels;
        self.with_channel_normalisation(vec![mean; channels], vec![std; channels])
    }

    /// Uses another normalisation per channel: channel `c` becomes
    /// `(pixel / 255 - mean[c]) / std[c]`.
    ///
    /// # Panics
    /// If `mean` or `std` does not have one value per channel, a mean is not finite, or
    /// a standard deviation is not finite and positive.
    pub fn with_channel_normalisation(mut self, mean: Vec<f32>, std: Vec<f32>) -> Self {
        let channels = self.images.n_channels;
        assert!(
            mean.len() == channels && std.len() == channels,
            "ImageSource: normalisation mean {mean:?} and std {std:?} must have one value per \
             channel ({channels})"
        );
        assert!(
            mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s > 0.0),
            "ImageSource: normalisation mean {mean:?} must be finite and std {std:?} finite \
             and positive"
        );
        self.mean = mean;
        self.std = std;
        self
    }

    /// The normalisation used: `(mean, std)`, one value per channel each.
    pub fn normalisation(&self) -> (&[f32], &[f32]) {
        (&self.mean, &self.std)
    }

    /// The underlying images (all of them, not only this source's indices).
    pub fn images(&self) -> &ImageSet {
        &self.images
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
        self.indices.iter().map(|&i| self.labels[i]).collect()
    }

    /// # Shapes
    /// The input is [`EncoderInput::Images`] of `[positions.len(), n_channels, n_rows,
    /// n_cols]`.
    fn batch(&self, positions: &[usize], device: &Device) -> Batch {
        let set = &*self.images;
        let (c, h, w) = (set.n_channels, set.n_rows, set.n_cols);
        // The normalised value of every byte, per channel.
        let table: Vec<[f32; 256]> = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(&mean, &std)| std::array::from_fn(|v| (v as f32 / 255.0 - mean) / std))
            .collect();
        let mut pixels = Vec::with_capacity(positions.len() * c * h * w);
        let mut targets = Vec::with_capacity(positions.len());
        for &p in positions {
            let i = self.indices[p];
            for (plane, table) in set.image(i).chunks_exact((h * w).max(1)).zip(&table) {
                pixels.extend(plane.iter().map(|&v| table[usize::from(v)]));
            }
            targets.push(self.labels[i]);
        }
        let images =
            Tensor::<4>::from_data(TensorData::new(pixels, [positions.len(), c, h, w]), device);
        Batch {
            input: EncoderInput::Images(images),
            targets,
            scores: None,
        }
    }
}

/// Tokenized texts with their classes; batches are right-padded to their longest
/// sequence by [`TokenBatch`], with a padding mask and the segment ids.
#[derive(Debug, Clone)]
pub struct TextSource {
    encoded: Arc<Vec<Encoded>>,
    labels: Arc<Vec<usize>>,
    scores: Option<Arc<Vec<f32>>>,
    indices: Vec<usize>,
    n_classes: usize,
    pad_id: u32,
}

impl TextSource {
    /// The examples `indices` of the tokenized texts `encoded` and their `labels`.
    ///
    /// # Panics
    /// If the lengths differ, an index is out of range, a sequence is empty or its ids
    /// and segment ids differ in length (the loaders check texts before this).
    pub fn new(
        encoded: Arc<Vec<Encoded>>,
        labels: Arc<Vec<usize>>,
        indices: Vec<usize>,
        n_classes: usize,
        pad_id: u32,
    ) -> Self {
        assert_eq!(
            encoded.len(),
            labels.len(),
            "TextSource: one label per text"
        );
        assert!(
            indices.iter().all(|&i| i < encoded.len()),
            "TextSource: index out of range"
        );
        assert!(
            encoded
                .iter()
                .all(|e| !e.is_empty() && e.ids.len() == e.type_ids.len()),
            "TextSource: empty sequence, or ids and segment ids of different lengths"
        );
        Self {
            encoded,
            labels,
            scores: None,
            indices,
            n_classes,
            pad_id,
        }
    }

    /// A regression source (STS-B): the texts `indices` of `encoded` with one real score
    /// each; one output (`n_classes() == 1`) and every class index 0.
    ///
    /// # Panics
    /// As [`TextSource::new`], or if there is not one finite score per text.
    pub fn regression(
        encoded: Arc<Vec<Encoded>>,
        scores: Arc<Vec<f32>>,
        indices: Vec<usize>,
        pad_id: u32,
    ) -> Self {
        assert!(
            scores.len() == encoded.len() && scores.iter().all(|s| s.is_finite()),
            "TextSource: one finite score per text"
        );
        let labels = Arc::new(vec![0; encoded.len()]);
        Self {
            scores: Some(scores),
            ..Self::new(encoded, labels, indices, 1, pad_id)
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

    fn scores(&self) -> Option<Vec<f32>> {
        self.scores
            .as_ref()
            .map(|s| self.indices.iter().map(|&i| s[i]).collect())
    }

    fn batch(&self, positions: &[usize], device: &Device) -> Batch {
        let rows: Vec<&Encoded> = positions
            .iter()
            .map(|&p| &self.encoded[self.indices[p]])
            .collect();
        let targets = positions
            .iter()
            .map(|&p| self.labels[self.indices[p]])
            .collect();
        let tokens = TokenBatch::from_encoded(&rows, targets, self.pad_id)
            .unwrap_or_else(|e| panic!("TextSource: {e}"));
        let shape = [tokens.batch_size, tokens.seq_len];
        let int = |v: &[u32]| {
            let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Tensor::<2, Int>::from_data(TensorData::new(data, shape), device)
        };
        let any_pad = tokens.mask.iter().any(|&real| !real);
        let pad: Vec<bool> = tokens.mask.iter().map(|&real| !real).collect();
        Batch {
            input: EncoderInput::Tokens {
                ids: int(&tokens.ids),
                type_ids: Some(int(&tokens.type_ids)),
                mask_pad: any_pad
                    .then(|| Tensor::<2, Bool>::from_data(TensorData::new(pad, shape), device)),
            },
            targets: tokens.labels,
            scores: self
                .scores
                .as_ref()
                .map(|s| positions.iter().map(|&p| s[self.indices[p]]).collect()),
        }
    }
}
