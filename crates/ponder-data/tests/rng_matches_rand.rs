//! `SeededRng` reproduces what rand 0.9 gave with `StdRng::seed_from_u64` (the generator
//! of every split and generated data set before `ponder_data::rng` existed), bit for bit:
//! the raw words, `random_range`, `random_bool`, `SliceRandom::shuffle`, and the data
//! functions built on them. `rand` is a dev-dependency for this comparison only.

use std::ops::RangeInclusive;

use ponder_data::rng::SeededRng;
use ponder_data::{ParitySet, parity_set, shuffled_indices, split_indices};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

/// Fixed seeds with few or many set bits, and 200 more spread over u64.
fn seeds() -> Vec<u64> {
    let mut seeds = vec![0, 1, 2, 3, 7, 42, 1234, u64::MAX, u64::MAX - 1, 1 << 63];
    let mut state = 0x5EED_u64;
    for _ in 0..200 {
        // SplitMix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        seeds.push(z ^ (z >> 31));
    }
    seeds
}

#[test]
fn words_match() {
    for seed in seeds() {
        let (mut ours, mut theirs) = (SeededRng::new(seed), StdRng::seed_from_u64(seed));
        // alternate widths so that u64 reads straddle ChaCha's 64-word buffers
        for i in 0..300 {
            if i % 3 == 0 {
                assert_eq!(ours.next_u32(), theirs.next_u32(), "seed {seed}");
            } else {
                assert_eq!(ours.next_u64(), theirs.next_u64(), "seed {seed}");
            }
        }
    }
}

#[test]
fn shuffles_match() {
    for (i, seed) in seeds().into_iter().enumerate() {
        for len in [0usize, 1, 2, 3, 7, 12, 13, 14, 100, 1000, 70_000] {
            if len == 70_000 && i % 10 != 0 {
                continue; // 21 seeds of the long one are enough
            }
            let mut ours: Vec<usize> = (0..len).collect();
            let mut theirs = ours.clone();
            let mut rng = SeededRng::new(seed);
            rng.shuffle(&mut ours);
            let mut std_rng = StdRng::seed_from_u64(seed);
            theirs.shuffle(&mut std_rng);
            assert_eq!(ours, theirs, "seed {seed}, length {len}");
            // the streams are left at the same place
            assert_eq!(
                rng.next_u64(),
                std_rng.next_u64(),
                "seed {seed}, length {len}"
            );
        }
    }
}

#[test]
fn repeated_shuffles_of_one_stream_match() {
    for seed in seeds().into_iter().take(40) {
        let (mut ours, mut theirs) = (SeededRng::new(seed), StdRng::seed_from_u64(seed));
        let mut a: Vec<u32> = (0..37).collect();
        let mut b = a.clone();
        for _ in 0..50 {
            ours.shuffle(&mut a);
            b.shuffle(&mut theirs);
            assert_eq!(a, b, "seed {seed}");
        }
    }
}

fn ranges() -> Vec<RangeInclusive<usize>> {
    let max32 = u32::MAX as usize;
    vec![
        0..=0,
        5..=5,
        0..=1,
        1..=16,
        5..=8,
        3..=1000,
        0..=(3 << 30),         // a span where the extra word is often needed
        1..=(3 << 30) + 12345, // and with an offset
        0..=max32,             // the whole of u32
        1..=max32,
        max32 - 5..=max32,
        0..=max32 + 1, // the smallest range on 64-bit words
        max32 - 5..=max32 + 5,
        7..=1 << 40,
        0..=(3 << 62),  // 64-bit words, extra word often needed
        0..=usize::MAX, // the whole of u64
        usize::MAX - 3..=usize::MAX,
    ]
}

#[test]
fn ranges_match() {
    for seed in seeds() {
        for range in ranges() {
            let (mut ours, mut theirs) = (SeededRng::new(seed), StdRng::seed_from_u64(seed));
            for _ in 0..200 {
                assert_eq!(
                    ours.usize_inclusive(range.clone()),
                    theirs.random_range(range.clone()),
                    "seed {seed}, range {range:?}"
                );
            }
            assert_eq!(ours.next_u32(), theirs.next_u32(), "seed {seed}, {range:?}");
        }
    }
}

