//! `SafeTensors` on malformed and unusual files: the format's layout rules, header
//! entries, offsets that overflow, and thousands of random and mutated files, on which
//! it never panics, every error names the file, and it accepts exactly the files the
//! `safetensors` crate accepts.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use ponder_core::{SafeTensors, write_safetensors};
use safetensors::tensor::{Dtype, TensorView};

const NAME: &str = "test.safetensors";

fn open(bytes: Vec<u8>) -> Result<SafeTensors, String> {
    SafeTensors::from_bytes(PathBuf::from(NAME), bytes).map_err(|e| e.to_string())
}

/// A file with this header text (padded to 8 bytes as writers do) and data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    out
}

/// The error opening the file, checked to name the file and each of `names`.
fn refused(bytes: Vec<u8>, names: &[&str]) -> String {
    let err = open(bytes).map(|_| ()).unwrap_err();
    assert!(err.contains(NAME), "{err}");
    for name in names {
        assert!(err.contains(&format!("`{name}`")), "{name}: {err}");
    }
    err
}

#[test]
fn the_data_is_covered_without_holes_overlaps_or_trailing_bytes() {
    let ok = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let st = open(raw(ok, &[0; 8])).unwrap();
    assert_eq!(st.names(), ["a", "b"]);
    // a hole between two tensors
    let hole = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let err = refused(raw(hole, &[0; 12]), &["a", "b"]);
    assert!(err.contains("hole of 4 bytes"), "{err}");
    // a hole before the first tensor
    let late = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let err = refused(raw(late, &[0; 8]), &["a"]);
    assert!(err.contains("hole of 4 bytes"), "{err}");
    // overlapping and shared (aliased) byte ranges
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let err = refused(raw(overlap, &[0; 12]), &["a", "b"]);
    assert!(err.contains("overlap"), "{err}");
    let shared = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let err = refused(raw(shared, &[0; 4]), &[]);
    assert!(err.contains("overlap"), "{err}");
    // bytes after the last tensor, or data without tensors
    let err = refused(raw(ok, &[0; 9]), &["b"]);
    assert!(err.contains("1 bytes of data follow"), "{err}");
    let err = refused(raw("{}", &[0; 4]), &[]);
    assert!(err.contains("no tensors"), "{err}");
    // an empty file (no tensors, no data) and zero-sized tensors are fine
    assert!(open(raw("{}", &[])).unwrap().names().is_empty());
    let empty = r#"{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let st = open(raw(empty, &[0; 4])).unwrap();
    assert_eq!(st.read("e", &[0, 3]).unwrap(), Vec::<f32>::new());
}

