//! What differs between model families, as data. A model's config (config.json, or a GGUF file's
//! metadata) is read into a typed [`Config`] (config.rs), and its family (families/, one file
//! each) turns it into a [`ModelSpec`] and names its tensors (names.rs); the one forward pass
//! (GPU: `forward.rs`, CPU: `reference/`) reads nothing else. Adding a family: see
//! families/mod.rs.

mod checkpoint;
mod config;
pub mod families;
mod files;
pub mod gguf;
pub mod hub;
mod names;
mod tokenizer;
mod weights;

pub use checkpoint::{Checkpoint, TensorData};
pub use config::{Config, RopeScalingConfig};
pub use families::Family;
pub use files::{FileBytes, HeldFiles, ModelDir};
pub use names::{FusedQkv, LayerNames, Naming, QkvNames, TensorNames, UpNames};
pub use tokenizer::TextTokenizer;
pub use weights::{load_head, load_weights, LayerWeights, MatrixUse, ModelWeights, NormWeights};

use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum NormKind {
    Rms,
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Activation {
    Silu,
    GeluTanh,
    GeluErf,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::GeluErf),
            _ => None,
        }
    }
}

/// How rotary frequencies are derived from the base ones (`rope_scaling` in config.json).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum RopeScaling {
    None,
    Linear { factor: f32 },
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_positions: f32 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RopeSpec {
    pub theta: f32,
    /// Number of leading dims of each head that rotate (head_dim unless partial rotary).
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

/// Where QK-norm normalises: each head on its own (Gemma 3, Qwen 3), or the whole projection (OLMo 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum QkNorm {
    None,
    PerHead,
    Whole,
}

/// Attention of one layer: its key window and which rotary table it uses.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerAttention {
    /// Keys older than this many positions are not attended, if set.
    pub sliding_window: Option<usize>,
    /// Index into [`ModelSpec::ropes`].
    pub rope: usize,
}

/// Which norms a block has around its attention and MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NormPlacement {
    /// Before attention / MLP (Llama's input_layernorm / post_attention_layernorm).
    pub pre: bool,
    /// On the attention / MLP output before the residual add (Gemma 2/3 sandwich, OLMo 2).
    pub post: bool,
}

/// Everything the forward pass needs to know about an architecture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSpec {
    pub model_type: String,
    /// The family's rules and tensor names.
    pub family: &'static Family,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    /// Norms carry a bias (LayerNorm in GPT-2 and GPT-NeoX).
    pub norm_bias: bool,
    /// Added to norm weights before use (Gemma stores `weight` and applies `1 + weight`).
    pub norm_weight_offset: f32,
    pub norms: NormPlacement,
    pub qk_norm: QkNorm,
    pub activation: Activation,
    /// Gated MLP (act(gate) * up -> down) rather than plain (act(up) -> down).
    pub gated_mlp: bool,
    /// Rotary tables the layers use (Gemma 3 has a local and a global one); empty without RoPE.
    pub ropes: Vec<RopeSpec>,
    pub layer_attention: Vec<LayerAttention>,
    /// Learned absolute position embeddings added to the token embeddings (GPT-2).
    pub learned_positions: bool,
    /// Attention and MLP both read the block input and add to it (GPT-NeoX, GPT-J).
    pub parallel_residual: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tied_head: bool,
    /// Hidden states after the embedding are multiplied by this (Gemma: sqrt(hidden)).
    pub embedding_scale: f32,
    /// Multiplies q.k before the softmax.
    pub attention_scale: f32,
    /// tanh soft-capping of attention scores and of final logits, 0 = off (Gemma 2).
    pub attention_softcap: f32,
    pub final_softcap: f32,
}

impl ModelSpec {
    pub fn qkv_width(&self) -> usize {
        (self.q_heads + 2 * self.kv_heads) * self.head_dim
    }

    pub fn q_width(&self) -> usize {
        self.q_heads * self.head_dim
    }

    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Width of the MLP's first projection output (gate and up side by side when gated).
    pub fn up_width(&self) -> usize {
        self.intermediate * if self.gated_mlp { 2 } else { 1 }
    }

