//! One config parser and one weight-name map per model family. Everything else about a family is
//! the data in [`ModelSpec`]. Config fields that change the numbers and that the engine does not
//! implement are refused, never ignored.

use super::{Activation, LayerAttention, ModelSpec, NormKind, NormPlacement, QkNorm, RopeScaling, RopeSpec};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Phi3,
    Gemma,
    Gemma2,
    Gemma3,
    Olmo2,
    Gpt2,
    GptNeox,
}

pub const SUPPORTED_FAMILIES: &[&str] =
    &["llama", "mistral", "qwen2", "phi3", "gemma", "gemma2", "gemma3_text", "olmo2", "gpt2", "gpt_neox"];

impl Family {
    fn from_model_type(model_type: &str) -> Option<Family> {
        Some(match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "phi3" => Family::Phi3,
            "gemma" => Family::Gemma,
            "gemma2" => Family::Gemma2,
            "gemma3_text" | "gemma3" => Family::Gemma3,
            "olmo2" => Family::Olmo2,
            "gpt2" => Family::Gpt2,
            "gpt_neox" => Family::GptNeox,
            _ => return None,
        })
    }
}

/// How a checkpoint stores the query/key/value projections.
#[derive(Debug, Clone)]
pub enum QkvNames {
    Separate { q: String, k: String, v: String },
    Fused { name: String, layout: FusedQkv },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedQkv {
    /// Rows [q | k | v] (Phi-3, GPT-2 after transposing its Conv1D).
    Grouped,
    /// Rows [head 0: q k v | head 1: q k v | ...] (GPT-NeoX).
    PerHead,
}

/// How a checkpoint stores the MLP's first projection(s).
#[derive(Debug, Clone)]
pub enum UpNames {
    Gated { gate: String, up: String },
    /// One matrix with rows [gate | up] (Phi-3).
    FusedGateUp(String),
    Plain(String),
}

/// Module names (without `.weight` / `.bias`) of one layer.
#[derive(Debug, Clone)]
pub struct LayerNames {
    pub attn_norm: Option<String>,
    pub post_attn_norm: Option<String>,
    pub ffn_norm: Option<String>,
    pub post_ffn_norm: Option<String>,
    pub qkv: QkvNames,
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
    pub o: String,
    pub up: UpNames,
    pub down: String,
}

/// Module names of a whole model. `conv1d`: matrices are stored [in, out] (GPT-2's Conv1D) and
/// are transposed at load.
#[derive(Debug, Clone)]
pub struct Naming {
    pub embedding: String,
    pub positions: Option<String>,
    pub final_norm: String,
    pub head: String,
    pub conv1d: bool,
}

impl ModelSpec {
    pub fn naming(&self) -> Naming {
        match self.family {
            Family::Gpt2 => Naming {
                embedding: "transformer.wte".into(),
                positions: Some("transformer.wpe".into()),
                final_norm: "transformer.ln_f".into(),
                head: if self.tied_head { "transformer.wte" } else { "lm_head" }.into(),
                conv1d: true,
            },
            Family::GptNeox => Naming {
                embedding: "gpt_neox.embed_in".into(),
                positions: None,
                final_norm: "gpt_neox.final_layer_norm".into(),
                head: if self.tied_head { "gpt_neox.embed_in" } else { "embed_out" }.into(),
                conv1d: false,
            },
            _ => Naming {
                embedding: "model.embed_tokens".into(),
                positions: None,
                final_norm: "model.norm".into(),
                head: if self.tied_head { "model.embed_tokens" } else { "lm_head" }.into(),
                conv1d: false,
            },
        }
    }

