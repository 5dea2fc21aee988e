//! Reading weight files in the safetensors format (Hugging Face, state-spaces, …).
//!
//! The format is an 8-byte little-endian header length, a JSON header mapping each
//! tensor name to its dtype, shape and byte range, and the raw little-endian data. The
//! `safetensors` crate parses and validates the file and `half` decodes F16 and BF16;
//! this module adds a strict layer on top: every problem (truncation, byte ranges that do
//! not fit the data or the shape, unknown dtypes, a shape that does not match the model)
//! is an error naming the file and the tensor, no file content makes it panic, and it
//! tracks which tensors were used so a loader can refuse a file with tensors it does not
//! know.
//!
//! What is accepted is exactly what the `safetensors` crate accepts (and so what Hugging
//! Face's own reader accepts); the differences from the hand-written reader this replaced
//! are all refusals the crate adds, which we keep:
//!
//! - the data must be covered by the tensors' byte ranges, in order, without holes,
//!   overlaps (two tensors sharing bytes) or trailing bytes after the last tensor (the
//!   format's rule; such a file is corrupt, concatenated or a polyglot);
//! - `__metadata__`, when present, must map strings to strings (it was ignored before);
//! - the header may be at most 100 MB.
//!
//! The crate also knows more dtypes (F4, F6, F8_E8M0, the FNUZ FP8s, C64): files with
//! them now open, and such tensors are refused as weights like the integer ones. Both
//! accept leading whitespace before the header's `{` and the space padding after it.
//! The crate is only called after our own checks have passed: on a header whose byte
//! ranges end near `usize::MAX` its final size check overflows, which panics in debug
//! builds; ours refuse every range past the end of the data first.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::{SafeTensorError, View};
use serde_json::Value;

use crate::error::{PonderError, Result};

/// A tensor as (name, shape, values): what [`SafeTensors::read_all`] reads and
/// [`write_safetensors`] writes.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads a checkpoint's JSON configuration (`config.json`): an I/O error or a file that
/// is not JSON names the file.
pub fn read_config_json(path: impl AsRef<Path>) -> Result<Value> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| PonderError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| PonderError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("not a JSON config: {e}"),
    })
}

/// The length of the header-length prefix.
const N_LEN: usize = 8;

/// One tensor's entry in the header.
#[derive(Debug, Clone)]
struct Entry {
    info: TensorInfo,
    /// `info.dtype` as the header spells it (`F32`, `I64`, …).
    dtype: String,
}

/// A safetensors file read into memory.
#[derive(Debug)]
pub struct SafeTensors {
    path: PathBuf,
    data: Vec<u8>,
    data_start: usize,
    entries: BTreeMap<String, Entry>,
    used: RefCell<BTreeSet<String>>,
}

