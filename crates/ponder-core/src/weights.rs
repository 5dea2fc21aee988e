//! Reading weight files in the safetensors format (Hugging Face, state-spaces, …).
//!
//! The format is an 8-byte little-endian header length, a JSON header mapping each
//! tensor name to its dtype, shape and byte range, and the raw little-endian data. This
//! reader checks what a malformed or mismatched file can get wrong (truncation, byte
//! ranges that do not fit the data or the shape, unknown dtypes, a shape that does not
//! match the model) and names
//! the file and the tensor in its error; it also tracks which tensors were used so a
//! loader can refuse a file with tensors it does not know.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{PonderError, Result};

/// One tensor's entry in the header.
#[derive(Debug, Clone)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
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
        let bad = |message: String| PonderError::Checkpoint {
            path: path.clone(),
            message,
        };
        if data.len() < 8 {
            return Err(bad(format!(
                "{} bytes is too short for a safetensors file (8-byte header length missing)",
                data.len()
            )));
        }
        let header_len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
        let data_start = 8usize
            .checked_add(header_len)
            .filter(|&s| s <= data.len())
            .ok_or_else(|| {
                bad(format!(
                    "the header claims {header_len} bytes but the file has {}",
                    data.len()
                ))
            })?;
        let header: serde_json::Value = serde_json::from_slice(&data[8..data_start])
            .map_err(|e| bad(format!("the header is not valid JSON: {e}")))?;
        let object = header
            .as_object()
            .ok_or_else(|| bad("the header is not a JSON object".into()))?;
        let n_data = data.len() - data_start;
        let mut entries = BTreeMap::new();
        for (name, value) in object {
            if name == "__metadata__" {
                continue;
            }
            let field = |key: &str| {
                value
                    .get(key)
                    .ok_or_else(|| bad(format!("tensor `{name}` has no `{key}` in the header")))
            };
            let dtype = field("dtype")?
                .as_str()
                .ok_or_else(|| bad(format!("tensor `{name}`: `dtype` is not a string")))?
                .to_string();
            let numbers = |key: &str| -> Result<Vec<usize>> {
                field(key)?
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|v| v.as_u64().map(|x| x as usize))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        bad(format!(
                            "tensor `{name}`: `{key}` is not a list of non-negative integers"
                        ))
                    })
            };
            let shape = numbers("shape")?;
            let offsets = numbers("data_offsets")?;
            let [begin, end] = offsets[..] else {
                return Err(bad(format!(
                    "tensor `{name}`: `data_offsets` must have 2 entries, has {}",
                    offsets.len()
                )));
            };
            let width = dtype_width(&dtype).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` has dtype {dtype}, which is not a safetensors dtype"
                ))
            })?;
            let bytes = shape.iter().try_fold(width, |acc, &d| acc.checked_mul(d));
            let numel = bytes.map_or(0, |b| b / width);
            if begin > end || end > n_data || bytes != Some(end - begin) {
                return Err(bad(format!(
                    "tensor `{name}` (shape {shape:?}, {dtype}) has byte range {begin}..{end}, \
                     which does not fit {} bytes of data or its {} elements",
                    n_data, numel
                )));
            }
            entries.insert(
                name.clone(),
                Entry {
                    dtype,
                    shape,
                    begin,
                    end,
                },
            );
        }
        Ok(Self {
            path,
            data,
            data_start,
            entries,
            used: RefCell::new(BTreeSet::new()),
        })
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
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The values of tensor `name` as f32 (row-major), checking its shape against
    /// `expected` and marking it used.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| PonderError::Checkpoint {
                path: self.path.clone(),
                message: format!("tensor `{name}` is missing"),
            })?;
        if !matches!(entry.dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(PonderError::Checkpoint {
                path: self.path.clone(),
                message: format!(
                    "tensor `{name}` has dtype {}; weights must be F32, F16 or BF16",
                    entry.dtype
                ),
            });
        }
        if entry.shape != expected {
            return Err(PonderError::Checkpoint {
                path: self.path.clone(),
                message: format!(
                    "tensor `{name}` has shape {:?}, the model expects {expected:?}",
                    entry.shape
                ),
            });
        }
        self.used.borrow_mut().insert(name.to_string());
        let bytes = &self.data[self.data_start + entry.begin..self.data_start + entry.end];
        Ok(match entry.dtype.as_str() {
            "F32" => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            "F16" => bytes
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            "BF16" => bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            other => unreachable!("dtype {other} was refused above"),
        })
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

fn dtype_width(dtype: &str) -> Option<usize> {
    match dtype {
        "F64" | "I64" | "U64" => Some(8),
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
        _ => None,
    }
}

/// IEEE half precision to f32 (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = ((h >> 10) & 0x1f) as i32;
    let mantissa = (h & 0x3ff) as f32;
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Writes tensors as a safetensors file (F32), for tests and for exporting weights.
pub fn write_safetensors<S: AsRef<str>>(tensors: &[(S, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    for (name, shape, values) in &sorted {
        let end = offset + values.len() * 4;
        header.insert(
            name.as_ref().to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    for (_, _, values) in sorted {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
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
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert_eq!(f32::from_bits(0x3f80u32 << 16), 1.0);
    }
}
