//! Batches as flat vectors with shapes (the model crate turns them into tensors), and
//! [`batches`] to cut a list of indices into batches.

use crate::error::{DataError, Result};
use crate::tokenize::Encoded;

/// A batch of token sequences, right-padded to the longest one.
///
/// `ids`, `type_ids` and `mask` are row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids, padding positions hold the pad id.
    pub ids: Vec<u32>,
    /// Segment ids, 0 at padding positions.
    pub type_ids: Vec<u32>,
    /// `true` for a real token, `false` for padding.
    pub mask: Vec<bool>,
    /// Number of sequences.
    pub batch_size: usize,
    /// Length of the longest sequence (every row is this long).
    pub seq_len: usize,
    /// One label per sequence.
    pub labels: Vec<usize>,
}

impl TokenBatch {
    /// Pads `encoded` on the right with `pad_id` to the longest sequence.
    ///
    /// Errors with [`DataError::InvalidInput`] if there is not one label per sequence or a
    /// sequence has a different number of ids and type ids.
    pub fn from_encoded(encoded: &[&Encoded], labels: Vec<usize>, pad_id: u32) -> Result<Self> {
        if labels.len() != encoded.len() {
            return Err(DataError::InvalidInput {
                message: format!(
                    "{} sequences but {} labels in a token batch",
                    encoded.len(),
                    labels.len()
                ),
            });
        }
        if let Some((i, e)) = encoded
            .iter()
            .enumerate()
            .find(|(_, e)| e.ids.len() != e.type_ids.len())
        {
            return Err(DataError::InvalidInput {
                message: format!(
                    "sequence {i} of a token batch has {} ids but {} type ids",
                    e.ids.len(),
                    e.type_ids.len()
                ),
            });
        }
        let batch_size = encoded.len();
        let seq_len = encoded.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch_size * seq_len);
        let mut type_ids = Vec::with_capacity(batch_size * seq_len);
        let mut mask = Vec::with_capacity(batch_size * seq_len);
        for e in encoded {
            let pad = seq_len - e.ids.len();
            ids.extend_from_slice(&e.ids);
            ids.extend(std::iter::repeat_n(pad_id, pad));
            type_ids.extend_from_slice(&e.type_ids);
            type_ids.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(true, e.ids.len()));
            mask.extend(std::iter::repeat_n(false, pad));
        }
        Ok(Self {
            ids,
            type_ids,
            mask,
            batch_size,
            seq_len,
            labels,
        })
    }

    /// Number of real (non-padding) tokens in each sequence.
    pub fn lengths(&self) -> Vec<usize> {
        if self.seq_len == 0 {
            return vec![0; self.batch_size];
        }
        self.mask
            .chunks(self.seq_len)
            .map(|row| row.iter().filter(|&&m| m).count())
            .collect()
    }
}

/// A batch of images, `pixels` row-major `[batch_size, channels, height, width]`, in
/// `[0, 1]`. Made by [`ImageDataset::batch`](crate::ImageDataset::batch).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// Pixel values.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub batch_size: usize,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// One label per image.
    pub labels: Vec<usize>,
}

impl ImageBatch {
    /// The shape `[batch_size, channels, height, width]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.batch_size, self.channels, self.height, self.width]
    }
}

/// Consecutive batches of `batch_size` items of `items` (typically shuffled indices); the
/// last batch is shorter if `batch_size` does not divide `items.len()`.
///
/// # Panics
/// If `batch_size` is 0.
pub fn batches<T>(items: &[T], batch_size: usize) -> impl Iterator<Item = &[T]> {
    assert!(batch_size > 0, "batch_size must be positive");
    items.chunks(batch_size)
}

/// How many batches [`batches`] yields for `n` items.
///
/// # Panics
/// If `batch_size` is 0.
pub fn n_batches(n: usize, batch_size: usize) -> usize {
    assert!(batch_size > 0, "batch_size must be positive");
    n.div_ceil(batch_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ids: &[u32], second_from: usize) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            type_ids: (0..ids.len())
                .map(|i| u32::from(i >= second_from))
                .collect(),
        }
    }

    #[test]
    fn pads_right_to_longest() {
        let a = enc(&[2, 5, 3], 9);
        let b = enc(&[2, 5, 6, 3, 7, 3], 4);
        let batch = TokenBatch::from_encoded(&[&a, &b], vec![1, 0], 0).unwrap();
        assert_eq!((batch.batch_size, batch.seq_len), (2, 6));
        assert_eq!(batch.ids, vec![2, 5, 3, 0, 0, 0, 2, 5, 6, 3, 7, 3]);
        assert_eq!(batch.type_ids, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(
            batch.mask,
            vec![
                true, true, true, false, false, false, true, true, true, true, true, true
            ]
        );
        assert_eq!(batch.labels, vec![1, 0]);
        assert_eq!(batch.lengths(), vec![3, 6]);
    }

    #[test]
    fn mismatches_are_errors() {
        let a = enc(&[1, 2], 9);
        assert!(TokenBatch::from_encoded(&[&a], vec![], 0).is_err());
        let bad = Encoded {
            ids: vec![1, 2],
            type_ids: vec![0],
        };
        assert!(TokenBatch::from_encoded(&[&bad], vec![0], 0).is_err());
        let empty = TokenBatch::from_encoded(&[], vec![], 0).unwrap();
        assert_eq!((empty.batch_size, empty.seq_len), (0, 0));
    }

    #[test]
    fn batches_keep_last_partial() {
        let idx: Vec<usize> = (0..7).collect();
        let got: Vec<&[usize]> = batches(&idx, 3).collect();
        assert_eq!(got, vec![&[0, 1, 2][..], &[3, 4, 5], &[6]]);
        assert_eq!(n_batches(7, 3), 3);
        assert_eq!(n_batches(6, 3), 2);
        assert_eq!(batches(&idx[..0], 3).count(), 0);
    }
}