impl SafeTensors {
    /// Reads and validates the file's header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let data = std::fs::read(&path).map_err(|source| PonderError::Io {
            action: "reading",
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(path, data)
    }

    /// Parses a file already in memory (`path` is only used in error messages).
    pub fn from_bytes(path: PathBuf, data: Vec<u8>) -> Result<Self> {
        match parse(&data) {
            Ok((data_start, entries)) => Ok(Self {
                path,
                data,
                data_start,
                entries,
                used: RefCell::new(BTreeSet::new()),
            }),
            Err(message) => Err(PonderError::Checkpoint { path, message }),
        }
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// The shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.info.shape.as_slice())
    }

    /// An error about this file (a loader's message about its contents).
    pub fn error(&self, message: String) -> PonderError {
        PonderError::Checkpoint {
            path: self.path.clone(),
            message,
        }
    }

    /// The values of tensor `name` as f32 (row-major), checking its shape against
    /// `expected` and marking it used.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| self.error(format!("tensor `{name}` is missing")))?;
        let decode: fn(&[u8]) -> Vec<f32> = match entry.info.dtype {
            Dtype::F32 => |b| le_values(b, f32::from_le_bytes),
            Dtype::F16 => |b| le_values(b, |x| f16::from_le_bytes(x).to_f32()),
            Dtype::BF16 => |b| le_values(b, |x| bf16::from_le_bytes(x).to_f32()),
            _ => {
                return Err(self.error(format!(
                    "tensor `{name}` has dtype {}; weights must be F32, F16 or BF16",
                    entry.dtype
                )));
            }
        };
        if entry.info.shape != expected {
            return Err(self.error(format!(
                "tensor `{name}` has shape {:?}, the model expects {expected:?}",
                entry.info.shape
            )));
        }
        // Checked when the file was opened; `get` keeps even a broken invariant from
        // panicking.
        let (begin, end) = entry.info.data_offsets;
        let bytes = self
            .data
            .get(self.data_start + begin..self.data_start + end)
            .ok_or_else(|| {
                self.error(format!(
                    "tensor `{name}` has byte range {begin}..{end}, outside the file"
                ))
            })?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(decode(bytes))
    }

    /// Tensor `name` on `device`, with shape `expected`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let values = self.read(name, &expected)?;
        Ok(Tensor::from_data(
            TensorData::new(values, expected.to_vec()),
            device,
        ))
    }

    /// Checks that each named tensor is present with the shape a configuration implies,
    /// before a loader allocates a model of that configuration (a damaged `config.json`
    /// must not make a model huge): errors name the tensor and both shapes.
    pub fn check_shapes(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, shape) in expected {
            match self.shape(name) {
                Some(s) if s == shape.as_slice() => {}
                Some(s) => {
                    return Err(self.error(format!(
                        "tensor `{name}` has shape {s:?}, config.json implies {shape:?}"
                    )));
                }
                None => return Err(self.error(format!("tensor `{name}` is missing"))),
            }
        }
        Ok(())
    }

    /// [`SafeTensors::tensor`] as a module parameter.
    pub fn param<const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<burn::module::Param<Tensor<D>>> {
        Ok(burn::module::Param::from_tensor(
            self.tensor(name, expected, device)?,
        ))
    }

    /// Every tensor as (name, shape, values), in name order: what
    /// [`write_safetensors`] writes back.
    pub fn read_all(&self) -> Result<Vec<NamedTensor>> {
        self.names()
            .into_iter()
            .map(|name| {
                let shape = self.shape(&name).unwrap_or(&[]).to_vec();
                let values = self.read(&name, &shape)?;
                Ok((name, shape, values))
            })
            .collect()
    }

    /// Marks tensor `name` as used without reading it (buffers a model recomputes, such
    /// as BERT's `position_ids`); false when the file has no such tensor.
    pub fn skip(&self, name: &str) -> bool {
        let present = self.entries.contains_key(name);
        if present {
            self.used.borrow_mut().insert(name.to_string());
        }
        present
    }

    /// The dtype of a tensor, if present.
    pub fn dtype(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|e| e.dtype.as_str())
    }

    /// A PyTorch `Linear` stored as `{prefix}.weight` `[d_out, d_in]` (and
    /// `{prefix}.bias` `[d_out]` when `bias`), as burn's `Linear` (weight `[d_in,
    /// d_out]`).
    pub fn linear(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<burn::nn::Linear> {
        let weight = self
            .tensor(&format!("{prefix}.weight"), [d_out, d_in], device)?
            .transpose();
        let bias = if bias {
            Some(burn::module::Param::from_tensor(self.tensor(
                &format!("{prefix}.bias"),
                [d_out],
                device,
            )?))
        } else {
            None
        };
        Ok(burn::nn::Linear {
            weight: burn::module::Param::from_tensor(weight),
            bias,
        })
    }

    /// Tensors never read so far.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.entries
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }

    /// Fails, naming them, if some tensors were never read (a file for another model
    /// or another naming would otherwise load "successfully" with random weights left).
    pub fn ensure_all_used(&self) -> Result<()> {
        let unused = self.unused();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<_> = unused.iter().take(8).map(String::as_str).collect();
        Err(PonderError::Checkpoint {
            path: self.path.clone(),
            message: format!(
                "{} tensor(s) the model does not use: {}{}",
                unused.len(),
                shown.join(", "),
                if unused.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        })
    }
}

