//! [`SeededRng`]: the seeded random generator behind data order and generated data
//! ([`shuffled_indices`](crate::shuffled_indices), [`split_indices`](crate::split_indices),
//! [`parity_set`](crate::parity_set)), with a stream that no dependency update can change.
//!
//! `rand`'s `StdRng` promises nothing about its stream across versions, and neither do
//! `rand`'s sampling algorithms (shuffles, ranges, Bernoulli draws). Every step here is
//! therefore either fixed by a specification or written out in this file:
//!
//! * **Seed expansion** ([`SeededRng::new`]): the 64-bit seed is expanded to the 32-byte
//!   ChaCha key by eight steps of PCG32 (the multiplier 6364136223846793005 and increment
//!   11634580027462260723 of `rand_core`'s `seed_from_u64`), each output written as 4
//!   little-endian bytes.
//! * **Words** ([`SeededRng::next_u32`]): the ChaCha12 key stream of that key (nonce 0,
//!   block counter from 0), 32-bit words in order, from `rand_chacha`'s `ChaCha12Rng`;
//!   the stream is defined by the cipher. [`SeededRng::next_u64`] joins two consecutive
//!   words, the first as the low half.
//! * **Sampling** ([`SeededRng::usize_inclusive`], [`SeededRng::bernoulli`],
//!   [`SeededRng::shuffle`]): our own code, each documented with its algorithm.
//!
//! The result equals what `rand` 0.9 gives with `StdRng::seed_from_u64(seed)` and
//! `random_range`, `random_bool` and `SliceRandom::shuffle`, bit for bit (tested against
//! `rand` 0.9 in `tests/rng_matches_rand.rs`), so splits and generated data made before
//! this module existed are unchanged. Golden values in the tests of [`split`](crate::split)
//! and [`parity`](crate::parity) pin the streams themselves.

use std::ops::RangeInclusive;

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A seeded generator with a stream fixed by this crate (see the [module docs](self)):
/// ChaCha12 keyed by a PCG32 expansion of a `u64` seed, and our own shuffle, uniform
/// integer and Bernoulli algorithms.
///
/// ```
/// use ponder_data::rng::SeededRng;
///
/// let mut rng = SeededRng::new(42);
/// let mut items = [1, 2, 3, 4, 5];
/// rng.shuffle(&mut items);
/// let k = rng.usize_inclusive(1..=6);
/// assert!((1..=6).contains(&k));
/// let _heads = rng.bernoulli(0.5);
/// ```
#[derive(Clone, Debug)]
pub struct SeededRng {
    chacha: ChaCha12Rng,
}

impl SeededRng {
    /// The generator of `seed`: ChaCha12 keyed with eight PCG32 outputs started from
    /// `seed` (what `rand_core` 0.9's `seed_from_u64` does).
    pub fn new(seed: u64) -> Self {
        // PCG32 (XSH-RR output), advanced before each output so that seeds with few set
        // bits do not give keys with few set bits.
        const MUL: u64 = 6_364_136_223_846_793_005;
        const INC: u64 = 11_634_580_027_462_260_723;
        let mut state = seed;
        let mut key = [0u8; 32];
        for chunk in key.chunks_exact_mut(4) {
            state = state.wrapping_mul(MUL).wrapping_add(INC);
            let xorshifted = (((state >> 18) ^ state) >> 27) as u32;
            let rotation = (state >> 59) as u32;
            chunk.copy_from_slice(&xorshifted.rotate_right(rotation).to_le_bytes());
        }
        Self {
            chacha: ChaCha12Rng::from_seed(key),
        }
    }

    /// The next 32-bit word of the ChaCha12 key stream.
    pub fn next_u32(&mut self) -> u32 {
        self.chacha.next_u32()
    }

    /// The next two words of the stream as one `u64`, the first word as the low half.
    pub fn next_u64(&mut self) -> u64 {
        let low = u64::from(self.next_u32());
        let high = u64::from(self.next_u32());
        (high << 32) | low
    }

