//! The parity task of PonderNet (Banino, Balaguer & Blundell 2021, arXiv:2107.05407).
//!
//! Each input has `n_elems` elements; `k` of them, `k` drawn uniformly from a range, are
//! ±1 (each sign with probability ½) and the rest 0, at random positions. The target is
//! 1 when the number of +1's is odd. Interpolation draws `k` from `1..=n_elems` for both
//! training and testing; extrapolation trains on `1..=n_elems/2` and tests on
//! `n_elems/2+1..=n_elems`.

use std::ops::RangeInclusive;

use crate::error::{DataError, Result};
use crate::rng::SeededRng;

/// Generated parity examples.
#[derive(Debug, Clone, PartialEq)]
pub struct ParitySet {
    /// Elements per input.
    pub n_elems: usize,
    /// Inputs, row-major `[len, n_elems]`, each element in {−1, 0, 1}.
    pub inputs: Vec<f32>,
    /// Parity of the number of +1's (1: odd).
    pub targets: Vec<usize>,
    /// Number of non-zero elements of each input (its difficulty).
    pub n_nonzero: Vec<usize>,
}

impl ParitySet {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The input of example `i`.
    pub fn input(&self, i: usize) -> &[f32] {
        &self.inputs[i * self.n_elems..(i + 1) * self.n_elems]
    }
}

/// `len` parity examples of `n_elems` elements with a number of non-zero elements drawn
/// uniformly from `nonzero`, reproducibly from `seed` (a [`SeededRng`], whose stream no
/// dependency update changes).
///
/// # Errors
/// [`DataError::InvalidInput`] when `n_elems` is 0 or `nonzero` is empty, starts at 0 or
/// goes past `n_elems`.
pub fn parity_set(
    len: usize,
    n_elems: usize,
    nonzero: RangeInclusive<usize>,
    seed: u64,
) -> Result<ParitySet> {
    let (lo, hi) = (*nonzero.start(), *nonzero.end());
    if n_elems == 0 || lo == 0 || lo > hi || hi > n_elems {
        return Err(DataError::InvalidInput {
            message: format!(
                "parity: {lo}..={hi} non-zero elements out of {n_elems}: need 1 ≤ low ≤ high ≤ n_elems"
            ),
        });
    }
    let mut rng = SeededRng::new(seed);
    let mut set = ParitySet {
        n_elems,
        inputs: Vec::with_capacity(len * n_elems),
        targets: Vec::with_capacity(len),
        n_nonzero: Vec::with_capacity(len),
    };
    let mut row = vec![0f32; n_elems];
    for _ in 0..len {
        let k = rng.usize_inclusive(lo..=hi);
        row.fill(0.0);
        let mut odd = false;
        for v in row.iter_mut().take(k) {
            let plus = rng.bernoulli(0.5);
            *v = if plus { 1.0 } else { -1.0 };
            odd ^= plus;
        }
        rng.shuffle(&mut row);
        set.inputs.extend_from_slice(&row);
        set.targets.push(usize::from(odd));
        set.n_nonzero.push(k);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_parity_of_the_plus_ones() {
        let set = parity_set(2000, 16, 1..=16, 3).unwrap();
        assert_eq!(set.inputs.len(), 2000 * 16);
        let mut seen = [false; 17];
        for i in 0..set.len() {
            let x = set.input(i);
            let plus = x.iter().filter(|&&v| v == 1.0).count();
            let nonzero = x.iter().filter(|&&v| v != 0.0).count();
            assert!(x.iter().all(|&v| v == 0.0 || v == 1.0 || v == -1.0));
            assert_eq!(set.targets[i], plus % 2);
            assert_eq!(set.n_nonzero[i], nonzero);
            seen[nonzero] = true;
        }
        assert!(seen[1..].iter().all(|&s| s), "every difficulty appears");
        // both classes, roughly balanced
        let ones = set.targets.iter().sum::<usize>() as f64 / set.len() as f64;
        assert!((ones - 0.5).abs() < 0.05, "{ones}");
    }

    /// Golden values: the parity data of every run so far comes from this stream (the
    /// same as rand 0.9's `StdRng` gave); if this fails, the experiments' data changes.
    #[test]
    fn golden_set() {
        let set = parity_set(3, 8, 1..=8, 5).unwrap();
        assert_eq!(set.n_nonzero, [2, 7, 4]);
        assert_eq!(set.targets, [1, 0, 1]);
        #[rustfmt::skip]
        let inputs = [
            -1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 0.0, 1.0,
            1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 1.0,
        ];
        assert_eq!(set.inputs, inputs);
    }

    #[test]
    fn ranges_and_seeds() {
        let a = parity_set(100, 8, 5..=8, 1).unwrap();
        assert!(a.n_nonzero.iter().all(|&k| (5..=8).contains(&k)));
        assert_eq!(a, parity_set(100, 8, 5..=8, 1).unwrap());
        assert_ne!(a, parity_set(100, 8, 5..=8, 2).unwrap());
        for (lo, hi) in [(0, 3), (4, 9), (5, 4)] {
            assert!(parity_set(10, 8, lo..=hi, 0).is_err());
        }
        assert!(parity_set(10, 0, 1..=1, 0).is_err());
    }
}