/// Where the data starts and every tensor, or what is wrong with the file.
fn parse(data: &[u8]) -> std::result::Result<(usize, BTreeMap<String, Entry>), String> {
    let (data_start, infos) = check_header(data)?;
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(data)
        .map_err(|e| explain(e, &infos, data.len() - data_start))?;
    let entries = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let entry = Entry {
                dtype: info.dtype.to_string(),
                info: info.clone(),
            };
            (name, entry)
        })
        .collect();
    Ok((N_LEN + header_len, entries))
}

/// Our checks, made before the crate's: the framing, then each tensor's entry on its
/// own (dtype, shape, a byte range inside the data that its elements fill exactly), so
/// that an error names the tensor. Returns where the data starts and the entries.
fn check_header(data: &[u8]) -> std::result::Result<(usize, BTreeMap<String, TensorInfo>), String> {
    let Some((prefix, rest)) = data.split_first_chunk::<N_LEN>() else {
        return Err(format!(
            "{} bytes is too short for a safetensors file (8-byte header length missing)",
            data.len()
        ));
    };
    let header_len = u64::from_le_bytes(*prefix);
    let header = usize::try_from(header_len)
        .ok()
        .and_then(|n| rest.get(..n))
        .ok_or_else(|| {
            format!(
                "the header claims {header_len} bytes but the file has {} after its 8-byte length",
                rest.len()
            )
        })?;
    let n_data = rest.len() - header.len();
    let value: Value =
        serde_json::from_slice(header).map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("the header is not a JSON object".into());
    };
    let mut infos = BTreeMap::new();
    for (name, value) in object {
        if name == "__metadata__" {
            serde_json::from_value::<Option<HashMap<String, String>>>(value).map_err(|e| {
                format!("`__metadata__` in the header must map strings to strings: {e}")
            })?;
            continue;
        }
        let info = tensor_info(&name, value)?;
        check_range(&name, &info, n_data)?;
        infos.insert(name, info);
    }
    Ok((N_LEN + header.len(), infos))
}

/// A tensor's header entry, read by the crate's own types.
fn tensor_info(name: &str, value: Value) -> std::result::Result<TensorInfo, String> {
    if let Some(Value::String(dtype)) = value.get("dtype")
        && serde_json::from_value::<Dtype>(Value::String(dtype.clone())).is_err()
    {
        return Err(format!(
            "tensor `{name}` has dtype {dtype}, which is not a safetensors dtype"
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| format!("tensor `{name}` has an invalid header entry: {e}"))
}

/// The byte range lies inside the data and its elements fill it exactly (counted as the
/// crate counts them: elements, then bits, each checked for overflow).
fn check_range(name: &str, info: &TensorInfo, n_data: usize) -> std::result::Result<(), String> {
    let TensorInfo {
        dtype,
        shape,
        data_offsets: (begin, end),
    } = info;
    let what = format!("tensor `{name}` (shape {shape:?}, {dtype}) has byte range {begin}..{end}");
    if begin > end {
        return Err(format!("{what}, which ends before it begins"));
    }
    if *end > n_data {
        return Err(format!(
            "{what}, past the end of the {n_data} bytes of data (a truncated file or a wrong header)"
        ));
    }
    let bits = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()));
    match bits {
        None => Err(format!("{what}, but its size overflows")),
        Some(bits) if bits % 8 != 0 => Err(format!(
            "{what}, but its elements take {bits} bits, not whole bytes"
        )),
        Some(bits) if bits / 8 != end - begin => Err(format!(
            "{what}: {} bytes, but its elements take {}",
            end - begin,
            bits / 8
        )),
        Some(_) => Ok(()),
    }
}