    /// A uniform integer in `range` (both ends included).
    ///
    /// Ranges whose high end fits in a `u32` draw 32-bit words, others 64-bit ones (see
    /// [`u64_inclusive`](Self::u64_inclusive) for the method). Panics when the range is
    /// empty.
    pub fn usize_inclusive(&mut self, range: RangeInclusive<usize>) -> usize {
        let (low, high) = (*range.start(), *range.end());
        assert!(low <= high, "empty range {low}..={high}");
        if high as u64 > u64::from(u32::MAX) {
            self.u64_inclusive(low as u64, high as u64) as usize
        } else {
            self.u32_inclusive(low as u32, high as u32) as usize
        }
    }

    /// A uniform `u32` in `low..=high` (`low <= high`), by the method of
    /// [`u64_inclusive`](Self::u64_inclusive) on 32-bit words.
    pub fn u32_inclusive(&mut self, low: u32, high: u32) -> u32 {
        assert!(low <= high, "empty range {low}..={high}");
        let span = high.wrapping_sub(low).wrapping_add(1);
        if span == 0 {
            // The whole of u32.
            return self.next_u32();
        }
        let (mut offset, fraction) = widening_mul_u32(self.next_u32(), span);
        if fraction > span.wrapping_neg() {
            let (carry_word, _) = widening_mul_u32(self.next_u32(), span);
            offset += u32::from(fraction.checked_add(carry_word).is_none());
        }
        low.wrapping_add(offset)
    }

    /// A uniform `u64` in `low..=high` (`low <= high`).
    ///
    /// Method (Canon's, as in `rand` 0.9 without its `unbiased` feature): with
    /// `span = high - low + 1`, multiply a random word `w` by `span` in double width; the
    /// high half is the offset from `low`, the low half the fractional part of
    /// `w · span / 2^64`. When that fraction is within `span` of overflowing, one more
    /// word `w'` decides whether the true product of `span` with the two-word fraction
    /// carries into the offset: it does when the fraction plus the high half of
    /// `w' · span` overflows. The whole range (`span` = 2^64) takes one word as is.
    pub fn u64_inclusive(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        let span = high.wrapping_sub(low).wrapping_add(1);
        if span == 0 {
            return self.next_u64();
        }
        let (mut offset, fraction) = widening_mul_u64(self.next_u64(), span);
        if fraction > span.wrapping_neg() {
            let (carry_word, _) = widening_mul_u64(self.next_u64(), span);
            offset += u64::from(fraction.checked_add(carry_word).is_none());
        }
        low.wrapping_add(offset)
    }

    /// `true` with probability `p`: a 64-bit word compared with `⌊p · 2^64⌋` (the `f64`
    /// product converted to `u64`, rounding toward zero); `p = 1` is always true and
    /// draws nothing.
    ///
    /// # Panics
    /// When `p` is not in `[0, 1]`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        assert!(
            (0.0..=1.0).contains(&p),
            "probability {p} is outside [0, 1]"
        );
        if p == 1.0 {
            return true;
        }
        // 2^64 as an f64.
        const SCALE: f64 = 2.0 * (1u64 << 63) as f64;
        let threshold = (p * SCALE) as u64;
        self.next_u64() < threshold
    }

    /// Shuffles `items` uniformly (Fisher–Yates, from the front).
    ///
    /// For `i` from 1 to `len - 1`, item `i` is swapped with a uniform position in
    /// `0..=i` (`i = 0` draws nothing). The positions are taken from chunks: one draw
    /// of [`u32_inclusive`](Self::u32_inclusive) below `(i+1)(i+2)…(i+c)`, the longest
    /// such product that fits in a `u32`, gives the next `c` positions as its digits in
    /// the mixed radix `i+1, i+2, …` (least significant first; the last digit is what is
    /// left). Slices of `u32::MAX` items or more draw each position on its own with
    /// [`usize_inclusive`](Self::usize_inclusive)`(0..=i)` (64-bit words from `i =
    /// u32::MAX` on).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        let len = items.len();
        if len <= 1 {
            return;
        }
        if len < u32::MAX as usize {
            let mut positions = IncreasingPositions::new();
            for i in 0..len {
                let j = positions.next(self);
                items.swap(i, j);
            }
        } else {
            for i in 0..len {
                // A draw below i + 1, in 64-bit words once i + 1 passes u32::MAX.
                let j = if (i as u64) < u64::from(u32::MAX) {
                    self.u32_inclusive(0, i as u32) as usize
                } else {
                    self.u64_inclusive(0, i as u64) as usize
                };
                items.swap(i, j);
            }
        }
    }
}

