//! The GGUF binary layout: header, metadata key/values and the tensor directory, every count,
//! length, offset and dimension checked against the file's size before anything is allocated
//! for it, so that a corrupt or hostile file gives an error, never a huge allocation or a panic.
//! Format reference: llama.cpp's `ggml/include/gguf.h`.

use super::bad;
use super::dequant::{GgmlType, TYPES};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal GGUF; real files nest at most once. The limit keeps a hostile file
/// from recursing the reader off the stack.
const MAX_ARRAY_DEPTH: usize = 4;

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


/// Where a tensor's bytes are and how they are stored.
#[derive(Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the length of a row (the reverse of PyTorch's shape).
    pub dims: Vec<usize>,
    pub kind: &'static GgmlType,
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    /// The PyTorch / Hugging Face shape.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
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

/// What the header and directory of a GGUF file say.
pub struct Parsed {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub by_name: HashMap<String, usize>,
}

/// Parses the header, metadata and tensor directory of the file `bytes` (named `path` in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let mut cursor = Cursor { bytes, pos: 0, path };
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
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
        let tensor = locate_tensor(path, name, dims, type_id, offset, alignment, data_start, bytes.len())?;
        if by_name.insert(tensor.name.clone(), tensors.len()).is_some() {
            return Err(bad(path, format!("corrupt GGUF file: tensor '{}' appears twice", tensor.name)));
        }
        tensors.push(tensor);
    }

    Ok(Parsed { version, metadata, tensors, by_name })
}

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

