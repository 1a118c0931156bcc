//! What differs between model families, as data. `config.json` is parsed into a [`ModelSpec`];
//! the one forward pass (GPU: `forward.rs`, CPU: `reference/`) reads nothing else. Adding a family
//! means a config parser and a weight-name map here, plus tests.

mod checkpoint;
mod tokenizer;
mod weights;

pub use checkpoint::{Checkpoint, TensorData};
pub use tokenizer::TextTokenizer;
pub use weights::{load_weights, LayerWeights, ModelWeights};

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum NormKind {
    Rms,
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Activation {
    Silu,
    GeluTanh,
    GeluErf,
}

impl Activation {
    /// The code the activation kernel uses.
    pub fn code(self) -> u32 {
        match self {
            Activation::Silu => 0,
            Activation::GeluTanh => 1,
            Activation::GeluErf => 2,
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

/// Everything the forward pass needs to know about an architecture.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSpec {
    pub model_type: String,
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
    /// Added to norm weights before use (Gemma stores `weight` and applies `1 + weight`).
    pub norm_weight_offset: f32,
    pub activation: Activation,
    /// Gated MLP (gate * up -> down) rather than plain (up -> act -> down).
    pub gated_mlp: bool,
    pub rope: Option<RopeSpec>,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tied_head: bool,
    /// Hidden states after the embedding are multiplied by this (Gemma: sqrt(hidden)).
    pub embedding_scale: f32,
    /// Multiplies q.k before the softmax.
    pub attention_scale: f32,
    /// Keys older than this many positions are not attended (Mistral), if set.
    pub sliding_window: Option<usize>,
}

/// Tensor names of one family (Hugging Face module names).
#[derive(Debug, Clone, Copy)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl ModelSpec {
    pub fn embedding_name(&self) -> &'static str {
        "model.embed_tokens.weight"
    }
    pub fn final_norm_name(&self) -> &'static str {
        "model.norm.weight"
    }
    pub fn head_name(&self) -> &'static str {
        if self.tied_head {
            self.embedding_name()
        } else {
            "lm_head.weight"
        }
    }

    /// The name of a layer tensor (without the `.weight` / `.bias` suffix).
    pub fn layer_tensor(&self, layer: usize, tensor: LayerTensor) -> String {
        let module = match tensor {
            LayerTensor::AttnNorm => "input_layernorm",
            LayerTensor::Q => "self_attn.q_proj",
            LayerTensor::K => "self_attn.k_proj",
            LayerTensor::V => "self_attn.v_proj",
            LayerTensor::O => "self_attn.o_proj",
            LayerTensor::FfnNorm => "post_attention_layernorm",
            LayerTensor::Gate => "mlp.gate_proj",
            LayerTensor::Up => "mlp.up_proj",
            LayerTensor::Down => "mlp.down_proj",
        };
        format!("model.layers.{layer}.{module}")
    }

    pub fn qkv_width(&self) -> usize {
        (self.q_heads + 2 * self.kv_heads) * self.head_dim
    }

    pub fn parameter_count(&self) -> usize {
        let attn = self.hidden * self.qkv_width() + self.q_heads * self.head_dim * self.hidden;
        let mlp = self.hidden * self.intermediate * if self.gated_mlp { 3 } else { 2 };
        let head = if self.tied_head { 0 } else { self.vocab_size * self.hidden };
        self.vocab_size * self.hidden + self.layers * (attn + mlp + 2 * self.hidden) + self.hidden + head
    }

    /// Rotary inverse frequencies, computed in f32 exactly as transformers does.
    pub fn inv_freq(&self) -> Vec<f32> {
        let Some(rope) = &self.rope else { return Vec::new() };
        let dim = rope.rotary_dim as f32;
        let base: Vec<f32> = (0..rope.rotary_dim / 2)
            .map(|i| 1.0f32 / rope.theta.powf((2 * i) as f32 / dim))
            .collect();
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
                        let medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
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

    /// (cos, sin) for positions 0..len and each rotary pair, row-major [position][pair]:
    /// the angle is formed in f32 as transformers does, the cosine is taken in f64.
    pub fn rope_table(&self, len: usize) -> Vec<[f32; 2]> {
        let inv_freq = self.inv_freq();
        let mut table = Vec::with_capacity(len * inv_freq.len());
        for position in 0..len {
            for &f in &inv_freq {
                let angle = (position as f32 * f) as f64;
                table.push([angle.cos() as f32, angle.sin() as f32]);
            }
        }
        table
    }
}

/// A model directory (or file) resolved: where its parts are.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
}

impl ModelFiles {
    pub fn locate(model: &str) -> Result<ModelFiles> {
        let path = PathBuf::from(model);
        if path.is_dir() {
            if !path.join("config.json").exists() {
                return Err(Error::bad_input(format!(
                    "{}: no config.json; --model takes a Hugging Face model directory (config.json, \
                     model.safetensors, tokenizer.json)",
                    path.display()
                )));
            }
            return Ok(ModelFiles { dir: path });
        }
        if path.exists() {
            return Err(Error::bad_input(format!(
                "{}: is a file; --model takes a Hugging Face model directory (config.json, model.safetensors, tokenizer.json)",
                path.display()
            )));
        }
        Err(Error::bad_input(format!("--model {model}: no such directory")))
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::bad_input(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::bad_input(format!("{}: invalid JSON: {e}", path.display())))
}

/// Typed access to config.json with errors that name the file and the key.
struct Config<'a> {
    path: &'a Path,
    json: Value,
}