#[test]
fn header_entries_are_checked_and_name_the_tensor() {
    let entry = |e: &str| raw(&format!(r#"{{"w":{e}}}"#), &[0; 8]);
    for (bad, what) in [
        (r#"{"dtype":"F33","shape":[2],"data_offsets":[0,8]}"#, "F33"),
        (r#"{"shape":[2],"data_offsets":[0,8]}"#, "dtype"),
        (r#"{"dtype":"F32","data_offsets":[0,8]}"#, "shape"),
        (r#"{"dtype":"F32","shape":[2]}"#, "data_offsets"),
        (r#"{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}"#, "-2"),
        (
            r#"{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}"#,
            "2.0",
        ),
        (r#"{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}"#, "3"),
        (r#"{"dtype":7,"shape":[2],"data_offsets":[0,8]}"#, "7"),
        (r#"[1,2]"#, "invalid"),
        (
            r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#,
            "byte range",
        ),
        (
            r#"{"dtype":"F32","shape":[2],"data_offsets":[8,0]}"#,
            "ends before",
        ),
        (
            r#"{"dtype":"F32","shape":[4],"data_offsets":[0,16]}"#,
            "truncated",
        ),
        (r#"{"dtype":"F4","shape":[3],"data_offsets":[0,8]}"#, "bits"),
        (
            r#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}"#,
            "overflow",
        ),
    ] {
        let err = refused(entry(bad), &["w"]);
        assert!(err.contains(what), "{bad}: {err}");
    }
    // `__metadata__` maps strings to strings
    let data = r#""w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    let meta = |m: &str| raw(&format!(r#"{{"__metadata__":{m},{data}}}"#), &[0; 8]);
    assert!(open(meta(r#"{"format":"pt"}"#)).is_ok());
    assert!(open(meta("null")).is_ok());
    let err = refused(meta(r#"{"epoch":3}"#), &["__metadata__"]);
    assert!(err.contains("strings"), "{err}");
    refused(meta("[]"), &["__metadata__"]);
    // whitespace around the header, and unknown fields in an entry, are accepted
    let spaced = r#"  { "w" : {"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1} }  "#;
    assert!(open(raw(spaced, &[0; 8])).is_ok());
    // dtypes this reader does not decode open, and are refused as weights
    for (dtype, bytes) in [
        ("I64", 128),
        ("U8", 16),
        ("BOOL", 16),
        ("F64", 128),
        ("F8_E4M3", 16),
        ("C64", 128),
        ("F4", 8),
    ] {
        let header =
            format!(r#"{{"w":{{"dtype":"{dtype}","shape":[16],"data_offsets":[0,{bytes}]}}}}"#);
        let st = open(raw(&header, &vec![0; bytes])).unwrap();
        assert_eq!(st.dtype("w"), Some(dtype));
        let err = st.read("w", &[16]).unwrap_err().to_string();
        assert!(
            err.contains(NAME) && err.contains("`w`") && err.contains(dtype),
            "{err}"
        );
    }
    // a tensor the header does not list, after a good file
    let st = open(write_safetensors(&[("w", vec![1], vec![1.0])])).unwrap();
    let err = st.read("v", &[1]).unwrap_err().to_string();
    assert!(
        err.contains(NAME) && err.contains("`v` is missing"),
        "{err}"
    );
}

/// Byte ranges that tile up to almost `usize::MAX`: each entry is valid on its own and
/// the crate alone overflows adding the header length to them (a panic in debug builds).
#[test]
fn offsets_near_usize_max_are_errors_not_panics() {
    let size = (1usize << 61) - 1; // the largest U8 tensor whose bit count fits
    let entries: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
                i * size,
                (i + 1) * size
            )
        })
        .collect();
    let bytes = raw(&format!("{{{}}}", entries.join(",")), &[0; 16]);
    let err = refused(bytes, &[]);
    assert!(
        err.contains("byte range") && err.contains("truncated"),
        "{err}"
    );
}

/// SplitMix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A file with every float dtype, an integer buffer, a zero-sized tensor and metadata.
fn mixed_file() -> Vec<u8> {
    let f32s: Vec<u8> = (0..24)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let halves: Vec<u8> = (0..12u16)
        .flat_map(|i| (0x3c00 + i).to_le_bytes())
        .collect();
    let ints: Vec<u8> = (0..4i64).flat_map(|i| i.to_le_bytes()).collect();
    let tensors = [
        (
            "encoder.weight",
            TensorView::new(Dtype::F32, vec![4, 6], &f32s).unwrap(),
        ),
        (
            "encoder.bias",
            TensorView::new(Dtype::F16, vec![12], &halves).unwrap(),
        ),
        (
            "head.weight",
            TensorView::new(Dtype::BF16, vec![3, 4], &halves).unwrap(),
        ),
        (
            "position_ids",
            TensorView::new(Dtype::I64, vec![1, 4], &ints).unwrap(),
        ),
        ("empty", TensorView::new(Dtype::F32, vec![0], &[]).unwrap()),
    ];
    let metadata = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(tensors, Some(metadata)).unwrap()
}

/// One random or mutated file.
fn mutant(round: usize, rng: &mut u64, bases: &[Vec<u8>]) -> Vec<u8> {
    let mut r = || next(rng);
    let base = &bases[(r() % bases.len() as u64) as usize];
    let header_len = u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let mut b = base.clone();
    match round % 6 {
        // random bytes, sometimes with a plausible length prefix
        0 => {
            let len = (r() % 300) as usize;
            b = (0..len).map(|_| r() as u8).collect();
            if len >= 8 && r().is_multiple_of(2) {
                let claimed = r() % (len as u64);
                b[..8].copy_from_slice(&claimed.to_le_bytes());
            }
        }
        // a few bits of the length or the header flipped
        1 => {
            for _ in 0..1 + r() % 4 {
                let i = (r() as usize) % (8 + header_len);
                b[i] ^= 1 << (r() % 8);
            }
        }
        // truncated or extended
        2 => {
            let cut = (r() as usize) % b.len();
            if r().is_multiple_of(2) {
                b.truncate(cut);
            } else {
                let extra: Vec<u8> = (0..cut % 64).map(|_| r() as u8).collect();
                b.extend(extra);
            }
        }
        // bytes overwritten with JSON-ish punctuation, in the header or the data
        3 => {
            for _ in 0..1 + r() % 8 {
                let i = if r().is_multiple_of(2) {
                    8 + (r() as usize) % header_len
                } else {
                    (r() as usize) % b.len()
                };
                b[i] = b"{}[]\":,0123456789-eE. "[(r() % 22) as usize];
            }
        }
        // a number in the header replaced (offsets, shape), then re-framed
        4 => {
            let text = String::from_utf8(base[8..8 + header_len].to_vec()).unwrap();
            let digits: Vec<usize> = text
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            let at = digits[(r() as usize) % digits.len()];
            let end = text[at..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(text.len(), |n| at + n);
            let number = match r() % 5 {
                0 => (r() % 4).to_string(),
                1 => (r() % 300).to_string(),
                2 => u64::MAX.to_string(),
                3 => (u64::MAX - r() % 64).to_string(),
                _ => format!("{}", r() % 100_000),
            };
            let header = format!("{}{number}{}", &text[..at], &text[end..]);
            b = raw(header.trim_end(), &base[8 + header_len..]);
        }
        // a dtype swapped, or a whole entry dropped or duplicated
        _ => {
            let text = String::from_utf8(base[8..8 + header_len].to_vec()).unwrap();
            let dtypes = ["F32", "F16", "BF16", "I64", "U8", "F4", "F64", "X16"];
            let header = match r() % 3 {
                0 => {
                    let from = dtypes[(r() % 3) as usize];
                    let to = dtypes[(r() % dtypes.len() as u64) as usize];
                    text.replacen(&format!("\"{from}\""), &format!("\"{to}\""), 1)
                }
                1 => text.replacen("\"empty\":", "\"empty2\":", 1),
                _ => text.replacen("\"empty\":", "\"encoder.bias\":", 1),
            };
            b = raw(header.trim_end(), &base[8 + header_len..]);
        }
    }
    b
}

#[test]
fn random_and_mutated_files_never_panic_and_match_the_crate() {
    let bases = [
        mixed_file(),
        write_safetensors(&[
            ("a", vec![2, 3], vec![1.0; 6]),
            ("b", vec![5], vec![-2.0; 5]),
        ]),
    ];
    let mut rng = 11u64;
    let (mut opened, mut refused, mut read) = (0, 0, 0);
    for round in 0..4000 {
        let bytes = mutant(round, &mut rng, &bases);
        let crate_accepts =
            catch_unwind(|| safetensors::SafeTensors::deserialize(&bytes).is_ok()).unwrap_or(false);
        let ours = catch_unwind(AssertUnwindSafe(|| {
            let st = open(bytes.clone())?;
            // every tensor read as itself: floats decode, others are named errors
            for name in st.names() {
                let shape = st.shape(&name).unwrap().to_vec();
                let dtype = st.dtype(&name).unwrap().to_string();
                match st.read(&name, &shape) {
                    Ok(values) => {
                        assert!(["F32", "F16", "BF16"].contains(&dtype.as_str()));
                        assert_eq!(values.len(), shape.iter().product::<usize>());
                        read += 1;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(e.contains(NAME) && e.contains(&name) && e.contains(&dtype));
                    }
                }
            }
            Ok::<_, String>(())
        }))
        .unwrap_or_else(|_| {
            panic!("round {round}: SafeTensors panicked or broke an invariant on {bytes:?}")
        });
        match &ours {
            Ok(()) => opened += 1,
            Err(e) => {
                assert!(e.contains(NAME), "round {round}: {e}");
                refused += 1;
            }
        }
        assert_eq!(
            ours.is_ok(),
            crate_accepts,
            "round {round}: ours {ours:?}, the crate {crate_accepts}"
        );
    }
    assert!(
        opened > 400 && refused > 2000 && read > 1000,
        "opened {opened}, refused {refused}, tensors read {read}"
    );
}

#[test]
fn the_writer_makes_files_the_crate_reads() {
    let bytes = write_safetensors(&[("b", vec![2], vec![3.0, 4.0]), ("a", vec![0], vec![])]);
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(header_len.is_multiple_of(8) && bytes[8] == b'{');
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let b = st.tensor("b").unwrap();
    assert_eq!((b.dtype(), b.shape()), (Dtype::F32, &[2][..]));
    assert_eq!(b.data(), [3f32.to_le_bytes(), 4f32.to_le_bytes()].concat());
}

#[test]
#[should_panic(expected = "two tensors are named `w`")]
fn the_writer_refuses_a_name_twice() {
    write_safetensors(&[("w", vec![1], vec![1.0]), ("w", vec![1], vec![2.0])]);
}

#[test]
#[should_panic(expected = "tensor `w` has shape [2, 2] but 3 values")]
fn the_writer_refuses_values_that_do_not_fill_the_shape() {
    write_safetensors(&[("w", vec![2, 2], vec![1.0; 3])]);
}
