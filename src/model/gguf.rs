//! GGUF files (llama.cpp's single-file format): metadata, tensors and tokenizer in one file.
//!
//! A GGUF is read into the same three things a Hugging Face directory gives: an HF-style
//! `config.json` ([`GgufFile::config_json`], parsed by the ordinary family parser), tensors under
//! their Hugging Face names ([`GgufFile::tensor`]) and a `tokenizers` tokenizer built in memory
//! ([`GgufFile::tokenizer_parts`]). What llama.cpp's converter changed on the way in is undone
//! here: the reversed dimension order, the Q/K row permutation of llama-architecture files, and
//! the `+ 1` folded into Gemma norm weights.
//!
//! Every count, length, offset and dimension in the file is checked against the file's size
//! before anything is allocated for it, so a corrupt or hostile file gives an error, never a
//! huge allocation or a panic.
//!
//! Format reference: llama.cpp's `ggml/include/gguf.h` and gguf-py (`gguf/constants.py`,
//! `gguf/quants.py`); dequantization matches gguf-py's `gguf.quants.dequantize` bit for bit.

use super::{TensorData, TextTokenizer};
use crate::error::{Error, Result};
use crate::gpu::{DType, Group, GROUP};
use half::f16;
use memmap2::Mmap;
use serde_json::{json, Map as JsonMap, Value as Json};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal GGUF; real files nest at most once. The limit keeps a hostile file
/// from recursing the reader off the stack.
const MAX_ARRAY_DEPTH: usize = 4;
/// The most layers `block_count` may claim (as config.json's `num_hidden_layers`).
const MAX_LAYERS: usize = 1 << 16;
/// The largest block of any type this reader dequantizes (the k-quants' super-block).
const MAX_BLOCK: usize = 256;

/// A metadata value, with GGUF's value types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array. Arrays are stored typed (not as `Vec<Value>`) so that memory stays within a
/// small multiple of the bytes the file spends on them.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

impl Value {
    /// Any integer that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// A ggml storage type: `block` values are stored in `bytes` bytes.
#[derive(Debug)]
struct GgmlType {
    id: u32,
    name: &'static str,
    block: usize,
    bytes: usize,
    decode: Decode,
}

#[derive(Debug)]
enum Decode {
    /// Handed out as stored.
    Float(DType),
    /// Converted one block at a time into [`Group`]s.
    Blocks(fn(&[u8], &mut [Group])),
    /// Known (so its size is), but not read by perplex.
    Unsupported,
}

/// Every type id of gguf-py's `GGMLQuantizationType`, with `GGML_QUANT_SIZES`: the size of each is
/// needed to check that a file's tensors lie inside it, even for types perplex does not read.
const TYPES: &[GgmlType] = &[
    GgmlType { id: 0, name: "F32", block: 1, bytes: 4, decode: Decode::Float(DType::F32) },
    GgmlType { id: 1, name: "F16", block: 1, bytes: 2, decode: Decode::Float(DType::F16) },
    GgmlType { id: 2, name: "Q4_0", block: 32, bytes: 18, decode: Decode::Blocks(q4_0) },
    GgmlType { id: 3, name: "Q4_1", block: 32, bytes: 20, decode: Decode::Blocks(q4_1) },
    GgmlType { id: 6, name: "Q5_0", block: 32, bytes: 22, decode: Decode::Blocks(q5_0) },
    GgmlType { id: 7, name: "Q5_1", block: 32, bytes: 24, decode: Decode::Blocks(q5_1) },
    GgmlType { id: 8, name: "Q8_0", block: 32, bytes: 34, decode: Decode::Blocks(q8_0) },
    GgmlType { id: 9, name: "Q8_1", block: 32, bytes: 40, decode: Decode::Unsupported },
    GgmlType { id: 10, name: "Q2_K", block: 256, bytes: 84, decode: Decode::Blocks(q2_k) },
    GgmlType { id: 11, name: "Q3_K", block: 256, bytes: 110, decode: Decode::Blocks(q3_k) },
    GgmlType { id: 12, name: "Q4_K", block: 256, bytes: 144, decode: Decode::Blocks(q4_k) },
    GgmlType { id: 13, name: "Q5_K", block: 256, bytes: 176, decode: Decode::Blocks(q5_k) },
    GgmlType { id: 14, name: "Q6_K", block: 256, bytes: 210, decode: Decode::Blocks(q6_k) },
    GgmlType { id: 15, name: "Q8_K", block: 256, bytes: 292, decode: Decode::Unsupported },
    GgmlType { id: 16, name: "IQ2_XXS", block: 256, bytes: 66, decode: Decode::Unsupported },
    GgmlType { id: 17, name: "IQ2_XS", block: 256, bytes: 74, decode: Decode::Unsupported },
    GgmlType { id: 18, name: "IQ3_XXS", block: 256, bytes: 98, decode: Decode::Unsupported },
    GgmlType { id: 19, name: "IQ1_S", block: 256, bytes: 50, decode: Decode::Unsupported },
    GgmlType { id: 20, name: "IQ4_NL", block: 32, bytes: 18, decode: Decode::Unsupported },
    GgmlType { id: 21, name: "IQ3_S", block: 256, bytes: 110, decode: Decode::Unsupported },
    GgmlType { id: 22, name: "IQ2_S", block: 256, bytes: 82, decode: Decode::Unsupported },
    GgmlType { id: 23, name: "IQ4_XS", block: 256, bytes: 136, decode: Decode::Unsupported },
    GgmlType { id: 24, name: "I8", block: 1, bytes: 1, decode: Decode::Unsupported },
    GgmlType { id: 25, name: "I16", block: 1, bytes: 2, decode: Decode::Unsupported },
    GgmlType { id: 26, name: "I32", block: 1, bytes: 4, decode: Decode::Unsupported },
    GgmlType { id: 27, name: "I64", block: 1, bytes: 8, decode: Decode::Unsupported },
    GgmlType { id: 28, name: "F64", block: 1, bytes: 8, decode: Decode::Unsupported },
    GgmlType { id: 29, name: "IQ1_M", block: 256, bytes: 56, decode: Decode::Unsupported },
    GgmlType { id: 30, name: "BF16", block: 1, bytes: 2, decode: Decode::Float(DType::BF16) },
    GgmlType { id: 34, name: "TQ1_0", block: 256, bytes: 54, decode: Decode::Unsupported },
    GgmlType { id: 35, name: "TQ2_0", block: 256, bytes: 66, decode: Decode::Unsupported },
    GgmlType { id: 39, name: "MXFP4", block: 32, bytes: 17, decode: Decode::Unsupported },
    GgmlType { id: 40, name: "NVFP4", block: 64, bytes: 36, decode: Decode::Unsupported },
    GgmlType { id: 41, name: "Q1_0", block: 128, bytes: 18, decode: Decode::Unsupported },
];

/// Where a tensor's bytes are and how they are stored.
#[derive(Debug)]
struct TensorInfo {
    name: String,
    /// ggml order: `dims[0]` is the length of a row (the reverse of PyTorch's shape).
    dims: Vec<usize>,
    kind: &'static GgmlType,
    start: usize,
    end: usize,
}

impl TensorInfo {
    /// The PyTorch / Hugging Face shape.
    fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// The architectures perplex maps onto its model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Qwen2,
    Gemma,
    Gemma2,
    Gemma3,
}

const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, gemma, gemma2, gemma3";

impl Arch {
    fn from_gguf(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma" => Arch::Gemma,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            _ => return None,
        })
    }

    /// transformers' `model_type` (its GGUF loader loads gemma3 files as the text-only model).
    fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3_text",
        }
    }

    fn gemma(self) -> bool {
        matches!(self, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3)
    }

    /// Gemma 2/3 blocks norm before and after both attention and MLP.
    fn sandwich(self) -> bool {
        matches!(self, Arch::Gemma2 | Arch::Gemma3)
    }

    /// The Hugging Face module of a GGUF block tensor `blk.N.<module>` (llama.cpp's tensor names,
    /// `gguf-py/gguf/tensor_mapping.py`).
    fn hf_module(self, module: &str) -> Option<&'static str> {
        Some(match module {
            "attn_norm" => "input_layernorm",
            "attn_q" => "self_attn.q_proj",
            "attn_k" => "self_attn.k_proj",
            "attn_v" => "self_attn.v_proj",
            "attn_output" => "self_attn.o_proj",
            "attn_q_norm" => "self_attn.q_norm",
            "attn_k_norm" => "self_attn.k_norm",
            "ffn_gate" => "mlp.gate_proj",
            "ffn_up" => "mlp.up_proj",
            "ffn_down" => "mlp.down_proj",
            // The MLP's pre-norm is `post_attention_layernorm` in Llama-style blocks, where it sits
            // right after attention; sandwich blocks name the norm after attention that way.
            "ffn_norm" if self.sandwich() => "pre_feedforward_layernorm",
            "ffn_norm" => "post_attention_layernorm",
            "post_attention_norm" if self.sandwich() => "post_attention_layernorm",
            "post_ffw_norm" if self.sandwich() => "post_feedforward_layernorm",
            _ => return None,
        })
    }
}