/// Uniform positions in `0..=0`, `0..=1`, `0..=2`, … for [`SeededRng::shuffle`], several
/// from one draw (see there).
struct IncreasingPositions {
    /// The last position was in `0..=n`.
    n: u32,
    /// Digits not yet used, least significant first.
    chunk: u32,
    /// How many positions `chunk` still holds.
    left: u8,
}

impl IncreasingPositions {
    /// Before the first position, which is always 0 and costs no draw.
    fn new() -> Self {
        Self {
            n: 0,
            chunk: 0,
            left: 1,
        }
    }

    /// The next position: uniform in `0..=self.n`, then `n` grows by one.
    fn next(&mut self, rng: &mut SeededRng) -> usize {
        let radix = self.n + 1;
        let left = match self.left.checked_sub(1) {
            Some(left) => left,
            None => {
                let (bound, count) = chunk_bound(radix);
                self.chunk = rng.u32_inclusive(0, bound - 1);
                count - 1
            }
        };
        let position = if left == 0 {
            // The last digit of the chunk: what is left is below `radix`.
            self.chunk
        } else {
            let digit = self.chunk % radix;
            self.chunk /= radix;
            digit
        };
        self.left = left;
        self.n = radix;
        position as usize
    }
}

/// `(m (m+1) … (m+c-1), c)` for the largest `c ≥ 1` whose product fits in a `u32`
/// (`1 ≤ m < u32::MAX`).
fn chunk_bound(m: u32) -> (u32, u8) {
    let mut product = m;
    let mut next = m + 1;
    while let Some(p) = product.checked_mul(next) {
        product = p;
        next += 1;
    }
    (product, (next - m) as u8)
}

/// `(high, low)` halves of the 64-bit product.
fn widening_mul_u32(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

/// `(high, low)` halves of the 128-bit product.
fn widening_mul_u64(a: u64, b: u64) -> (u64, u64) {
    let product = u128::from(a) * u128::from(b);
    ((product >> 64) as u64, product as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_bounds() {
        // 2·3·…·12 = 479001600 fits in a u32, ·13 does not
        assert_eq!(chunk_bound(2), (479_001_600, 11));
        assert_eq!(chunk_bound(1), (479_001_600, 12));
        assert_eq!(chunk_bound(65_535), (65_535 * 65_536, 2));
        assert_eq!(chunk_bound(65_536), (65_536, 1));
    }

    /// Golden values of the raw stream (ChaCha12 keyed by the PCG32 expansion of 42).
    #[test]
    fn golden_words() {
        let mut rng = SeededRng::new(42);
        assert_eq!(rng.next_u32(), 572_990_626);
        assert_eq!(rng.next_u32(), 2_261_546_851);
        assert_eq!(rng.next_u64(), 10_011_513_049_433_592_189);
    }

    #[test]
    fn ranges_stay_inside() {
        let mut rng = SeededRng::new(5);
        for (low, high) in [
            (0, 0),
            (3, 3),
            (1, 16),
            (0, u32::MAX as usize),
            (7, 1 << 40),
        ] {
            for _ in 0..200 {
                let v = rng.usize_inclusive(low..=high);
                assert!((low..=high).contains(&v));
            }
        }
        assert!(rng.bernoulli(1.0));
        assert!(!rng.bernoulli(0.0));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = SeededRng::new(11);
        for len in [0, 1, 2, 3, 13, 14, 100] {
            let mut v: Vec<usize> = (0..len).collect();
            rng.shuffle(&mut v);
            v.sort_unstable();
            assert_eq!(v, (0..len).collect::<Vec<_>>());
        }
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn empty_range_panics() {
        #[allow(clippy::reversed_empty_ranges)]
        SeededRng::new(0).usize_inclusive(3..=2);
    }

    #[test]
    #[should_panic(expected = "outside [0, 1]")]
    fn bad_probability_panics() {
        SeededRng::new(0).bernoulli(1.5);
    }
}