/// What the crate refused, once our checks passed: the data is not covered by the byte
/// ranges in order (a hole, an overlap, bytes after the last tensor), or the header is
/// too large. `infos` are the entries `check_header` read.
fn explain(error: SafeTensorError, infos: &BTreeMap<String, TensorInfo>, n_data: usize) -> String {
    const RULE: &str = "the tensors' byte ranges must cover the data in order, without holes \
                        or overlaps";
    match error {
        SafeTensorError::InvalidOffset(name) => {
            // Walk the ranges as the crate does to say what is wrong next to which tensor.
            let mut sorted: Vec<_> = infos.iter().collect();
            sorted.sort_by_key(|(_, info)| info.data_offsets);
            let mut previous: Option<(&String, usize)> = None;
            for (name, info) in sorted {
                let (begin, end) = info.data_offsets;
                let reached = previous.map_or(0, |(_, end)| end);
                if begin != reached {
                    let gap = if begin > reached {
                        format!("a hole of {} bytes", begin - reached)
                    } else {
                        "the two overlap".to_string()
                    };
                    let before = match previous {
                        Some((other, _)) => {
                            format!("the tensor before it, `{other}`, ends at {reached}")
                        }
                        None => "the data starts at 0".to_string(),
                    };
                    return format!(
                        "tensor `{name}` has byte range {begin}..{end}, but {before}: {gap} ({RULE})"
                    );
                }
                previous = Some((name, end));
            }
            format!("tensor `{name}`: its byte range overlaps another's or leaves a hole ({RULE})")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            match infos.iter().max_by_key(|(_, info)| info.data_offsets.1) {
                Some((name, info)) => {
                    let end = info.data_offsets.1;
                    format!(
                        "{} bytes of data follow the last tensor, `{name}` (its byte range ends \
                         at {end}, the data has {n_data} bytes): a corrupt or concatenated file ({RULE})",
                        n_data.saturating_sub(end)
                    )
                }
                None => format!("the header lists no tensors but {n_data} bytes of data follow it"),
            }
        }
        SafeTensorError::HeaderTooLarge => {
            "the header is larger than the 100 MB that safetensors allows".to_string()
        }
        other => format!("not a valid safetensors file: {other}"),
    }
}

/// Little-endian values of `N` bytes each (`bytes` is a whole number of them).
fn le_values<const N: usize>(bytes: &[u8], value: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes.as_chunks::<N>().0.iter().map(|b| value(*b)).collect()
}

/// One tensor for `safetensors::serialize`; its bytes are made when written.
struct F32View<'a> {
    shape: &'a [usize],
    values: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