    pub fn layer_names(&self, layer: usize) -> LayerNames {
        match self.family {
            Family::Gpt2 => {
                let p = format!("transformer.h.{layer}");
                LayerNames {
                    attn_norm: Some(format!("{p}.ln_1")),
                    post_attn_norm: None,
                    ffn_norm: Some(format!("{p}.ln_2")),
                    post_ffn_norm: None,
                    qkv: QkvNames::Fused { name: format!("{p}.attn.c_attn"), layout: FusedQkv::Grouped },
                    q_norm: None,
                    k_norm: None,
                    o: format!("{p}.attn.c_proj"),
                    up: UpNames::Plain(format!("{p}.mlp.c_fc")),
                    down: format!("{p}.mlp.c_proj"),
                }
            }
            Family::GptNeox => {
                let p = format!("gpt_neox.layers.{layer}");
                LayerNames {
                    attn_norm: Some(format!("{p}.input_layernorm")),
                    post_attn_norm: None,
                    ffn_norm: Some(format!("{p}.post_attention_layernorm")),
                    post_ffn_norm: None,
                    qkv: QkvNames::Fused { name: format!("{p}.attention.query_key_value"), layout: FusedQkv::PerHead },
                    q_norm: None,
                    k_norm: None,
                    o: format!("{p}.attention.dense"),
                    up: UpNames::Plain(format!("{p}.mlp.dense_h_to_4h")),
                    down: format!("{p}.mlp.dense_4h_to_h"),
                }
            }
            family => {
                let p = format!("model.layers.{layer}");
                let sandwich = matches!(family, Family::Gemma2 | Family::Gemma3);
                let qkv = if family == Family::Phi3 {
                    QkvNames::Fused { name: format!("{p}.self_attn.qkv_proj"), layout: FusedQkv::Grouped }
                } else {
                    QkvNames::Separate {
                        q: format!("{p}.self_attn.q_proj"),
                        k: format!("{p}.self_attn.k_proj"),
                        v: format!("{p}.self_attn.v_proj"),
                    }
                };
                let up = if family == Family::Phi3 {
                    UpNames::FusedGateUp(format!("{p}.mlp.gate_up_proj"))
                } else {
                    UpNames::Gated { gate: format!("{p}.mlp.gate_proj"), up: format!("{p}.mlp.up_proj") }
                };
                let qk = self.qk_norm != QkNorm::None;
                LayerNames {
                    // OLMo 2 has no pre-norms: its post_attention_layernorm normalises the attention output.
                    attn_norm: self.norms.pre.then(|| format!("{p}.input_layernorm")),
                    post_attn_norm: self.norms.post.then(|| format!("{p}.post_attention_layernorm")),
                    ffn_norm: self.norms.pre.then(|| {
                        if sandwich { format!("{p}.pre_feedforward_layernorm") } else { format!("{p}.post_attention_layernorm") }
                    }),
                    post_ffn_norm: self.norms.post.then(|| format!("{p}.post_feedforward_layernorm")),
                    qkv,
                    q_norm: qk.then(|| format!("{p}.self_attn.q_norm")),
                    k_norm: qk.then(|| format!("{p}.self_attn.k_norm")),
                    o: format!("{p}.self_attn.o_proj"),
                    up,
                    down: format!("{p}.mlp.down_proj"),
                }
            }
        }
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
    /// The first of `keys` present (families name the same thing differently).
    fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for key in keys {
            if let Some(v) = self.opt_usize(key)? {
                return Ok(v);
            }
        }
        Err(Error::bad_input(format!("{}: missing \"{}\"", self.path.display(), keys[0])))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                Error::bad_input(format!("{}: \"{key}\" should be a non-negative integer, found {v}", self.path.display()))
            }),
        }
    }
    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(|x| Some(x as f32)).ok_or_else(|| {
                Error::bad_input(format!("{}: \"{key}\" should be a number, found {v}", self.path.display()))
            }),
        }
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        Ok(self.opt_f32(key)?.unwrap_or(default))
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
            "{}: {what}. perplex refuses rather than compute numbers that differ from the reference; \
             please report the model so support can be added.",
            self.path.display()
        ))
    }

    fn implausible(&self, what: String) -> Error {
        Error::bad_input(format!("{}: {what}; the file is corrupt or not a model's config.json", self.path.display()))
    }

    fn activation(&self, keys: &[&str], default: &str) -> Result<Activation> {
        let name = keys.iter().find_map(|k| self.str(k)).unwrap_or(default);
        Activation::from_hf(name).ok_or_else(|| self.unsupported(format!("activation \"{name}\" (supported: silu, gelu, gelu_new, gelu_pytorch_tanh)")))
    }

    /// The rotary frequency rule: transformers 5's `rope_parameters` or the classic
    /// `rope_theta` + `rope_scaling`.
    fn rope(&self, theta_keys: &[&str], default_theta: f32, rotary_dim: usize) -> Result<RopeSpec> {
        let parameters = self.json.get("rope_parameters").filter(|v| v.is_object());
        let mut theta = parameters.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()).map(|t| t as f32);
        for key in theta_keys {
            if theta.is_none() {
                theta = self.opt_f32(key)?;
            }
        }
        let scaling = match parameters.or_else(|| self.json.get("rope_scaling")) {
            None | Some(Value::Null) => RopeScaling::None,
            Some(s) => {
                let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
                let num = |key: &str| -> Result<f32> {
                    s.get(key).and_then(|v| v.as_f64()).map(|x| x as f32).ok_or_else(|| {
                        Error::bad_input(format!("{}: rope_scaling \"{kind}\" needs \"{key}\"", self.path.display()))
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
                    other => return Err(self.unsupported(format!("rope_scaling type \"{other}\" (supported: linear, llama3)"))),
                }
            }
        };
        Ok(RopeSpec { theta: theta.unwrap_or(default_theta), rotary_dim, scaling })
    }
}