impl Config<'_> {
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| Error::bad_input(format!("{}: missing \"{key}\"", self.path.display())))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                Error::bad_input(format!("{}: \"{key}\" should be a non-negative integer, found {v}", self.path.display()))
            }),
        }
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| {
                Error::bad_input(format!("{}: \"{key}\" should be a number, found {v}", self.path.display()))
            }),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| Error::bad_input(format!("{}: \"{key}\" should be true or false, found {v}", self.path.display()))),
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(|v| v.as_str())
    }
    fn unsupported(&self, what: String) -> Error {
        Error::bad_input(format!(
            "{}: {what}. perplex refuses rather than compute different numbers from the reference; \
             please report the model so support can be added.",
            self.path.display()
        ))
    }
}

pub const SUPPORTED_FAMILIES: &[&str] = &["llama", "mistral"];

/// Reads `config.json` of a model directory into a [`ModelSpec`].
pub fn load_spec(dir: &Path) -> Result<ModelSpec> {
    let path = dir.join("config.json");
    let config = Config { json: read_json(&path)?, path: &path };
    let model_type = config
        .str("model_type")
        .ok_or_else(|| Error::bad_input(format!("{}: missing \"model_type\"", path.display())))?
        .to_string();
    match model_type.as_str() {
        "llama" | "mistral" => llama_spec(&config, model_type),
        other => Err(Error::bad_input(format!(
            "{}: model_type \"{other}\" is not supported; supported families: {}",
            path.display(),
            SUPPORTED_FAMILIES.join(", ")
        ))),
    }
}

/// Llama 2/3, SmolLM, TinyLlama, Mistral: RMSNorm, SwiGLU, RoPE, grouped-query attention.
fn llama_spec(config: &Config, model_type: String) -> Result<ModelSpec> {
    let hidden = config.usize("hidden_size")?;
    let q_heads = config.usize("num_attention_heads")?;
    let kv_heads = config.opt_usize("num_key_value_heads")?.unwrap_or(q_heads);
    if q_heads == 0 || kv_heads == 0 || q_heads % kv_heads != 0 {
        return Err(config.unsupported(format!("{q_heads} attention heads cannot be grouped over {kv_heads} key/value heads")));
    }
    let head_dim = config.opt_usize("head_dim")?.unwrap_or(hidden / q_heads);
    let act = config.str("hidden_act").unwrap_or("silu");
    if act != "silu" {
        return Err(config.unsupported(format!("hidden_act \"{act}\" in a {model_type} model (only silu)")));
    }
    let rotary_dim = head_dim;
    // transformers 5 writes `rope_parameters` (with rope_theta inside); older files `rope_scaling`.
    let rope_parameters = config.json.get("rope_parameters").filter(|v| v.is_object());
    let theta = match rope_parameters.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()) {
        Some(theta) => theta as f32,
        None => config.f32_or("rope_theta", 10000.0)?,
    };
    let scaling = match rope_parameters.or_else(|| config.json.get("rope_scaling")) {
        None | Some(Value::Null) => RopeScaling::None,
        Some(s) => {
            let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
            let num = |key: &str| -> Result<f32> {
                s.get(key).and_then(|v| v.as_f64()).map(|x| x as f32).ok_or_else(|| {
                    Error::bad_input(format!("{}: rope_scaling \"{kind}\" needs \"{key}\"", config.path.display()))
                })
            };
            match kind {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear { factor: num("factor")? },
                "llama3" => RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_positions: num("original_max_position_embeddings")?,
                },
                other => return Err(config.unsupported(format!("rope_scaling type \"{other}\" (supported: linear, llama3)"))),
            }
        }
    };
    if let Some(factor) = config.json.get("partial_rotary_factor").and_then(|v| v.as_f64()) {
        if factor != 1.0 {
            return Err(config.unsupported(format!("partial_rotary_factor {factor} in a {model_type} model")));
        }
    }
    let attention_bias = config.bool_or("attention_bias", false)?;
    let sliding_window = if model_type == "mistral" { config.opt_usize("sliding_window")? } else { None };
    let tied_default = false;
    Ok(ModelSpec {
        vocab_size: config.usize("vocab_size")?,
        hidden,
        layers: config.usize("num_hidden_layers")?,
        q_heads,
        kv_heads,
        head_dim,
        intermediate: config.usize("intermediate_size")?,
        max_positions: config.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        norm: NormKind::Rms,
        norm_eps: config.f32_or("rms_norm_eps", 1e-6)?,
        norm_weight_offset: 0.0,
        activation: Activation::Silu,
        gated_mlp: true,
        rope: Some(RopeSpec { theta, rotary_dim, scaling }),
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        mlp_bias: config.bool_or("mlp_bias", false)?,
        tied_head: config.bool_or("tie_word_embeddings", tied_default)?,
        embedding_scale: 1.0,
        attention_scale: 1.0 / (head_dim as f32).sqrt(),
        sliding_window,
        model_type,
    })
}