/// Writes tensors as a safetensors file (F32, in name order), for tests and for
/// exporting weights.
///
/// # Panics
///
/// When a tensor's values do not match its shape or two tensors share a name (a bug in
/// the caller: the file would not be readable).
pub fn write_safetensors<S: AsRef<str>>(tensors: &[(S, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut names = BTreeSet::new();
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let name = name.as_ref();
            assert!(
                names.insert(name),
                "write_safetensors: two tensors are named `{name}`"
            );
            let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            assert!(
                numel == Some(values.len()),
                "write_safetensors: tensor `{name}` has shape {shape:?} but {} values",
                values.len()
            );
            (name, F32View { shape, values })
        })
        .collect();
    safetensors::serialize(views, None).unwrap_or_else(|e| panic!("write_safetensors: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: Vec<u8>) -> Result<SafeTensors> {
        SafeTensors::from_bytes(PathBuf::from("test.safetensors"), bytes)
    }

    #[test]
    fn round_trip_and_usage_tracking() {
        let bytes = write_safetensors(&[
            ("b", vec![2], vec![3.0, 4.0]),
            ("a", vec![1, 2], vec![1.0, -2.5]),
        ]);
        let st = file(bytes).unwrap();
        assert_eq!(st.names(), vec!["a", "b"]);
        assert_eq!(st.read("a", &[1, 2]).unwrap(), vec![1.0, -2.5]);
        assert_eq!(st.unused(), vec!["b"]);
        let err = st.ensure_all_used().unwrap_err().to_string();
        assert!(err.contains("`b`") || err.contains(" b"), "{err}");
        assert_eq!(st.read("b", &[2]).unwrap(), vec![3.0, 4.0]);
        st.ensure_all_used().unwrap();
    }

    #[test]
    fn wrong_shape_and_missing_tensor_are_named() {
        let st = file(write_safetensors(&[("w", vec![2, 2], vec![0.0; 4])])).unwrap();
        let err = st.read("w", &[4]).unwrap_err().to_string();
        assert!(
            err.contains("`w`") && err.contains("[2, 2]") && err.contains("[4]"),
            "{err}"
        );
        let err = st.read("v", &[4]).unwrap_err().to_string();
        assert!(err.contains("`v` is missing"), "{err}");
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(file(vec![1, 2, 3]).is_err());
        let mut truncated = write_safetensors(&[("w", vec![4], vec![1.0; 4])]);
        truncated.truncate(truncated.len() - 2);
        let err = file(truncated).unwrap_err().to_string();
        assert!(err.contains("`w`") && err.contains("byte range"), "{err}");
        let mut huge = write_safetensors(&[("w", vec![1], vec![1.0])]);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            file(huge)
                .unwrap_err()
                .to_string()
                .contains("header claims")
        );
        let mut not_json = 4u64.to_le_bytes().to_vec();
        not_json.extend_from_slice(b"{{{{");
        assert!(file(not_json).unwrap_err().to_string().contains("JSON"));
    }

    #[test]
    fn integer_buffers_open_but_are_not_weights() {
        let mut bytes = write_safetensors(&[("w", vec![2], vec![1.0, 2.0])]);
        // relabel as one I64 value (8 bytes)
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let text = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
        let relabelled = text.replace("\"F32\"", "\"I64\"").replace("[2]", "[1]");
        assert_eq!(relabelled.len(), text.len());
        bytes[8..8 + header_len].copy_from_slice(relabelled.as_bytes());
        let f = file(bytes).unwrap();
        assert_eq!(f.dtype("w"), Some("I64"));
        let err = f.read("w", &[1]).unwrap_err().to_string();
        assert!(err.contains("`w`") && err.contains("I64"), "{err}");
        assert!(f.ensure_all_used().is_err());
        assert!(f.skip("w") && !f.skip("absent"));
        assert!(f.ensure_all_used().is_ok());
    }

    #[test]
    fn half_precision_decodes() {
        // 1, -2, the smallest subnormal, +inf, NaN
        let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x0001, 0x7c00, 0x7e00]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        // 1, -3.140625, +inf, the smallest subnormal
        let brains: Vec<u8> = [0x3f80u16, 0xc049, 0x7f80, 0x0001]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let view = |dtype, n, data| safetensors::tensor::TensorView::new(dtype, vec![n], data);
        let bytes = safetensors::serialize(
            [
                ("h", view(Dtype::F16, 5, &halves).unwrap()),
                ("b", view(Dtype::BF16, 4, &brains).unwrap()),
            ],
            None,
        )
        .unwrap();
        let st = file(bytes).unwrap();
        let h = st.read("h", &[5]).unwrap();
        assert_eq!(h[..4], [1.0, -2.0, 2f32.powi(-24), f32::INFINITY]);
        assert!(h[4].is_nan());
        assert_eq!(
            st.read("b", &[4]).unwrap(),
            [1.0, -3.140625, f32::INFINITY, f32::from_bits(1 << 16)]
        );
        st.ensure_all_used().unwrap();
    }
}
