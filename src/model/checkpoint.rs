//! Safetensors checkpoints: a single `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped; tensors are looked up by name and handed out
//! as raw little-endian bytes in their stored width.

use crate::error::{Error, Result};
use crate::dtype::{DType, Group, GROUP};
use super::{FileBytes, ModelDir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct TensorEntry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Where a model's tensors come from: safetensors files, or a GGUF file (dequantized at load).
pub enum Checkpoint {
    Safetensors(Safetensors),
    Gguf(super::gguf::GgufFile),
}

impl Checkpoint {
    pub fn open(dir: &(impl ModelDir + ?Sized)) -> Result<Checkpoint> {
        Ok(Checkpoint::Safetensors(Safetensors::open(dir)?))
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Checkpoint::Safetensors(s) => s.contains(name),
            Checkpoint::Gguf(g) => g.contains(name),
        }
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorData<'_>> {
        match self {
            Checkpoint::Safetensors(s) => s.get(name, shape),
            Checkpoint::Gguf(g) => g.tensor(name, shape),
        }
    }
}

pub struct Safetensors {
    paths: Vec<PathBuf>,
    maps: Vec<FileBytes>,
    tensors: HashMap<String, TensorEntry>,
}

/// A tensor's bytes as stored in the file.
pub struct TensorData<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

impl TensorData<'_> {
    /// Values widened to f32 (small tensors: norms and biases, and the CPU reference).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec(&self.bytes),
            DType::F16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::Int8Groups => self
                .bytes
                .chunks_exact(Group::BYTES)
                .flat_map(|b| {
                    let group = Group::read(b);
                    (0..GROUP).map(move |j| group.value(j))
                })
                .collect(),
        }
    }
}

impl Safetensors {
    /// Opens the weights of a Hugging Face model directory.
    pub fn open(dir: &(impl ModelDir + ?Sized)) -> Result<Safetensors> {
        let (single, index) = ("model.safetensors", "model.safetensors.index.json");
        let files: Vec<String> = if dir.has(index) {
            shard_files(&dir.text(index)?, &dir.path(index), |name| dir.has(name))?
        } else if dir.has(single) {
            vec![single.to_string()]
        } else {
            return Err(Error::bad_input(format!(
                "{}: no model.safetensors or model.safetensors.index.json. perplex reads Hugging Face \
                 safetensors checkpoints (convert .bin checkpoints with `transformers` save_pretrained(safe_serialization=True)).",
                dir.location().display()
            )));
        };
        let mut checkpoint = Safetensors { paths: Vec::new(), maps: Vec::new(), tensors: HashMap::new() };
        for name in files {
            checkpoint.add_file(&dir.path(&name), dir.bytes(&name)?)?;
        }
        Ok(checkpoint)
    }

    fn add_file(&mut self, path: &Path, map: FileBytes) -> Result<()> {
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
            Error::bad_input(format!(
                "{}: not a valid safetensors file ({e:?}). The file may be truncated or still downloading; \
                 download it again.",
                path.display()
            ))
        })?;
        let data_start = 8 + header_len;
        let index = self.maps.len();
        for (name, info) in metadata.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                other => {
                    return Err(Error::bad_input(format!(
                        "{}: tensor '{name}' has dtype {other:?}; perplex reads f32, f16 and bf16 safetensors \
                         (GGUF files for quantized weights)",
                        path.display()
                    )))
                }
            };
            let (start, end) = info.data_offsets;
            self.tensors.insert(
                name.clone(),
                TensorEntry { file: index, dtype, shape: info.shape.clone(), start: data_start + start, end: data_start + end },
            );
        }
        self.paths.push(path.to_path_buf());
        self.maps.push(map);
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// The shape of tensor `name` as stored.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|entry| entry.shape.clone())
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorData<'_>> {
        let entry = self.tensors.get(name).ok_or_else(|| {
            Error::bad_input(format!(
                "checkpoint {} has no tensor '{name}', which this model's config.json requires",
                self.describe()
            ))
        })?;
        if entry.shape != shape {
            return Err(Error::bad_input(format!(
                "{}: tensor '{name}' has shape {:?} but config.json implies {:?}; the config and the weights \
                 do not belong together",
                self.paths[entry.file].display(),
                entry.shape,
                shape
            )));
        }
        Ok(TensorData {
            name: name.to_string(),
            dtype: entry.dtype,
            shape: entry.shape.clone(),
            bytes: std::borrow::Cow::Borrowed(&self.maps[entry.file][entry.start..entry.end]),
        })
    }

    /// The widest-used storage type (what the bulk of the weights is stored as).
    pub fn main_dtype(&self) -> DType {
        let mut bytes: HashMap<DType, usize> = HashMap::new();
        for entry in self.tensors.values() {
            *bytes.entry(entry.dtype).or_default() += entry.end - entry.start;
        }
        bytes.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d).unwrap_or(DType::F32)
    }

    fn describe(&self) -> String {
        match self.paths.first().and_then(|p| p.parent()) {
            Some(dir) => dir.display().to_string(),
            None => "(empty)".into(),
        }
    }
}

/// The shard files `model.safetensors.index.json` (`text`, read from `index`) lists, each once,
/// in name order; every one must be there (`exists`).
fn shard_files(text: &str, index: &Path, exists: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let json = super::config::parse_json(text, index)?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
        Error::bad_input(format!("{}: no \"weight_map\" object", index.display()))
    })?;
    let mut files: Vec<String> = Vec::new();
    for value in map.values() {
        let name = value
            .as_str()
            .ok_or_else(|| Error::bad_input(format!("{}: weight_map values must be file names", index.display())))?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(Error::bad_input(format!("{}: shard name '{name}' leaves the model directory", index.display())));
        }
        if !files.iter().any(|f| f == name) {
            if !exists(name) {
                return Err(Error::bad_input(format!(
                    "{}: shard {name} is missing; download the complete checkpoint",
                    index.display()
                )));
            }
            files.push(name.to_string());
        }
    }
    files.sort();
    Ok(files)
}