/// What reading a tensor under its Hugging Face name must undo.
#[derive(Debug, Clone, Copy)]
enum Fix {
    None,
    /// convert_hf_to_gguf.py permutes the rows of llama's q/k projections (weights and biases) so
    /// that rotary pairs are adjacent; `heads` is the head count it permuted with.
    Unpermute { heads: usize },
    /// convert_hf_to_gguf.py stores Gemma norm weights as `1 + weight`; the engine, like
    /// transformers, adds the 1 at run time.
    NormShift,
}

#[derive(Debug)]
struct HfTensor {
    index: usize,
    fix: Fix,
}

/// A tokenizer read from a GGUF, with the special-token facts scoring needs
/// (what `TextTokenizer` is built from).
pub struct GgufTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether llama.cpp puts BOS in front of a text (`tokenizer.ggml.add_bos_token`).
    pub adds_bos: bool,
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    arch: Arch,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    by_hf_name: HashMap<String, HfTensor>,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::bad_input(format!("{}: {message}", path.display()))
}

/// Reads little-endian GGUF fields, every read checked against the end of the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn truncated(&self, what: &str, needed: u64) -> Error {
        bad(
            self.path,
            format!(
                "truncated or corrupt GGUF file: {what} at byte {} needs {needed} bytes but only {} remain \
                 (the file may be incomplete: download it again)",
                self.pos,
                self.remaining()
            ),
        )
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what, n as u64));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each take at least `min_bytes` of the file: one that cannot fit in
    /// what remains is refused before anything is allocated for it.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let count = self.u64(what)?;
        match usize::try_from(count) {
            Ok(n) if n.checked_mul(min_bytes).is_some_and(|bytes| bytes <= self.remaining()) => Ok(n),
            _ => Err(bad(
                self.path,
                format!(
                    "corrupt GGUF file: {what} is {count}, but at byte {} only {} bytes remain, room for at most {} \
                     (the file is truncated or not a GGUF file)",
                    self.pos,
                    self.remaining(),
                    self.remaining() / min_bytes.max(1)
                ),
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| self.truncated(what, len))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad(self.path, format!("corrupt GGUF file: {what} is not UTF-8")))
    }

    fn value(&mut self, type_id: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match type_id {
            0 => Value::U8(u8::from_le_bytes(self.array(key)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(key)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => Value::Bool(self.array::<1>(key)?[0] != 0),
            8 => Value::String(self.string(key)?),
            9 => Value::Array(self.array_value(key, depth)?),
            10 => Value::U64(u64::from_le_bytes(self.array(key)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(bad(self.path, format!("corrupt GGUF file: metadata '{key}' has unknown value type {other}"))),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(bad(self.path, format!("corrupt GGUF file: metadata '{key}' nests arrays more than {MAX_ARRAY_DEPTH} deep")));
        }
        let item_type = self.u32(key)?;
        // The fewest bytes one item can take: a string is at least its 8-byte length, an array its
        // 4-byte type and 8-byte length.
        let min_bytes = match item_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8,
            9 => 12,
            other => return Err(bad(self.path, format!("corrupt GGUF file: metadata '{key}' is an array of unknown type {other}"))),
        };
        let n = self.count(&format!("the length of metadata array '{key}'"), min_bytes)?;
        macro_rules! numbers {
            ($variant:ident, $t:ty) => {{
                let bytes = self.take(n * std::mem::size_of::<$t>(), key)?;
                let items = bytes.chunks_exact(std::mem::size_of::<$t>());
                Array::$variant(items.map(|b| <$t>::from_le_bytes(b.try_into().unwrap_or_default())).collect())
            }};
        }
        Ok(match item_type {
            0 => numbers!(U8, u8),
            1 => numbers!(I8, i8),
            2 => numbers!(U16, u16),
            3 => numbers!(I16, i16),
            4 => numbers!(U32, u32),
            5 => numbers!(I32, i32),
            6 => numbers!(F32, f32),
            10 => numbers!(U64, u64),
            11 => numbers!(I64, i64),
            12 => numbers!(F64, f64),
            7 => Array::Bool(self.take(n, key)?.iter().map(|&b| b != 0).collect()),
            8 => Array::String((0..n).map(|_| self.string(key)).collect::<Result<_>>()?),
            _ => Array::Array((0..n).map(|_| self.array_value(key, depth + 1)).collect::<Result<_>>()?),
        })
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`: header, metadata, tensor directory. Tensor data is read
    /// (and dequantized) only when a tensor is asked for.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only; a file modified while we read it is the user's problem and
        // at worst gives wrong numbers for this run, never memory unsafety in the safe code we call.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(path, format!("cannot memory-map: {e}")))?;
        let mut cursor = Cursor { bytes: &map, pos: 0, path };

        if map.len() < 4 || &map[..4] != MAGIC {
            return Err(bad(path, "not a GGUF file (it does not start with the bytes \"GGUF\")"));
        }
        cursor.pos = 4;
        let version = cursor.u32("the GGUF version")?;
        if version & 0xFFFF == 0 && version != 0 {
            return Err(bad(path, "is a big-endian GGUF file; perplex reads little-endian GGUF (what llama.cpp writes by default)"));
        }
        if version != 2 && version != 3 {
            return Err(bad(
                path,
                format!("GGUF version {version} is not supported (perplex reads versions 2 and 3; re-convert the model with a current llama.cpp)"),
            ));
        }
        // Each tensor entry takes at least 24 bytes (empty name, no dimensions), each key/value 13.
        let tensor_count = cursor.count("the tensor count", 24)?;
        let kv_count = cursor.count("the metadata count", 13)?;

        let mut metadata = HashMap::new();
        for _ in 0..kv_count {
            let key = cursor.string("a metadata key")?;
            let type_id = cursor.u32(&key)?;
            let value = cursor.value(type_id, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(bad(path, format!("corrupt GGUF file: metadata key '{key}' appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
            Some(other) => return Err(bad(path, format!("corrupt GGUF file: general.alignment must be a power of two (u32), found {other:?}"))),
        };

        let mut infos = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = cursor.string("a tensor name")?;
            let n_dims = cursor.u32(&name)? as usize;
            if n_dims > MAX_DIMS {
                return Err(bad(path, format!("corrupt GGUF file: tensor '{name}' has {n_dims} dimensions (ggml allows at most {MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let dim = cursor.u64(&name)?;
                dims.push(usize::try_from(dim).map_err(|_| bad(path, format!("corrupt GGUF file: tensor '{name}' has dimension {dim}")))?);
            }
            let type_id = cursor.u32(&name)?;
            let offset = cursor.u64(&name)?;
            infos.push((name, dims, type_id, offset));
        }
        let data_start = cursor.pos.checked_next_multiple_of(alignment).unwrap_or(usize::MAX);

        let mut tensors = Vec::with_capacity(infos.len());
        let mut by_name = HashMap::with_capacity(infos.len());
        for (name, dims, type_id, offset) in infos {
            let tensor = locate_tensor(path, name, dims, type_id, offset, alignment, data_start, map.len())?;
            if by_name.insert(tensor.name.clone(), tensors.len()).is_some() {
                return Err(bad(path, format!("corrupt GGUF file: tensor '{}' appears twice", tensor.name)));
            }
            tensors.push(tensor);
        }

        let arch_name = metadata
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(path, "GGUF file without general.architecture"))?;
        let arch = Arch::from_gguf(arch_name).ok_or_else(|| {
            bad(path, format!("unknown architecture '{arch_name}': perplex reads GGUF files of the architectures {SUPPORTED_ARCHITECTURES}"))
        })?;
        let mut gguf = GgufFile { path: path.to_path_buf(), map, version, arch, metadata, tensors, by_name, by_hf_name: HashMap::new() };
        gguf.by_hf_name = gguf.hf_names()?;
        Ok(gguf)
    }

    /// The Hugging Face name of every tensor that has one, with what reading it must undo.
    fn hf_names(&self) -> Result<HashMap<String, HfTensor>> {
        let mut map = HashMap::new();
        for (index, tensor) in self.tensors.iter().enumerate() {
            let (hf_name, module) = match tensor.name.as_str() {
                "token_embd.weight" => ("model.embed_tokens.weight".to_string(), "token_embd"),
                "output_norm.weight" => ("model.norm.weight".to_string(), "output_norm"),
                "output.weight" => ("lm_head.weight".to_string(), "output"),
                name => {
                    let Some((layer, rest)) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else { continue };
                    let Some((module, suffix)) = rest.rsplit_once('.') else { continue };
                    let (Ok(layer), Some(hf_module)) = (layer.parse::<usize>(), self.arch.hf_module(module)) else { continue };
                    (format!("model.layers.{layer}.{hf_module}.{suffix}"), module)
                }
            };
            let fix = if self.arch.gemma() && module.ends_with("norm") && tensor.name.ends_with(".weight") {
                Fix::NormShift
            } else if self.arch == Arch::Llama && module == "attn_q" {
                Fix::Unpermute { heads: self.arch_uniform_usize("attention.head_count")? }
            } else if self.arch == Arch::Llama && module == "attn_k" {
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
            Fix::NormShift => {
                let values: Vec<f32> = data.to_f32().iter().map(|w| w - 1.0).collect();
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

    // ---- metadata helpers -------------------------------------------------------------------

    fn missing(&self, key: &str) -> Error {
        bad(&self.path, format!("GGUF metadata has no '{key}', which a {} model needs", self.arch.model_type()))
    }

    fn wrong_type(&self, key: &str, expected: &str) -> Error {
        bad(&self.path, format!("GGUF metadata '{key}' should be {expected}, found {:?}", self.metadata.get(key)))
    }

    /// `<architecture>.<key>`, e.g. `llama.block_count`.
    fn arch_key(&self, key: &str) -> String {
        let arch = self.metadata.get("general.architecture").and_then(Value::as_str).unwrap_or_default();
        format!("{arch}.{key}")
    }

    /// Key/value heads; llama.cpp's default is one per query head.
    fn kv_heads(&self) -> Result<usize> {
        match self.metadata.get(&self.arch_key("attention.head_count_kv")) {
            Some(_) => self.arch_uniform_usize("attention.head_count_kv"),
            None => self.arch_uniform_usize("attention.head_count"),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().and_then(|v| usize::try_from(v).ok()).map(Some).ok_or_else(|| self.wrong_type(key, "a non-negative integer")),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong_type(key, "a number")),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong_type(key, "a string")),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.wrong_type(key, "true or false")),
        }
    }

    fn arch_usize(&self, key: &str) -> Result<usize> {
        let key = self.arch_key(key);
        self.opt_usize(&key)?.ok_or_else(|| self.missing(&key))
    }

    /// A per-model count that llama.cpp also allows per layer (head counts): an array is accepted
    /// when all layers agree, which is all the engine can represent.
    fn arch_uniform_usize(&self, key: &str) -> Result<usize> {
        let full = self.arch_key(key);
        let Some(Value::Array(array)) = self.metadata.get(&full) else { return self.arch_usize(key) };
        let values: Vec<u64> = match array {
            Array::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I32(v) => v.iter().filter_map(|&x| u64::try_from(x).ok()).collect(),
            Array::U64(v) => v.clone(),
            _ => return Err(self.wrong_type(&full, "a count or an array of counts")),
        };
        match values.split_first() {
            Some((&first, rest)) if rest.iter().all(|&v| v == first) => {
                usize::try_from(first).map_err(|_| self.wrong_type(&full, "a count"))
            }
            _ => Err(bad(&self.path, format!("'{full}' differs between layers ({values:?}); perplex needs the same value in every layer"))),
        }
    }

    fn opt_u32_id(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        match self.opt_usize(key)? {
            None => Ok(None),
            Some(id) if id < vocab => Ok(Some(id as u32)),
            Some(id) => Err(bad(&self.path, format!("'{key}' is {id}, outside the vocabulary of {vocab} tokens"))),
        }
    }

    fn strings(&self, key: &str) -> Result<&[String]> {
        match self.metadata.get(key) {
            Some(Value::Array(Array::String(v))) => Ok(v),
            Some(_) => Err(self.wrong_type(key, "an array of strings")),
            None => Err(bad(&self.path, format!("GGUF metadata has no '{key}'; the file carries no tokenizer"))),
        }
    }

    // ---- config.json --------------------------------------------------------------------------

    /// An HF-style `config.json` for this file, built from `<arch>.*` metadata the way
    /// transformers' GGUF loader builds it, with llama.cpp's defaults and rules where transformers
    /// leaves a field to the model class (Gemma's attention scale and layer pattern).
    pub fn config_json(&self) -> Result<Json> {
        let arch = self.arch;
        if self.by_name.contains_key("rope_freqs.weight") {
            return Err(bad(
                &self.path,
                "carries rope_freqs.weight (per-frequency RoPE factors, as llama.cpp stores Llama 3.1 rope scaling); \
                 perplex cannot reproduce those positions yet",
            ));
        }
        let embedding = self
            .by_name
            .get("token_embd.weight")
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| bad(&self.path, "has no token_embd.weight tensor"))?;
        let vocab_size = embedding.dims.get(1).copied().unwrap_or(1);
        let hidden = self.arch_usize("embedding_length")?;
        let layers = self.arch_usize("block_count")?;
        // Per-layer tables are built from this count before any tensor is read; the family
        // parser's limit applies here already.
        if layers > MAX_LAYERS {
            let key = self.arch_key("block_count");
            return Err(bad(&self.path, format!("'{key}' is {layers}, more layers than any model has (perplex reads at most {MAX_LAYERS}; the file is corrupt)")));
        }
        let heads = self.arch_uniform_usize("attention.head_count")?;
        let kv_heads = self.kv_heads()?;
        let key_length = self.opt_usize(&self.arch_key("attention.key_length"))?;
        if let (Some(k), Some(v)) = (key_length, self.opt_usize(&self.arch_key("attention.value_length"))?) {
            if k != v {
                return Err(bad(&self.path, format!("keys of {k} and values of {v} dimensions per head; perplex needs them equal")));
            }
        }
        // transformers maps llama's rope.dimension_count to head_dim (equal in Llama models).
        let head_dim = match (key_length, arch) {
            (Some(k), _) => Some(k),
            (None, Arch::Llama) => self.opt_usize(&self.arch_key("rope.dimension_count"))?,
            _ => None,
        };
        let eps_key = self.arch_key("attention.layer_norm_rms_epsilon");
        let eps = self.opt_f64(&eps_key)?.ok_or_else(|| self.missing(&eps_key))?;

        let mut config = JsonMap::new();
        let mut set = |key: &str, value: Json| {
            config.insert(key.to_string(), value);
        };
        set("model_type", json!(arch.model_type()));
        set("hidden_size", json!(hidden));
        set("intermediate_size", json!(self.arch_usize("feed_forward_length")?));
        set("num_hidden_layers", json!(layers));
        set("num_attention_heads", json!(heads));
        set("num_key_value_heads", json!(kv_heads));
        if let Some(head_dim) = head_dim {
            set("head_dim", json!(head_dim));
        }
        set("rms_norm_eps", json!(eps));
        set("rope_theta", json!(self.opt_f64(&self.arch_key("rope.freq_base"))?.unwrap_or(10000.0)));
        set("max_position_embeddings", json!(self.arch_usize("context_length")?));
        set("vocab_size", json!(vocab_size));
        set("tie_word_embeddings", json!(!self.by_name.contains_key("output.weight")));
        let vocab = self.strings("tokenizer.ggml.tokens").map_or(vocab_size, <[String]>::len);
        for (hf, gguf) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")] {
            if let Some(id) = self.opt_u32_id(gguf, vocab)? {
                set(hf, json!(id));
            }
        }
        if let Some(scaling) = self.rope_scaling()? {
            set("rope_scaling", scaling);
        }
        match arch {
            Arch::Llama | Arch::Qwen2 => {
                set("hidden_act", json!("silu"));
                if arch == Arch::Llama {
                    set("attention_bias", json!(self.by_name.contains_key("blk.0.attn_q.bias")));
                    set("mlp_bias", json!(self.by_name.contains_key("blk.0.ffn_up.bias")));
                }
            }
            Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 => {
                set("hidden_activation", json!("gelu_pytorch_tanh"));
            }
        }
        if arch.sandwich() {
            // llama.cpp (src/models/gemma2.cpp, gemma3.cpp): queries are scaled by
            // 1/sqrt(hidden / heads) in the 27B models (46 and 62 layers), 1/sqrt(head_dim) in the
            // others, which is HF's query_pre_attn_scalar of the released configs.
            let big = (arch == Arch::Gemma2 && layers == 46) || (arch == Arch::Gemma3 && layers == 62);
            let per_head = hidden.checked_div(heads).ok_or_else(|| bad(&self.path, format!("'{}' is 0: a model needs at least one attention head", self.arch_key("attention.head_count"))))?;
            let scalar = if big { per_head } else { head_dim.unwrap_or(per_head) };
            set("query_pre_attn_scalar", json!(scalar));
            if let Some(cap) = self.opt_f64(&self.arch_key("final_logit_softcapping"))? {
                set("final_logit_softcapping", json!(cap));
            }
        }
        match arch {
            Arch::Gemma2 => {
                // llama.cpp's Gemma 2 defaults: a 4096-token window on even layers, soft-caps 50 and 30.
                let window = self.opt_usize(&self.arch_key("attention.sliding_window"))?.unwrap_or(4096);
                set("sliding_window", json!(window));
                let attn_cap = self.opt_f64(&self.arch_key("attn_logit_softcapping"))?.unwrap_or(50.0);
                set("attn_logit_softcapping", json!(attn_cap));
                if !config.contains_key("final_logit_softcapping") {
                    config.insert("final_logit_softcapping".into(), json!(30.0));
                }
            }
            Arch::Gemma3 => {
                let window = self.opt_usize(&self.arch_key("attention.sliding_window"))?.filter(|&w| w > 0);
                let local = self.sliding_layers(layers, window.is_some())?;
                if let Some(window) = window {
                    set("sliding_window", json!(window));
                }
                let types: Vec<&str> = local.iter().map(|&l| if l { "sliding_attention" } else { "full_attention" }).collect();
                set("layer_types", json!(types));
                set("rope_local_base_freq", json!(self.opt_f64(&self.arch_key("rope.freq_base_swa"))?.unwrap_or(10000.0)));
            }
            _ => {}
        }
        Ok(Json::Object(config))
    }

    /// Which Gemma 3 layers attend locally, as llama.cpp decides (`load_swa_pattern`): a per-layer
    /// array in `attention.sliding_window_pattern`, or a period n (default 6) where every n-th
    /// layer is global.
    fn sliding_layers(&self, layers: usize, sliding: bool) -> Result<Vec<bool>> {
        if !sliding {
            return Ok(vec![false; layers]);
        }
        let key = self.arch_key("attention.sliding_window_pattern");
        match self.metadata.get(&key) {
            Some(Value::Array(Array::Bool(flags))) if flags.len() == layers => Ok(flags.clone()),
            Some(Value::Array(_)) => Err(self.wrong_type(&key, &format!("a period or {layers} per-layer flags"))),
            _ => {
                let period = self.opt_usize(&key)?.unwrap_or(6);
                Ok((0..layers).map(|i| period == 0 || i % period < period - 1).collect())
            }
        }
    }

    /// HF `rope_scaling` from llama.cpp's `rope.scaling.*` keys (type "linear" when unstated,
    /// factor 0 meaning none, the older `rope.scale_linear` key as a fallback).
    fn rope_scaling(&self) -> Result<Option<Json>> {
        let kind = self.opt_str(&self.arch_key("rope.scaling.type"))?.unwrap_or("linear");
        let factor = match self.opt_f64(&self.arch_key("rope.scaling.factor"))? {
            Some(f) => Some(f),
            None => self.opt_f64(&self.arch_key("rope.scale_linear"))?,
        }
        .filter(|&f| f != 0.0);
        Ok(match (kind, factor) {
            ("none", _) | ("linear", None) => None,
            ("linear", Some(factor)) => Some(json!({"rope_type": "linear", "factor": factor})),
            // Passed on so that the family parser names what it does not implement.
            (other, factor) => {
                let mut scaling = json!({"rope_type": other, "factor": factor.unwrap_or(1.0)});
                if let Some(original) = self.opt_usize(&self.arch_key("rope.scaling.original_context_length"))? {
                    scaling["original_max_position_embeddings"] = json!(original);
                }
                Some(scaling)
            }
        })
    }

    // ---- tokenizer ----------------------------------------------------------------------------

    /// The tokenizer stored in the file, ready for scoring (see [`GgufFile::tokenizer_parts`]).
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        let parts = self.tokenizer_parts()?;
        Ok(TextTokenizer::from_parts(parts.tokenizer, parts.bos, parts.eos, parts.adds_bos))
    }

    /// The tokenizer stored in the file, as a `tokenizers::Tokenizer` that tokenizes as llama.cpp
    /// does: "gpt2" vocabularies are byte-level BPE from the stored merges with the pre-tokenizer
    /// that `tokenizer.ggml.pre` names; "llama" vocabularies are SentencePiece BPE, rebuilt as a
    /// BPE with byte fallback whose merges come from the token scores (as transformers converts
    /// SentencePiece models). Control tokens become special added tokens and user-defined tokens
    /// plain added tokens, both matched whole in the text.
    pub fn tokenizer_parts(&self) -> Result<GgufTokenizer> {
        use tokenizers::models::bpe::{Vocab, BPE};
        let model = self
            .opt_str("tokenizer.ggml.model")?
            .ok_or_else(|| bad(&self.path, "GGUF metadata has no tokenizer.ggml.model; the file carries no tokenizer"))?;
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = self.token_types(n)?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(id, token)| (token.clone(), id as u32)).collect();
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| bad(&self.path, format!("cannot build its tokenizer: {e}"));

        let (mut tokenizer, default_add_bos) = match model {
            "gpt2" => {
                let merges = self
                    .strings("tokenizer.ggml.merges")?
                    .iter()
                    .map(|m| {
                        // llama.cpp splits at the first space after the first character.
                        let cut = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
                        cut.map(|i| (m[..i].to_string(), m[i + 1..].to_string()))
                            .ok_or_else(|| bad(&self.path, format!("tokenizer merge '{m}' is not two tokens separated by a space")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(failed)?;
                let mut tokenizer = tokenizers::Tokenizer::new(bpe);
                let pre = self.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
                tokenizer.with_pre_tokenizer(Some(byte_level_pre_tokenizer(pre).ok_or_else(|| {
                    let known = [GPT2_NAMES, DIGITS_NAMES, LLAMA3_NAMES, QWEN2_NAMES].concat().join(", ");
                    bad(&self.path, format!("tokenizer.ggml.pre '{pre}' is not a pre-tokenizer perplex knows (known: {known})"))
                })?));
                tokenizer.with_decoder(Some(tokenizers::pre_tokenizers::byte_level::ByteLevel::default()));
                (tokenizer, false)
            }
            "llama" => {
                let scores = match self.metadata.get("tokenizer.ggml.scores") {
                    Some(Value::Array(Array::F32(s))) if s.len() >= n => s.as_slice(),
                    _ => return Err(self.wrong_type("tokenizer.ggml.scores", &format!("{n} token scores (f32)"))),
                };
                let merges = sentencepiece_merges(tokens, &vocab, scores);
                let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
                if let Some(unk) = self.opt_u32_id("tokenizer.ggml.unknown_token_id", n)? {
                    builder = builder.unk_token(tokens[unk as usize].clone());
                }
                let mut tokenizer = tokenizers::Tokenizer::new(builder.build().map_err(failed)?);
                // llama.cpp's default for SentencePiece vocabularies.
                let add_space_prefix = self.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                tokenizer.with_normalizer(Some(sentencepiece_normalizer(add_space_prefix)?));
                tokenizer.with_decoder(Some(sentencepiece_decoder(add_space_prefix)));
                (tokenizer, true)
            }
            other => {
                let message = format!("tokenizer model '{other}' is not supported (perplex reads \"gpt2\" and \"llama\" GGUF tokenizers)");
                return Err(bad(&self.path, message));
            }
        };

        let added = |wanted: i32, special: bool| -> Vec<tokenizers::AddedToken> {
            types
                .iter()
                .zip(tokens)
                .filter(|&(&t, _)| t == wanted)
                .map(|(_, token)| tokenizers::AddedToken::from(token.clone(), special).normalized(false))
                .collect()
        };
        tokenizer.add_special_tokens(&added(TOKEN_CONTROL, true));
        tokenizer.add_tokens(&added(TOKEN_USER_DEFINED, false));

        let bos = self.opt_u32_id("tokenizer.ggml.bos_token_id", n)?;
        let eos = self.opt_u32_id("tokenizer.ggml.eos_token_id", n)?;
        let adds_bos = self.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos) && bos.is_some();
        Ok(GgufTokenizer { tokenizer, bos, eos, adds_bos })
    }

    /// llama.cpp's token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte);
    /// all normal when the file has none.
    fn token_types(&self, n: usize) -> Result<Vec<i32>> {
        match self.metadata.get("tokenizer.ggml.token_type") {
            None => Ok(vec![1; n]),
            Some(Value::Array(Array::I32(types))) if types.len() >= n => Ok(types[..n].to_vec()),
            Some(_) => Err(self.wrong_type("tokenizer.ggml.token_type", &format!("{n} token types (i32)"))),
        }
    }
}

const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// Checks a tensor's directory entry against the file and finds its bytes.
#[allow(clippy::too_many_arguments)]
fn locate_tensor(
    path: &Path,
    name: String,
    dims: Vec<usize>,
    type_id: u32,
    offset: u64,
    alignment: usize,
    data_start: usize,
    file_len: usize,
) -> Result<TensorInfo> {
    let kind = TYPES
        .iter()
        .find(|t| t.id == type_id)
        .ok_or_else(|| bad(path, format!("tensor '{name}' has unknown quantization type id {type_id}; the file is corrupt or newer than perplex")))?;
    let corrupt = |what: String| bad(path, format!("corrupt GGUF file: tensor '{name}' {what}"));
    let elements = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| corrupt(format!("has dimensions {dims:?}, too many elements")))?;
    let row = dims.first().copied().unwrap_or(1);
    if row % kind.block != 0 {
        return Err(corrupt(format!("has rows of {row} values, not a multiple of the {} block size {}", kind.name, kind.block)));
    }
    let n_bytes = (elements / kind.block).checked_mul(kind.bytes).ok_or_else(|| corrupt(format!("has dimensions {dims:?}, too many bytes")))?;
    let offset = usize::try_from(offset)
        .ok()
        .filter(|o| o % alignment == 0)
        .ok_or_else(|| corrupt(format!("has data offset {offset}, not a multiple of the alignment {alignment}")))?;
    let start = data_start.checked_add(offset);
    let end = start.and_then(|s| s.checked_add(n_bytes));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(TensorInfo { name, dims, kind, start, end }),
        _ => Err(corrupt(format!(
            "has {n_bytes} bytes at offset {offset} past the data section start {data_start}, beyond the end of the {file_len}-byte file \
             (the file is truncated: download it again)"
        ))),
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

/// Converts whole blocks into the GPU's quantized form, [`Group`]s of 16 (file order).
fn dequantize(bytes: &[u8], kind: &GgmlType, decode: fn(&[u8], &mut [Group])) -> Vec<u8> {
    let groups_per_block = kind.block / GROUP;
    let mut out = Vec::with_capacity(bytes.len() / kind.bytes * groups_per_block * Group::BYTES);
    let mut buffer = [Group { scale: 0.0, offset: NO_OFFSET, q: [0; GROUP] }; MAX_BLOCK / GROUP];
    for block in bytes.chunks_exact(kind.bytes) {
        let groups = &mut buffer[..groups_per_block];
        decode(block, groups);
        groups.iter().for_each(|group| group.write(&mut out));
    }
    out
}

// ---- ggml block formats ---------------------------------------------------------------------
// Each decoder turns one block into groups of 16 (scale, offset, integers) whose values
// `scale * q + offset` are gguf-py's dequantized values bit for bit: scales are f16, a group scale
// `d * sc` is formed first as gguf-py does, and ggml's `- m` becomes an offset of `-m`.

/// The offset of kinds without a minimum: adding -0.0 changes no value, not even -0.0.
const NO_OFFSET: f32 = -0.0;

fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Fills a block's groups: group g gets `scale_offset(g)`, value v of the block the integer `q(v)`.
fn fill(out: &mut [Group], scale_offset: impl Fn(usize) -> (f32, f32), q: impl Fn(usize) -> i32) {
    for (g, group) in out.iter_mut().enumerate() {
        let (scale, offset) = scale_offset(g);
        *group = Group { scale, offset, q: std::array::from_fn(|j| q(g * GROUP + j) as i8) };
    }
}

/// Value v of 32 stored as 16 bytes of 4-bit halves: low nibbles first, then high.
fn nibble(qs: &[u8], v: usize) -> u8 {
    if v < 16 { qs[v] & 0x0F } else { qs[v - 16] >> 4 }
}

/// The 5-bit value v of Q5_0/Q5_1: low nibbles in `qs`, fifth bits in the 32-bit word `qh`.
fn five_bit(qh: &[u8], qs: &[u8], v: usize) -> u8 {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibble(qs, v) | ((((high >> v) & 1) as u8) << 4)
}

/// 32 values: f16 scale, 16 bytes of 4-bit values offset by 8.
fn q4_0(block: &[u8], out: &mut [Group]) {
    let d = half_at(block, 0);
    fill(out, |_| (d, NO_OFFSET), |v| nibble(&block[2..18], v) as i32 - 8);
}

/// 32 values: f16 scale and minimum, 16 bytes of 4-bit values.
fn q4_1(block: &[u8], out: &mut [Group]) {
    let (d, m) = (half_at(block, 0), half_at(block, 2));
    fill(out, |_| (d, m), |v| nibble(&block[4..20], v) as i32);
}

/// 32 values: f16 scale, 4 bytes of fifth bits, 16 bytes of low nibbles; offset by 16.
fn q5_0(block: &[u8], out: &mut [Group]) {
    let d = half_at(block, 0);
    fill(out, |_| (d, NO_OFFSET), |v| five_bit(&block[2..6], &block[6..22], v) as i32 - 16);
}

/// 32 values: f16 scale and minimum, 4 bytes of fifth bits, 16 bytes of low nibbles.
fn q5_1(block: &[u8], out: &mut [Group]) {
    let (d, m) = (half_at(block, 0), half_at(block, 2));
    fill(out, |_| (d, m), |v| five_bit(&block[4..8], &block[8..24], v) as i32);
}

/// 32 values: f16 scale, 32 signed bytes.
fn q8_0(block: &[u8], out: &mut [Group]) {
    let d = half_at(block, 0);
    fill(out, |_| (d, NO_OFFSET), |v| block[2 + v] as i8 as i32);
}

/// Value v of a K-quant's 2-bit array (Q2_K, Q3_K): 128 values per 32 bytes, four to a byte.
fn two_bit(qs: &[u8], v: usize) -> u8 {
    let (half, shift, k) = (v / 128, (v % 128) / 32, v % 32);
    (qs[half * 32 + k] >> (2 * shift)) & 3
}

/// 256 values in 16 groups of 16: a byte per group (low nibble scale, high nibble minimum, both
/// times a f16 super-scale), 2-bit values four to a byte.
fn q2_k(block: &[u8], out: &mut [Group]) {
    let (scales, qs) = (&block[0..16], &block[16..80]);
    let (d, dmin) = (half_at(block, 80), half_at(block, 82));
    fill(out, |g| (d * (scales[g] & 0x0F) as f32, -(dmin * (scales[g] >> 4) as f32)), |v| two_bit(qs, v) as i32);
}

/// 256 values in 16 groups of 16: 6-bit signed group scales packed in 12 bytes, 2 low bits per
/// value four to a byte plus a high-bit mask (a clear bit subtracts 4).
fn q3_k(block: &[u8], out: &mut [Group]) {
    let (hmask, qs, packed) = (&block[0..32], &block[32..96], &block[96..108]);
    let d = half_at(block, 108);
    let scale = |g: usize| -> f32 {
        let low = if g < 8 { packed[g] & 0x0F } else { packed[g - 8] >> 4 };
        let high = (packed[8 + g % 4] >> (2 * (g / 4))) & 3;
        ((low | (high << 4)) as i8 - 32) as f32
    };
    let q = |v: usize| {
        let high_clear = ((hmask[v % 32] >> (v / 32)) & 1) ^ 1;
        two_bit(qs, v) as i32 - ((high_clear as i32) << 2)
    };
    fill(out, |g| (d * scale(g), NO_OFFSET), q);
}

/// The eight 6-bit (scale, minimum) pairs of Q4_K/Q5_K, packed in 12 bytes.
fn k_scale_min(packed: &[u8], g: usize) -> (u8, u8) {
    if g < 4 {
        (packed[g] & 0x3F, packed[g + 4] & 0x3F)
    } else {
        (
            (packed[g + 4] & 0x0F) | ((packed[g - 4] >> 2) & 0x30),
            (packed[g + 4] >> 4) | ((packed[g] >> 2) & 0x30),
        )
    }
}

/// Scale and offset of group g (of 16) in a Q4_K/Q5_K block, whose scales cover 32 values each.
fn k_group(block: &[u8], g: usize) -> (f32, f32) {
    let (d, dmin) = (half_at(block, 0), half_at(block, 2));
    let (sc, m) = k_scale_min(&block[4..16], g / 2);
    (d * sc as f32, -(dmin * m as f32))
}

/// Value v's low 4 bits in Q4_K/Q5_K: scale groups 2c and 2c+1 share 32 bytes, low nibbles then high.
fn k_nibble(qs: &[u8], v: usize) -> u8 {
    let (g, k) = (v / 32, v % 32);
    (qs[(g / 2) * 32 + k] >> (4 * (g % 2))) & 0x0F
}

/// 256 values in 8 groups of 32: f16 super-scale and super-minimum, 6-bit group scales and
/// minimums, 4-bit values.
fn q4_k(block: &[u8], out: &mut [Group]) {
    fill(out, |g| k_group(block, g), |v| k_nibble(&block[16..144], v) as i32);
}

/// Q4_K plus a fifth bit per value: bit g of byte k is value k of group g (of 32).
fn q5_k(block: &[u8], out: &mut [Group]) {
    let (qh, qs) = (&block[16..48], &block[48..176]);
    fill(out, |g| k_group(block, g), |v| (k_nibble(qs, v) | (((qh[v % 32] >> (v / 32)) & 1) << 4)) as i32);
}

/// 256 values in 16 groups of 16: signed 8-bit group scales times an f16 super-scale, 6-bit values
/// (4 low bits and 2 high bits in separate arrays) offset by 32.
fn q6_k(block: &[u8], out: &mut [Group]) {
    let (ql, qh, scales) = (&block[0..128], &block[128..192], &block[192..208]);
    let d = half_at(block, 208);
    let q = |v: usize| {
        let (half, within) = (v / 128, v % 128);
        let low = (ql[half * 64 + within % 64] >> (4 * (within / 64))) & 0x0F;
        let high = (qh[half * 32 + within % 32] >> (2 * (within / 32))) & 3;
        (low | (high << 4)) as i32 - 32
    };
    fill(out, |g| (d * (scales[g] as i8) as f32, NO_OFFSET), q);
}

// ---- tokenizer pieces -----------------------------------------------------------------------

/// GPT-2's split (transformers' ByteLevel regex).
const GPT2_NAMES: &[&str] = &[
    "default", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
    "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling",
];
/// GPT-2's split after splitting off every digit (llama.cpp's "\p{N}" first).
const DIGITS_NAMES: &[&str] = &["smollm", "codeshell", "exaone", "minerva-7b", "mellum2"];
const LLAMA3_NAMES: &[&str] =
    &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"];
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_NAMES: &[&str] = &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "hunyuan", "solar-open"];
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Hugging Face pre-tokenizer equivalent to llama.cpp's for `tokenizer.ggml.pre` (the regexes
/// of llama-vocab.cpp, written as the models' own tokenizer.json files write them).
fn byte_level_pre_tokenizer(pre: &str) -> Option<tokenizers::PreTokenizerWrapper> {
    use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence, split::Split};
    use tokenizers::{PreTokenizerWrapper as P, SplitDelimiterBehavior};
    let byte_level = |use_regex: bool| P::ByteLevel(ByteLevel::new(false, true, use_regex));
    let split = |regex: &str| -> Option<P> {
        let split = Split::new(tokenizers::pre_tokenizers::split::SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false).ok()?;
        Some(P::Sequence(Sequence::new(vec![P::Split(split), byte_level(false)])))
    };
    if GPT2_NAMES.contains(&pre) {
        Some(byte_level(true))
    } else if DIGITS_NAMES.contains(&pre) {
        Some(P::Sequence(Sequence::new(vec![P::Digits(Digits::new(true)), byte_level(true)])))
    } else if LLAMA3_NAMES.contains(&pre) {
        split(LLAMA3_SPLIT)
    } else if QWEN2_NAMES.contains(&pre) {
        split(QWEN2_SPLIT)
    } else {
        None
    }
}

/// llama.cpp's SentencePiece input: spaces become "▁", and with `add_space_prefix` a space goes in
/// front of the text and of every piece that follows a special token (normalizers run on each
/// piece between added tokens, which is exactly where llama.cpp adds it).
fn sentencepiece_normalizer(add_space_prefix: bool) -> Result<tokenizers::NormalizerWrapper> {
    use tokenizers::normalizers::{prepend::Prepend, replace::Replace, utils::Sequence};
    use tokenizers::NormalizerWrapper as N;
    let replace = Replace::new(" ", "\u{2581}").map_err(|e| Error::internal(format!("tokenizer normalizer: {e}")))?;
    let mut steps = vec![N::Replace(replace)];
    if add_space_prefix {
        steps.push(N::Prepend(Prepend::new("\u{2581}".into())));
    }
    Ok(N::Sequence(Sequence::new(steps)))
}

fn sentencepiece_decoder(add_space_prefix: bool) -> tokenizers::DecoderWrapper {
    use tokenizers::decoders::{byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence, strip::Strip};
    use tokenizers::normalizers::replace::Replace;
    use tokenizers::DecoderWrapper as D;
    let mut steps = Vec::new();
    if let Ok(replace) = Replace::new("\u{2581}", " ") {
        steps.push(D::Replace(replace));
    }
    steps.push(D::ByteFallback(ByteFallback::new()));
    steps.push(D::Fuse(Fuse::new()));
    if add_space_prefix {
        steps.push(D::Strip(Strip::new(' ', 1, 0)));
    }
    D::Sequence(Sequence::new(steps))
}

/// BPE merges equivalent to SentencePiece's scores, ordered as transformers' `generate_merges`
/// orders them: every cut of a token into two tokens, best score first; ties go to the longer left
/// piece, then the longer right piece, then token order and the pieces' ids. SentencePiece joins
/// the adjacent pair whose union scores best, so applying merges in this order reproduces it.
fn sentencepiece_merges(tokens: &[String], vocab: &tokenizers::models::bpe::Vocab, scores: &[f32]) -> Vec<(String, String)> {
    struct Candidate<'a> {
        left: &'a str,
        right: &'a str,
        score: f32,
        left_chars: usize,
        right_chars: usize,
    }
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    for token in tokens {
        // A token listed twice counts once, with the id and score of its last listing.
        if !seen.insert(token.as_str()) {
            continue;
        }
        let Some(&id) = vocab.get(token) else { continue };
        let score = scores[id as usize];
        let mut local: Vec<Candidate> = token
            .char_indices()
            .skip(1)
            .map(|(cut, _)| token.split_at(cut))
            .filter(|(l, r)| vocab.contains_key(*l) && vocab.contains_key(*r))
            .map(|(left, right)| Candidate { left, right, score, left_chars: left.chars().count(), right_chars: right.chars().count() })
            .collect();
        local.sort_by_key(|c| (vocab[c.left], vocab[c.right]));
        candidates.extend(local);
    }
    // Stable: candidates with equal keys keep the order above. A NaN score (a corrupt file) ranks
    // last, so that the order is total (sort_by may panic otherwise).
    let rank = |score: f32| if score.is_nan() { f32::NEG_INFINITY } else { score };
    candidates.sort_by(|a, b| {
        rank(b.score)
            .partial_cmp(&rank(a.score))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates.into_iter().map(|c| (c.left.to_string(), c.right.to_string())).collect()
}
