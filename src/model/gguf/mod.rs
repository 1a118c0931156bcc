//! GGUF files (llama.cpp's single-file format): metadata, tensors and tokenizer in one file.
//!
//! A GGUF is read into the same three things a Hugging Face directory gives: a typed
//! [`Config`](crate::model::Config) ([`GgufFile::config`], metadata.rs), tensors under their
//! Hugging Face names ([`GgufFile::tensor`]) and a `tokenizers` tokenizer built in memory
//! ([`GgufFile::tokenizer_parts`], tokenizer.rs). What llama.cpp's converter changed on the way
//! in is undone here: the reversed dimension order, the Q/K row permutation of llama-architecture
//! files, and the norm weight offset (Gemma's `+ 1`) folded into the stored weights. Which of
//! those a file has, and its tensors' names, are its family's (families/).
//!
//! The binary layout is read in parse.rs, quantized blocks are converted in dequant.rs.
//! Format reference: llama.cpp's `ggml/include/gguf.h` and gguf-py (`gguf/constants.py`,
//! `gguf/quants.py`, `gguf/tensor_mapping.py`).

mod dequant;
mod metadata;
mod parse;
mod tokenizer;

pub use parse::{Array, Value};
pub use tokenizer::GgufTokenizer;

use super::families::{self, Family, Gguf};
use super::names::{QkvNames, TensorNames, UpNames};
use super::TensorData;
use crate::dtype::DType;
use crate::error::{Error, Result};
use dequant::{dequantize, Decode};
use super::FileBytes;
use parse::TensorInfo;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What reading a tensor under its Hugging Face name must undo.
#[derive(Debug, Clone, Copy)]
enum Fix {
    None,
    /// convert_hf_to_gguf.py permutes the rows of llama's q/k projections (weights and biases) so
    /// that rotary pairs are adjacent; `heads` is the head count it permuted with.
    Unpermute { heads: usize },
    /// convert_hf_to_gguf.py stores norm weights as `offset + weight` (Gemma's `1 + weight`); the
    /// engine, like transformers, adds the offset at run time.
    NormOffset(f32),
}

#[derive(Debug)]
struct HfTensor {
    index: usize,
    fix: Fix,
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: FileBytes,
    version: u32,
    family: &'static Family,
    architecture: &'static Gguf,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    by_hf_name: HashMap<String, HfTensor>,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::bad_input(format!("{}: {message}", path.display()))
}