    pub fn parameter_count(&self) -> usize {
        let attn = self.hidden * self.qkv_width() + self.q_width() * self.hidden;
        let mlp = self.hidden * (self.up_width() + self.intermediate);
        let head = if self.tied_head { 0 } else { self.vocab_size * self.hidden };
        let positions = if self.learned_positions { self.max_positions * self.hidden } else { 0 };
        self.vocab_size * self.hidden + positions + self.layers * (attn + mlp) + head
    }

    /// Rotary inverse frequencies of table `rope`, computed in f32 exactly as transformers does.
    pub fn inv_freq(&self, rope: usize) -> Vec<f32> {
        let Some(rope) = self.ropes.get(rope) else { return Vec::new() };
        let dim = rope.rotary_dim as f32;
        let base: Vec<f32> = (0..rope.rotary_dim / 2).map(|i| 1.0f32 / rope.theta.powf((2 * i) as f32 / dim)).collect();
        match rope.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                let low_freq_wavelen = original_max_positions / low_freq_factor;
                let high_freq_wavelen = original_max_positions / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                        let smooth = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                        let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                        if medium {
                            smoothed
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }

    /// (cos, sin) of table `rope` for positions 0..len and each rotary pair, row-major
    /// [position][pair]: the angle is formed in f32 as transformers does, the cosine taken in f64.
    pub fn rope_table(&self, rope: usize, len: usize) -> Vec<[f32; 2]> {
        let inv_freq = self.inv_freq(rope);
        let mut table = Vec::with_capacity(len * inv_freq.len());
        for position in 0..len {
            for &f in &inv_freq {
                let angle = (position as f32 * f) as f64;
                table.push([angle.cos() as f32, angle.sin() as f32]);
            }
        }
        table
    }

    pub fn rotary_dim(&self, rope: usize) -> usize {
        self.ropes.get(rope).map_or(0, |r| r.rotary_dim)
    }
}

/// Reads `config.json` of a model directory into a [`ModelSpec`].
pub fn load_spec(dir: &(impl ModelDir + ?Sized)) -> Result<ModelSpec> {
    let path = dir.path("config.json");
    let json = config::parse_json(&dir.text("config.json")?, &path)?;
    // The family first: a model perplex does not read is named as such, whatever else its config holds.
    let family = families::by_model_type(json.get("model_type").and_then(|v| v.as_str()), &path)?;
    family.spec(&Config::from_json(json, &path)?)
}

/// A model directory resolved from what the user passed to --model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
}

/// Whether --model names a GGUF file.
pub fn is_gguf(model: &str) -> bool {
    let path = std::path::Path::new(model);
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

impl ModelFiles {
    /// A directory path, or a hub id looked up in the local Hugging Face cache at `revision`.
    pub fn locate(model: &str, revision: Option<&str>) -> Result<ModelFiles> {
        let path = PathBuf::from(model);
        let dir = if path.exists() {
            if revision.is_some() {
                return Err(Error::bad_input(format!(
                    "--revision applies to hub ids (org/name) in the Hugging Face cache, not to the path {model}"
                )));
            }
            if !path.is_dir() {
                return Err(Error::bad_input(format!(
                    "{}: is a file; --model takes a Hugging Face model directory (config.json, model.safetensors, \
                     tokenizer.json) or a hub id in the local cache",
                    path.display()
                )));
            }
            path
        } else if hub::looks_like_hub_id(model) {
            hub::resolve_in(&hub::cache_dir(), model, revision)?
        } else {
            return Err(Error::bad_input(format!("--model {model}: no such directory, and not a hub id (org/name)")));
        };
        if !dir.join("config.json").exists() {
            return Err(Error::bad_input(format!(
                "{}: no config.json; --model takes a Hugging Face model directory (config.json, \
                 model.safetensors, tokenizer.json)",
                dir.display()
            )));
        }
        Ok(ModelFiles { dir })
    }
}
