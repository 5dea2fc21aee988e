//! Seeded shuffles and train / validation / test splits of `0..n`.
//!
//! The same seed gives the same result on every run, machine and version of the
//! dependencies: the shuffle is [`SeededRng::shuffle`], whose stream (the ChaCha12 cipher
//! keyed from the seed) and algorithm are fixed in this crate (see [`crate::rng`]), and
//! golden values in the tests pin them.

use crate::error::{DataError, Result};
use crate::rng::SeededRng;

/// `0..n` in an order shuffled by a generator seeded with `seed`.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..n).collect();
    SeededRng::new(seed).shuffle(&mut indices);
    indices
}

/// Disjoint sets of indices that together are `0..n`, each in shuffled order.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Splits {
    /// Training indices.
    pub train: Vec<usize>,
    /// Validation indices.
    pub valid: Vec<usize>,
    /// Test indices (empty from [`split_train_valid`]).
    pub test: Vec<usize>,
}

/// Shuffles `0..n` with `seed` and cuts it into test (`round(n * test_fraction)`
/// indices), validation (`round(n * valid_fraction)`) and training (the rest).
///
/// Errors with [`DataError::InvalidSplit`] unless both fractions are in `[0, 1)` and their
/// sum is below 1.
pub fn split_indices(
    n: usize,
    valid_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<Splits> {
    check_fraction("valid_fraction", valid_fraction)?;
    check_fraction("test_fraction", test_fraction)?;
    if valid_fraction + test_fraction >= 1.0 {
        return Err(DataError::InvalidSplit {
            message: format!(
                "valid_fraction {valid_fraction} + test_fraction {test_fraction} must be below 1 \
                 (nothing would be left for training)"
            ),
        });
    }
    let mut indices = shuffled_indices(n, seed);
    let count = |f: f64| ((n as f64 * f).round() as usize).min(n);
    let n_test = count(test_fraction);
    let n_valid = count(valid_fraction).min(n - n_test);
    let train = indices.split_off(n_test + n_valid);
    let valid = indices.split_off(n_test);
    Ok(Splits {
        train,
        valid,
        test: indices,
    })
}

/// [`split_indices`] without a test set, for data sets that come with their own (such as
/// Fashion-MNIST): `test` is empty.
pub fn split_train_valid(n: usize, valid_fraction: f64, seed: u64) -> Result<Splits> {
    split_indices(n, valid_fraction, 0.0, seed)
}

fn check_fraction(name: &str, f: f64) -> Result<()> {
    if (0.0..1.0).contains(&f) {
        Ok(())
    } else {
        Err(DataError::InvalidSplit {
            message: format!("{name} is {f}, it must be in [0, 1)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_partition(s: &Splits, n: usize) {
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.valid)
            .chain(&s.test)
            .copied()
            .collect();
        assert_eq!(all.len(), n, "splits overlap or miss items");
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled_indices(100, 7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled_indices(100, 7));
        assert_ne!(a, shuffled_indices(100, 8));
        assert_ne!(a, sorted);
        assert!(shuffled_indices(0, 1).is_empty());
    }

    /// Golden values: every split made so far comes from this stream (the same as rand
    /// 0.9's `StdRng` gave); if this fails, every experiment's data changes.
    #[test]
    fn golden_shuffles_and_splits() {
        assert_eq!(shuffled_indices(10, 42), [8, 6, 3, 2, 1, 5, 9, 7, 4, 0]);
        assert_eq!(
            shuffled_indices(70_000, 0)[..8],
            [37716, 55421, 12127, 37216, 16176, 33823, 28266, 63487]
        );
        let s = split_indices(20, 0.2, 0.1, 7).unwrap();
        assert_eq!(s.test, [18, 3]);
        assert_eq!(s.valid, [4, 14, 15, 7]);
        assert_eq!(s.train, [16, 5, 13, 19, 17, 12, 0, 8, 6, 11, 2, 10, 1, 9]);
    }

    #[test]
    fn splits_are_disjoint_and_cover_everything() {
        for n in [0, 1, 2, 3, 10, 101, 1000] {
            let s = split_indices(n, 0.1, 0.2, 42).unwrap();
            assert_partition(&s, n);
        }
        let s = split_indices(1000, 0.1, 0.2, 42).unwrap();
        assert_eq!(
            (s.train.len(), s.valid.len(), s.test.len()),
            (700, 100, 200)
        );
        let s = split_indices(3, 0.5, 0.49, 1).unwrap();
        assert_partition(&s, 3);
    }

    #[test]
    fn same_seed_same_split_different_seed_different() {
        let a = split_indices(500, 0.2, 0.2, 3).unwrap();
        assert_eq!(a, split_indices(500, 0.2, 0.2, 3).unwrap());
        assert_ne!(a, split_indices(500, 0.2, 0.2, 4).unwrap());
    }

    #[test]
    fn train_valid_has_no_test() {
        let s = split_train_valid(60_000, 1.0 / 12.0, 0).unwrap();
        assert_eq!((s.train.len(), s.valid.len()), (55_000, 5_000));
        assert!(s.test.is_empty());
        assert_partition(&s, 60_000);
    }

    #[test]
    fn bad_fractions_are_errors() {
        for (v, t) in [
            (-0.1, 0.1),
            (1.0, 0.0),
            (0.0, 1.0),
            (0.5, 0.5),
            (f64::NAN, 0.1),
        ] {
            let err = split_indices(10, v, t, 0).unwrap_err();
            assert!(matches!(err, DataError::InvalidSplit { .. }), "{v} {t}");
        }
        assert!(split_train_valid(10, 1.5, 0).is_err());
    }
}