/// The module (in the family's names) of llama.cpp's block tensor `blk.N.<module>` (gguf-py's
/// `tensor_mapping.py`). Norms after attention and MLP are mapped only in families that have them.
fn hf_module(family: &Family, module: &str) -> Option<&'static str> {
    let names: &TensorNames = &family.tensors;
    let post = |name: Option<&'static str>| name.filter(|_| family.norms.post);
    match (module, names.qkv, names.up) {
        ("attn_norm", ..) => Some(names.attn_norm),
        ("attn_q", QkvNames::Separate { q, .. }, _) => Some(q),
        ("attn_k", QkvNames::Separate { k, .. }, _) => Some(k),
        ("attn_v", QkvNames::Separate { v, .. }, _) => Some(v),
        ("attn_output", ..) => Some(names.o),
        ("attn_q_norm", ..) => names.q_norm,
        ("attn_k_norm", ..) => names.k_norm,
        ("ffn_gate", _, UpNames::Gated { gate, .. }) => Some(gate),
        ("ffn_up", _, UpNames::Gated { up, .. }) => Some(up),
        ("ffn_down", ..) => Some(names.down),
        ("ffn_norm", ..) => Some(names.ffn_norm),
        ("post_attention_norm", ..) => post(names.post_attn_norm),
        ("post_ffw_norm", ..) => post(names.post_ffn_norm),
        _ => None,
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`: header, metadata, tensor directory. Tensor data is read
    /// (and dequantized) only when a tensor is asked for.
    pub fn open(path: &Path) -> Result<GgufFile> {
        GgufFile::from_bytes(path, FileBytes::map(path)?)
    }

    /// [`GgufFile::open`] of bytes already read (a file handed to a browser page); `path` names
    /// it in messages.
    pub fn from_bytes(path: &Path, map: FileBytes) -> Result<GgufFile> {
        let parse::Parsed { version, metadata, tensors, by_name } = parse::parse(&map, path)?;
        let architecture = metadata
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(path, "GGUF file without general.architecture"))?;
        let (family, architecture) = families::by_gguf_architecture(architecture, path)?;
        let path = path.to_path_buf();
        let mut gguf = GgufFile { path, map, version, family, architecture, metadata, tensors, by_name, by_hf_name: HashMap::new() };
        gguf.by_hf_name = gguf.hf_names()?;
        Ok(gguf)
    }

    /// The Hugging Face name of every tensor that has one, with what reading it must undo.
    fn hf_names(&self) -> Result<HashMap<String, HfTensor>> {
        let names = &self.family.tensors;
        let mut map = HashMap::new();
        for (index, tensor) in self.tensors.iter().enumerate() {
            let (hf_name, module) = match tensor.name.as_str() {
                "token_embd.weight" => (format!("{}.weight", names.embedding), "token_embd"),
                "output_norm.weight" => (format!("{}.weight", names.final_norm), "output_norm"),
                "output.weight" => (format!("{}.weight", names.head), "output"),
                name => {
                    let Some((layer, rest)) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else { continue };
                    let Some((module, suffix)) = rest.rsplit_once('.') else { continue };
                    let (Ok(layer), Some(hf_module)) = (layer.parse::<usize>(), hf_module(self.family, module)) else { continue };
                    (format!("{}.{layer}.{hf_module}.{suffix}", names.layers), module)
                }
            };
            let offset = self.family.norm.weight_offset;
            let fix = if offset != 0.0 && module.ends_with("norm") && tensor.name.ends_with(".weight") {
                Fix::NormOffset(offset)
            } else if self.architecture.permuted_qk && module == "attn_q" {
                Fix::Unpermute { heads: self.arch_uniform_usize("attention.head_count")? }
            } else if self.architecture.permuted_qk && module == "attn_k" {
                Fix::Unpermute { heads: self.kv_heads()? }
            } else {
                Fix::None
            };
            map.insert(hf_name, HfTensor { index, fix });
        }
        Ok(map)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A metadata value by its GGUF key (`general.name`, `llama.block_count`, ...).
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Hugging Face names of the tensors this file provides.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_hf_name.keys().map(String::as_str)
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        self.by_hf_name.contains_key(hf_name)
    }

    /// The PyTorch shape of tensor `hf_name`.
    pub fn shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.by_hf_name.get(hf_name).map(|entry| self.tensors[entry.index].shape())
    }

    /// The tensor `hf_name`, checked to have `shape` (PyTorch order), in the Hugging Face layout:
    /// float tensors in their stored width, quantized ones dequantized (see [`GgufFile::stored`]).
    pub fn tensor(&self, hf_name: &str, shape: &[usize]) -> Result<TensorData<'_>> {
        let entry = self.by_hf_name.get(hf_name).ok_or_else(|| {
            bad(&self.path, format!("has no tensor for '{hf_name}', which this model's configuration requires"))
        })?;
        let info = &self.tensors[entry.index];
        if info.shape() != shape {
            return Err(bad(
                &self.path,
                format!(
                    "tensor '{}' ('{hf_name}') has shape {:?} but the model's metadata implies {shape:?}; the file is inconsistent",
                    info.name,
                    info.shape()
                ),
            ));
        }
        let mut data = self.read(info)?;
        data.name = hf_name.to_string();
        match entry.fix {
            Fix::None => {}
            Fix::Unpermute { heads } => {
                let rows = shape.first().copied().unwrap_or(1);
                if heads == 0 || rows == 0 || rows % heads.saturating_mul(2) != 0 {
                    let message = format!("tensor '{}' has {rows} rows, which cannot be split into {heads} heads of rotary pairs", info.name);
                    return Err(bad(&self.path, message));
                }
                let row_bytes = data.bytes.len() / rows;
                data.bytes = Cow::Owned(unpermute_rows(&data.bytes, rows, row_bytes, heads));
            }
            Fix::NormOffset(offset) => {
                let values: Vec<f32> = data.to_f32().iter().map(|w| w - offset).collect();
                data.dtype = DType::F32;
                data.bytes = Cow::Owned(bytemuck::cast_slice(&values).to_vec());
            }
        }
        Ok(data)
    }

    /// A tensor by its GGUF name, as stored: no Hugging Face layout fixes, shape in PyTorch order.
    /// F32, F16 and BF16 tensors are borrowed from the file. Quantized tensors are converted to
    /// [`DType::Int8Groups`], 1.5 bytes per weight on the GPU, whose values are ggml's dequantized
    /// values bit for bit (`to_f32` gives them), so a weight is never rounded.
    pub fn stored(&self, gguf_name: &str) -> Result<TensorData<'_>> {
        let index = *self.by_name.get(gguf_name).ok_or_else(|| bad(&self.path, format!("has no tensor '{gguf_name}'")))?;
        self.read(&self.tensors[index])
    }

    fn read(&self, info: &TensorInfo) -> Result<TensorData<'_>> {
        let bytes = &self.map[info.start..info.end];
        let (dtype, bytes) = match info.kind.decode {
            Decode::Float(dtype) => (dtype, Cow::Borrowed(bytes)),
            Decode::Blocks(decode) => (DType::Int8Groups, Cow::Owned(dequantize(bytes, info.kind, decode))),
            Decode::Unsupported => {
                return Err(bad(
                    &self.path,
                    format!(
                        "tensor '{}' is stored as {}, which perplex does not read (it reads F32, F16, BF16, Q4_0, Q4_1, \
                         Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K); use a file quantized to one of those",
                        info.name, info.kind.name
                    ),
                ))
            }
        };
        Ok(TensorData { name: info.name.clone(), dtype, shape: info.shape(), bytes })
    }

    /// Whether the file has a tensor of GGUF name `gguf_name`.
    pub fn has_tensor(&self, gguf_name: &str) -> bool {
        self.by_name.contains_key(gguf_name)
    }

    /// The family of the file's `general.architecture`.
    pub fn family(&self) -> &'static Family {
        self.family
    }
}

/// HF rows from llama.cpp's permuted q/k rows. convert_hf_to_gguf.py's permute is
/// `w.reshape(heads, 2, half, cols).swapaxes(1, 2)`: within a head, GGUF row `2 * i + j` holds HF
/// row `j * half + i`.
fn unpermute_rows(bytes: &[u8], rows: usize, row_bytes: usize, heads: usize) -> Vec<u8> {
    let per_head = rows / heads;
    let half = per_head / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for row in 0..rows {
        let (head, within) = (row / per_head, row % per_head);
        let (j, i) = (within / half, within % half);
        let from = head * per_head + 2 * i + j;
        out.extend_from_slice(&bytes[from * row_bytes..(from + 1) * row_bytes]);
    }
    out
}