/// The most layers a config may declare (the largest released models have under 200).
const MAX_LAYERS: usize = 1 << 16;
/// The most dimensions per attention head (released models use at most 256).
const MAX_HEAD_DIM: usize = 1 << 16;

/// Reads `config.json` of a model directory into a [`ModelSpec`].
pub fn load_spec(dir: &Path) -> Result<ModelSpec> {
    let path = dir.join("config.json");
    spec_from_config(read_json(&path)?, &path)
}

/// A [`ModelSpec`] from config.json contents (`path` names the source in errors: a config file,
/// or the GGUF file whose metadata it was built from).
pub fn spec_from_config(json: Value, path: &Path) -> Result<ModelSpec> {
    let config = Config { json, path };
    let model_type = config
        .str("model_type")
        .ok_or_else(|| Error::bad_input(format!("{}: missing \"model_type\"", path.display())))?
        .to_string();
    let family = Family::from_model_type(&model_type).ok_or_else(|| {
        Error::bad_input(format!(
            "{}: model_type \"{model_type}\" is not supported; supported families: {}",
            path.display(),
            SUPPORTED_FAMILIES.join(", ")
        ))
    })?;
    parse(&config, family, model_type)
}

fn parse(config: &Config, family: Family, model_type: String) -> Result<ModelSpec> {
    use Family::*;
    let hidden = config.usize_any(&["hidden_size", "n_embd"])?;
    let layers = config.usize_any(&["num_hidden_layers", "n_layer"])?;
    let q_heads = config.usize_any(&["num_attention_heads", "n_head"])?;
    let kv_heads = config.opt_usize("num_key_value_heads")?.unwrap_or(q_heads);
    if q_heads == 0 || kv_heads == 0 || q_heads % kv_heads != 0 {
        return Err(config.unsupported(format!("{q_heads} attention heads cannot be grouped over {kv_heads} key/value heads")));
    }
    let head_dim = config.opt_usize("head_dim")?.unwrap_or(hidden / q_heads);
    let max_positions = config.opt_usize("max_position_embeddings")?.or(config.opt_usize("n_positions")?).unwrap_or(2048);
    let intermediate = match family {
        Gpt2 => match config.opt_usize("n_inner")? {
            Some(n) => n,
            None => hidden.checked_mul(4).ok_or_else(|| config.implausible(format!("hidden size {hidden}")))?,
        },
        _ => config.usize("intermediate_size")?,
    };
    // Per-layer and per-dimension tables are built from these counts before any weight is read,
    // so counts no checkpoint could have are refused here, before anything is allocated for them.
    if layers > MAX_LAYERS {
        return Err(config.implausible(format!("{layers} layers (perplex reads at most {MAX_LAYERS})")));
    }
    if head_dim > MAX_HEAD_DIM {
        return Err(config.implausible(format!("{head_dim} dimensions per attention head (perplex reads at most {MAX_HEAD_DIM})")));
    }
    let gemma = matches!(family, Gemma | Gemma2 | Gemma3);

    let (norm, norm_eps, norm_bias) = match family {
        Gpt2 => (NormKind::Layer, config.f32_or("layer_norm_epsilon", 1e-5)?, true),
        GptNeox => (NormKind::Layer, config.f32_or("layer_norm_eps", 1e-5)?, true),
        _ => (NormKind::Rms, config.f32_or("rms_norm_eps", 1e-6)?, false),
    };
    let activation = match family {
        Gpt2 => config.activation(&["activation_function"], "gelu_new")?,
        GptNeox => config.activation(&["hidden_act"], "gelu")?,
        Gemma | Gemma2 | Gemma3 => config.activation(&["hidden_activation", "hidden_act"], "gelu_pytorch_tanh")?,
        _ => config.activation(&["hidden_act"], "silu")?,
    };

    // Rotary tables and per-layer attention.
    let partial = config.opt_f32("partial_rotary_factor")?.or(config.opt_f32("rotary_pct")?).unwrap_or(1.0);
    if partial != 1.0 && family != GptNeox {
        return Err(config.unsupported(format!("partial_rotary_factor {partial} in a {model_type} model")));
    }
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(config.implausible(format!("a rotary fraction (partial_rotary_factor / rotary_pct) of {partial}, not in (0, 1]")));
    }
    let rotary_dim = (head_dim as f32 * partial) as usize;
    let mut ropes = Vec::new();
    if family != Gpt2 {
        ropes.push(config.rope(&["rope_theta", "rotary_emb_base"], 10000.0, rotary_dim)?);
    }
    let sliding = config.opt_usize("sliding_window")?;
    let layer_attention: Vec<LayerAttention> = match family {
        Mistral | Phi3 => (0..layers).map(|_| LayerAttention { sliding_window: sliding, rope: 0 }).collect(),
        // Gemma 2 alternates: even layers local, odd layers global.
        Gemma2 => (0..layers).map(|i| LayerAttention { sliding_window: sliding.filter(|_| i % 2 == 0), rope: 0 }).collect(),
        Gemma3 => {
            // Local layers use their own RoPE base and no scaling; global layers the configured rule.
            ropes.push(RopeSpec { theta: config.f32_or("rope_local_base_freq", 10000.0)?, rotary_dim, scaling: RopeScaling::None });
            let types: Vec<bool> = match config.json.get("layer_types").and_then(|v| v.as_array()) {
                Some(types) => types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect(),
                None => {
                    let pattern = config.opt_usize("sliding_window_pattern")?.unwrap_or(6);
                    if pattern == 0 {
                        return Err(config.implausible("sliding_window_pattern 0 (every n-th layer is global: n must be at least 1)".into()));
                    }
                    (0..layers).map(|i| (i + 1) % pattern != 0).collect()
                }
            };
            if types.len() != layers {
                return Err(config.unsupported(format!("{} layer_types for {layers} layers", types.len())));
            }
            types.iter().map(|&local| LayerAttention { sliding_window: sliding.filter(|_| local), rope: if local { 1 } else { 0 } }).collect()
        }
        Qwen2 => {
            if config.bool_or("use_sliding_window", false)? {
                return Err(config.unsupported("use_sliding_window in a qwen2 model".into()));
            }
            (0..layers).map(|_| LayerAttention { sliding_window: None, rope: 0 }).collect()
        }
        _ => (0..layers).map(|_| LayerAttention { sliding_window: None, rope: 0 }).collect(),
    };

    let attention_bias = config.bool_or("attention_bias", false)?;
    let (qkv_bias, o_bias, mlp_bias) = match family {
        Gpt2 | GptNeox => (true, true, true),
        Qwen2 => (true, false, false),
        Llama | Mistral | Olmo2 | Gemma | Gemma2 | Gemma3 => (attention_bias, attention_bias, config.bool_or("mlp_bias", false)?),
        Phi3 => (false, false, false),
    };
    let vocab_size = config.usize("vocab_size")?;
    let learned_positions = family == Gpt2;
    let gated_mlp = !matches!(family, Gpt2 | GptNeox);
    // Every size the loader derives from these counts (parameter count, projection widths) must
    // be a number: a config whose model could not exist in memory is refused here.
    let sizes = || -> Option<usize> {
        let qkv_width = q_heads.checked_add(kv_heads.checked_mul(2)?)?.checked_mul(head_dim)?;
        let q_width = q_heads.checked_mul(head_dim)?;
        let up_width = intermediate.checked_mul(if gated_mlp { 2 } else { 1 })?;
        let attn = hidden.checked_mul(qkv_width)?.checked_add(q_width.checked_mul(hidden)?)?;
        let mlp = hidden.checked_mul(up_width.checked_add(intermediate)?)?;
        let table = vocab_size.checked_mul(hidden)?;
        let positions = if learned_positions { max_positions.checked_mul(hidden)? } else { 0 };
        let per_layer = attn.checked_add(mlp)?.checked_mul(layers)?;
        table.checked_mul(2)?.checked_add(positions)?.checked_add(per_layer)?.checked_mul(4)
    };
    if sizes().is_none() {
        return Err(config.implausible(format!(
            "dimensions (hidden {hidden}, intermediate {intermediate}, vocabulary {vocab_size}, {layers} layers, {q_heads} heads of \
             {head_dim}) whose weights would not fit in memory"
        )));
    }
    let tied_default = matches!(family, Gpt2 | Gemma | Gemma2 | Gemma3);
    let attention_scale = match config.opt_f32("query_pre_attn_scalar")? {
        Some(scalar) if matches!(family, Gemma2 | Gemma3) => 1.0 / scalar.sqrt(),
        _ => 1.0 / (head_dim as f32).sqrt(),
    };
    // Gemma 2 caps attention scores and final logits; transformers' Gemma 3 caps only the logits
    // (it never passes attn_logit_softcapping to its attention).
    let softcap = |key: &str, families: &[Family]| -> Result<f32> {
        Ok(if families.contains(&family) { config.opt_f32(key)?.unwrap_or(0.0) } else { 0.0 })
    };
    Ok(ModelSpec {
        family,
        vocab_size,
        hidden,
        layers,
        q_heads,
        kv_heads,
        head_dim,
        intermediate,
        max_positions,
        norm,
        norm_eps,
        norm_bias,
        norm_weight_offset: if gemma { 1.0 } else { 0.0 },
        norms: NormPlacement { pre: family != Olmo2, post: matches!(family, Gemma2 | Gemma3 | Olmo2) },
        qk_norm: match family {
            Gemma3 => QkNorm::PerHead,
            Olmo2 => QkNorm::Whole,
            _ => QkNorm::None,
        },
        activation,
        gated_mlp,
        ropes,
        layer_attention,
        learned_positions,
        parallel_residual: family == GptNeox && config.bool_or("use_parallel_residual", true)?,
        qkv_bias,
        o_bias,
        mlp_bias,
        tied_head: config.bool_or("tie_word_embeddings", tied_default)?,
        embedding_scale: if gemma { (hidden as f32).sqrt() } else { 1.0 },
        attention_scale,
        attention_softcap: softcap("attn_logit_softcapping", &[Gemma2])?,
        final_softcap: softcap("final_logit_softcapping", &[Gemma2, Gemma3])?,
        model_type,
    })
}