#[test]
fn fixed_width_ranges_match() {
    for seed in seeds().into_iter().take(50) {
        let (mut ours, mut theirs) = (SeededRng::new(seed), StdRng::seed_from_u64(seed));
        for (low, high) in [(0u32, 0u32), (0, 6), (10, 3 << 30), (0, u32::MAX), (9, 9)] {
            for _ in 0..100 {
                assert_eq!(
                    ours.u32_inclusive(low, high),
                    theirs.random_range(low..=high)
                );
            }
        }
        for (low, high) in [(0u64, 6u64), (1, 3 << 62), (0, u64::MAX), (5, 1 << 33)] {
            for _ in 0..100 {
                assert_eq!(
                    ours.u64_inclusive(low, high),
                    theirs.random_range(low..=high)
                );
            }
        }
    }
}

#[test]
fn bernoulli_matches() {
    let probabilities = [
        0.0,
        0.5,
        0.1,
        0.3,
        0.75,
        1e-300,
        0.999_999_9,
        1.0 - f64::EPSILON,
        1.0,
    ];
    for seed in seeds() {
        for p in probabilities {
            let (mut ours, mut theirs) = (SeededRng::new(seed), StdRng::seed_from_u64(seed));
            for _ in 0..200 {
                assert_eq!(
                    ours.bernoulli(p),
                    theirs.random_bool(p),
                    "seed {seed}, p {p}"
                );
            }
            assert_eq!(ours.next_u32(), theirs.next_u32(), "seed {seed}, p {p}");
        }
    }
}

/// `shuffled_indices` as it was written with rand 0.9.
fn shuffled_with_rand(n: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut StdRng::seed_from_u64(seed));
    indices
}

#[test]
fn shuffled_indices_and_splits_are_unchanged() {
    for seed in seeds().into_iter().take(60) {
        for n in [0, 1, 2, 7, 10, 1000, 70_000] {
            if n == 70_000 && seed % 4 != 0 {
                continue;
            }
            let before = shuffled_with_rand(n, seed);
            assert_eq!(shuffled_indices(n, seed), before, "seed {seed}, n {n}");
            // split_indices cuts that order: test, then validation, then training
            let s = split_indices(n, 0.1, 0.2, seed).unwrap();
            let again: Vec<usize> = s
                .test
                .iter()
                .chain(&s.valid)
                .chain(&s.train)
                .copied()
                .collect();
            assert_eq!(again, before, "seed {seed}, n {n}");
        }
    }
}

/// `parity_set` as it was written with rand 0.9.
fn parity_with_rand(
    len: usize,
    n_elems: usize,
    nonzero: RangeInclusive<usize>,
    seed: u64,
) -> ParitySet {
    let (lo, hi) = (*nonzero.start(), *nonzero.end());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut set = ParitySet {
        n_elems,
        inputs: Vec::new(),
        targets: Vec::new(),
        n_nonzero: Vec::new(),
    };
    let mut row = vec![0f32; n_elems];
    for _ in 0..len {
        let k = rng.random_range(lo..=hi);
        row.fill(0.0);
        let mut odd = false;
        for v in row.iter_mut().take(k) {
            let plus = rng.random_bool(0.5);
            *v = if plus { 1.0 } else { -1.0 };
            odd ^= plus;
        }
        row.shuffle(&mut rng);
        set.inputs.extend_from_slice(&row);
        set.targets.push(usize::from(odd));
        set.n_nonzero.push(k);
    }
    set
}

#[test]
fn parity_sets_are_unchanged() {
    // the defaults of the parity experiment (n_elems 16 and 64, interpolation and
    // extrapolation ranges) and small odd shapes
    let shapes: [(usize, RangeInclusive<usize>); 7] = [
        (16, 1..=16),
        (16, 1..=8),
        (16, 9..=16),
        (64, 1..=64),
        (64, 33..=64),
        (1, 1..=1),
        (7, 3..=5),
    ];
    for seed in seeds().into_iter().take(40) {
        for (n_elems, range) in shapes.clone() {
            let ours = parity_set(300, n_elems, range.clone(), seed).unwrap();
            let theirs = parity_with_rand(300, n_elems, range.clone(), seed);
            assert_eq!(ours, theirs, "seed {seed}, {n_elems} elements, {range:?}");
        }
    }
}
