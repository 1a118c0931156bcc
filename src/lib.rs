//! perplex: score language-model checkpoints on any GPU (Vulkan, Metal, DX12) through wgpu.
//!
//! Data flow: documents ([`data`]) and a checkpoint -> [`ModelSpec`] + GPU weights -> batches of
//! token windows -> [`forward`] -> per-token log-probabilities -> metrics ([`score`]) -> [`report`].

pub mod bench;
pub mod compare;
pub mod data;
pub mod dtype;
pub mod error;
pub mod fingerprint;
pub mod forward;
pub mod generate;
pub mod fuzz;
pub mod hash;
pub mod gpu;
pub mod model;
pub mod reference;
pub mod report;
pub mod score;
// Sweeps live in files, shards and plots: the command line's, not a browser's.
#[cfg(not(target_arch = "wasm32"))]
pub mod sweep;
pub mod tasks;

pub use error::{Error, ErrorKind, Result};
pub use model::ModelSpec;

use forward::GpuModel;
use gpu::Gpu;
use model::{Checkpoint, ModelDir, ModelFiles, TextTokenizer};
use std::sync::Arc;

/// A model ready to score: its spec, tokenizer and weights on a GPU.
pub struct Model {
    /// What the user passed to --model.
    pub name: String,
    pub spec: ModelSpec,
    pub tokenizer: TextTokenizer,
    pub gpu_model: GpuModel,
    /// The checkpoint's directory or GGUF file, to read the weights again after
    /// [`GpuModel::release_weights`].
    pub source: std::path::PathBuf,
}

impl Model {
    pub fn open(name: &str, gpu: Arc<Gpu>) -> Result<Model> {
        Model::open_revision(name, None, gpu)
    }

    /// A model directory, a GGUF file, or a hub id (`org/name`) at `revision` in the local
    /// Hugging Face cache.
    pub fn open_revision(name: &str, revision: Option<&str>, gpu: Arc<Gpu>) -> Result<Model> {
        Ok(Model::open_with(name, revision, gpu, |_, _| Ok(()))?.0)
    }

    /// [`Model::open_revision`], also handing the open checkpoint to `read` before it is closed,
    /// for what the forward pass does not keep (perplex compare reads the head again).
    pub fn open_with<T>(
        name: &str,
        revision: Option<&str>,
        gpu: Arc<Gpu>,
        read: impl FnOnce(&ModelSpec, &Checkpoint) -> Result<T>,
    ) -> Result<(Model, T)> {
        let (spec, tokenizer, checkpoint, source) = if model::is_gguf(name) {
            let file = model::gguf::GgufFile::open(std::path::Path::new(name))?;
            let (spec, tokenizer) = (file.spec()?, file.tokenizer()?);
            (spec, tokenizer, Checkpoint::Gguf(file), std::path::PathBuf::from(name))
        } else {
            let dir = ModelFiles::locate(name, revision)?.dir;
            let (spec, tokenizer) = (model::load_spec(&dir)?, TextTokenizer::load(&dir)?);
            (spec, tokenizer, Checkpoint::open(&dir)?, dir)
        };
        Model::load(name, spec, tokenizer, checkpoint, source, gpu, read)
    }

    /// A model from files held in memory (those a browser page was handed): one `.gguf` file,
    /// or a Hugging Face directory's `config.json`, `tokenizer.json` (and `tokenizer_config.json`
    /// where there is one) and safetensors weights. `files.label` names it.
    pub fn open_held(files: &model::HeldFiles, gpu: Arc<Gpu>) -> Result<Model> {
        let ggufs: Vec<&str> = files.names().filter(|name| name.to_lowercase().ends_with(".gguf")).collect();
        let (spec, tokenizer, checkpoint) = match ggufs[..] {
            [gguf] => {
                let file = model::gguf::GgufFile::from_bytes(&files.path(gguf), files.bytes(gguf)?)?;
                let (spec, tokenizer) = (file.spec()?, file.tokenizer()?);
                (spec, tokenizer, Checkpoint::Gguf(file))
            }
            [] => (model::load_spec(files)?, TextTokenizer::load(files)?, Checkpoint::open(files)?),
            _ => return Err(Error::bad_input(format!("{}: more than one .gguf file ({}); pick one", files.label, ggufs.join(", ")))),
        };
        Ok(Model::load(&files.label, spec, tokenizer, checkpoint, files.location(), gpu, |_, _| Ok(()))?.0)
    }

    /// Checks that the tokenizer belongs to the checkpoint and uploads the weights.
    fn load<T>(
        name: &str,
        spec: ModelSpec,
        tokenizer: TextTokenizer,
        checkpoint: Checkpoint,
        source: std::path::PathBuf,
        gpu: Arc<Gpu>,
        read: impl FnOnce(&ModelSpec, &Checkpoint) -> Result<T>,
    ) -> Result<(Model, T)> {
        if tokenizer.vocab_size > spec.vocab_size {
            return Err(Error::bad_input(format!(
                "{}: the tokenizer has {} tokens but the model's embedding has only {} rows: tokenizer.json does not \
                 belong to this model",
                source.display(),
                tokenizer.vocab_size,
                spec.vocab_size
            )));
        }
        let gpu_model = GpuModel::load(gpu, spec.clone(), &checkpoint)?;
        let extra = read(&spec, &checkpoint)?;
        Ok((Model { name: name.to_string(), spec, tokenizer, gpu_model, source }, extra))
    }

    /// Puts the weights back on the device after [`GpuModel::release_weights`], read again from
    /// the checkpoint.
    pub fn restore_weights(&self) -> Result<()> {
        let checkpoint = if model::is_gguf(&self.source.to_string_lossy()) {
            Checkpoint::Gguf(model::gguf::GgufFile::open(&self.source)?)
        } else {
            Checkpoint::open(&self.source)?
        };
        self.gpu_model.restore_weights(&checkpoint)
    }

    pub fn adapter(&self) -> String {
        self.gpu_model.gpu.describe()
    }
}
