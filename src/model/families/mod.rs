//! Model families: one file each, describing the family as data over the shared builders here
//! (a [`ModelSpec`] from a [`Config`], tensor names from [`TensorNames`], a GGUF file's metadata
//! into a [`Config`] in gguf/metadata.rs). [`FAMILIES`] lists them; everything that names the
//! supported families or GGUF architectures reads it.
//!
//! Config fields that change the numbers and that the engine does not implement are refused,
//! never ignored.
//!
//! Adding a family: a new file here with its `Family` (usually a known family with what differs,
//! as `Family { .., ..llama::LLAMA }`), and its line in [`FAMILIES`].

mod gemma;
mod gemma2;
mod gemma3;
mod gpt2;
mod gpt_neox;
mod llama;
mod mistral;
mod olmo2;
mod phi3;
mod qwen2;

use super::config::{Config, RopeScalingConfig};
use super::gguf::GgufFile;
use super::names::TensorNames;
use super::{Activation, LayerAttention, ModelSpec, NormKind, NormPlacement, QkNorm, RopeScaling, RopeSpec};
use crate::error::{Error, Result};
use std::path::Path;

/// Every family perplex reads, in the order messages list them.
pub const FAMILIES: &[&Family] = &[
    &llama::LLAMA,
    &mistral::MISTRAL,
    &qwen2::QWEN2,
    &phi3::PHI3,
    &gemma::GEMMA,
    &gemma2::GEMMA2,
    &gemma3::GEMMA3,
    &olmo2::OLMO2,
    &gpt2::GPT2,
    &gpt_neox::GPT_NEOX,
];

/// The most layers a config may declare (the largest released models have under 200).
pub const MAX_LAYERS: usize = 1 << 16;
/// The most dimensions per attention head (released models use at most 256).
const MAX_HEAD_DIM: usize = 1 << 16;

/// What perplex knows about one model family.
pub struct Family {
    /// transformers' `model_type`s of the family; the first names it.
    pub model_types: &'static [&'static str],
    pub norm: NormRule,
    /// Which norms a block has around its attention and MLP.
    pub norms: NormPlacement,
    pub qk_norm: QkNorm,
    pub activation: ActivationRule,
    /// Gated MLP (act(gate) * up -> down) rather than plain (act(up) -> down).
    pub gated_mlp: bool,
    /// The MLP's width (`intermediate_size` unless the family says otherwise).
    pub intermediate: fn(&Config, usize) -> Result<usize>,
    pub positions: Positions,
    /// Each layer's attention (key window, rotary table); may add rotary tables to the first.
    pub layer_attention: fn(&Config, usize, &mut Vec<RopeSpec>) -> Result<Vec<LayerAttention>>,
    pub biases: Biases,
    /// `tie_word_embeddings` when the config does not say.
    pub tied_by_default: bool,
    /// Hidden states after the embedding are multiplied by sqrt(hidden) (Gemma).
    pub scaled_embedding: bool,
    /// `query_pre_attn_scalar` replaces head_dim in the attention scale (Gemma 2/3).
    pub query_pre_attn_scalar: bool,
    /// `attn_logit_softcapping` is applied (Gemma 2; transformers' Gemma 3 never passes it on).
    pub attention_softcap: bool,
    /// `final_logit_softcapping` is applied (Gemma 2/3).
    pub final_softcap: bool,
    /// `use_parallel_residual` is read, true by default (GPT-NeoX).
    pub parallel_residual: bool,
    pub tensors: TensorNames,
    /// How llama.cpp stores the family, for those perplex reads from GGUF files.
    pub gguf: Option<Gguf>,
}

/// The family's norm.
pub struct NormRule {
    pub kind: NormKind,
    /// Norms carry a bias.
    pub bias: bool,
    /// The config field holding epsilon, and its default.
    pub eps: fn(&Config) -> Option<f32>,
    pub default_eps: f32,
    /// Added to norm weights before use (Gemma stores `weight` and applies `1 + weight`).
    pub weight_offset: f32,
}

/// The config field(s) naming the activation, and the default.
pub struct ActivationRule {
    pub configured: fn(&Config) -> Option<&str>,
    pub default: &'static str,
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// RoPE on the whole head.
    Rotary,
    /// RoPE on the leading `partial_rotary_factor` of each head (GPT-NeoX).
    PartialRotary,
    /// Learned absolute position embeddings added to the token embeddings (GPT-2).
    Learned,
}

/// Which projections carry a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Biases {
    /// Every projection (GPT-2, GPT-NeoX).
    All,
    /// Query, key and value only (Qwen 2).
    Qkv,
    None,
    /// As `attention_bias` (q, k, v, o) and `mlp_bias` say, none by default.
    Configured,
}

/// How llama.cpp's converter writes a family to GGUF.
pub struct Gguf {
    /// `general.architecture`.
    pub architecture: &'static str,
    /// convert_hf_to_gguf.py permuted the rows of the q/k projections (weights and biases) so
    /// that rotary pairs are adjacent.
    pub permuted_qk: bool,
    /// What this architecture's metadata adds to the keys all of them share, with llama.cpp's
    /// defaults and rules where transformers leaves a field to the model class.
    pub config: fn(&GgufFile, &mut Config) -> Result<()>,
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The family of a config.json's `model_type`.
pub fn by_model_type(model_type: Option<&str>, source: &Path) -> Result<&'static Family> {
    let model_type = model_type.ok_or_else(|| Error::bad_input(format!("{}: missing \"model_type\"", source.display())))?;
    FAMILIES.iter().copied().find(|f| f.model_types.contains(&model_type)).ok_or_else(|| {
        let supported: Vec<&str> = FAMILIES.iter().map(|f| f.name()).collect();
        Error::bad_input(format!(
            "{}: model_type \"{model_type}\" is not supported; supported families: {}",
            source.display(),
            supported.join(", ")
        ))
    })
}

/// The family of a GGUF file's `general.architecture`, and how llama.cpp stores it.
pub fn by_gguf_architecture(architecture: &str, source: &Path) -> Result<(&'static Family, &'static Gguf)> {
    let found = FAMILIES.iter().find_map(|f| f.gguf.as_ref().filter(|g| g.architecture == architecture).map(|g| (*f, g)));
    found.ok_or_else(|| {
        let supported: Vec<&str> = FAMILIES.iter().filter_map(|f| f.gguf.as_ref()).map(|g| g.architecture).collect();
        Error::bad_input(format!(
            "{}: unknown architecture '{architecture}': perplex reads GGUF files of the architectures {}",
            source.display(),
            supported.join(", ")
        ))
    })
}

/// Layers that all attend to every earlier position.
pub fn global_attention(_: &Config, layers: usize, _: &mut Vec<RopeSpec>) -> Result<Vec<LayerAttention>> {
    Ok((0..layers).map(|_| LayerAttention { sliding_window: None, rope: 0 }).collect())
}

/// Layers that all attend within `sliding_window`, if the config sets one.
pub fn sliding_attention(config: &Config, layers: usize, _: &mut Vec<RopeSpec>) -> Result<Vec<LayerAttention>> {
    Ok((0..layers).map(|_| LayerAttention { sliding_window: config.sliding_window, rope: 0 }).collect())
}

/// The MLP width of most families.
pub fn intermediate_size(config: &Config, _hidden: usize) -> Result<usize> {
    config.require(config.intermediate_size, "intermediate_size")
}

impl Family {
    /// The family's name: its first `model_type`.
    pub fn name(&self) -> &'static str {
        self.model_types[0]
    }

    /// The spec of a model of this family.
    pub fn spec(&'static self, config: &Config) -> Result<ModelSpec> {
        let model_type = config.model_type.clone().unwrap_or_else(|| self.name().to_string());
        let hidden = config.require(config.hidden_size, "hidden_size")?;
        let layers = config.require(config.num_hidden_layers, "num_hidden_layers")?;
        let q_heads = config.require(config.num_attention_heads, "num_attention_heads")?;
        let kv_heads = config.num_key_value_heads.unwrap_or(q_heads);
        if q_heads == 0 || kv_heads == 0 || q_heads % kv_heads != 0 {
            return Err(config.unsupported(format!("{q_heads} attention heads cannot be grouped over {kv_heads} key/value heads")));
        }
        let head_dim = config.head_dim.unwrap_or(hidden / q_heads);
        let max_positions = config.max_position_embeddings.unwrap_or(2048);
        let intermediate = (self.intermediate)(config, hidden)?;
        // Per-layer and per-dimension tables are built from these counts before any weight is
        // read, so counts no checkpoint could have are refused here, before anything is
        // allocated for them.
        if layers > MAX_LAYERS {
            return Err(config.implausible(format!("{layers} layers (perplex reads at most {MAX_LAYERS})")));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(config.implausible(format!("{head_dim} dimensions per attention head (perplex reads at most {MAX_HEAD_DIM})")));
        }
        let norm_eps = (self.norm.eps)(config).unwrap_or(self.norm.default_eps);
        let activation_name = (self.activation.configured)(config).unwrap_or(self.activation.default);
        let activation = Activation::from_hf(activation_name).ok_or_else(|| {
            config.unsupported(format!("activation \"{activation_name}\" (supported: silu, gelu, gelu_new, gelu_pytorch_tanh)"))
        })?;

        // Rotary tables and per-layer attention.
        let partial = config.partial_rotary_factor.unwrap_or(1.0);
        if partial != 1.0 && self.positions != Positions::PartialRotary {
            return Err(config.unsupported(format!("partial_rotary_factor {partial} in a {model_type} model")));
        }
        if !(partial > 0.0 && partial <= 1.0) {
            return Err(config.implausible(format!("a rotary fraction (partial_rotary_factor / rotary_pct) of {partial}, not in (0, 1]")));
        }
        let rotary_dim = (head_dim as f32 * partial) as usize;
        let mut ropes = Vec::new();
        if self.positions != Positions::Learned {
            let scaling = rope_scaling(config)?;
            ropes.push(RopeSpec { theta: config.rope_theta.unwrap_or(10000.0), rotary_dim, scaling });
        }
        let layer_attention = (self.layer_attention)(config, layers, &mut ropes)?;

        let attention_bias = config.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias, mlp_bias) = match self.biases {
            Biases::All => (true, true, true),
            Biases::Qkv => (true, false, false),
            Biases::None => (false, false, false),
            Biases::Configured => (attention_bias, attention_bias, config.mlp_bias.unwrap_or(false)),
        };
        let vocab_size = config.require(config.vocab_size, "vocab_size")?;
        let learned_positions = self.positions == Positions::Learned;
        // Every size the loader derives from these counts (parameter count, projection widths)
        // must be a number: a config whose model could not exist in memory is refused here.
        let sizes = || -> Option<usize> {
            let qkv_width = q_heads.checked_add(kv_heads.checked_mul(2)?)?.checked_mul(head_dim)?;
            let q_width = q_heads.checked_mul(head_dim)?;
            let up_width = intermediate.checked_mul(if self.gated_mlp { 2 } else { 1 })?;
            let attn = hidden.checked_mul(qkv_width)?.checked_add(q_width.checked_mul(hidden)?)?;
            let mlp = hidden.checked_mul(up_width.checked_add(intermediate)?)?;
            let table = vocab_size.checked_mul(hidden)?;
            let positions = if learned_positions { max_positions.checked_mul(hidden)? } else { 0 };
            let per_layer = attn.checked_add(mlp)?.checked_mul(layers)?;
            table.checked_mul(2)?.checked_add(positions)?.checked_add(per_layer)?.checked_mul(4)
        };
        if sizes().is_none() {
            return Err(config.implausible(format!(
                "dimensions (hidden {hidden}, intermediate {intermediate}, vocabulary {vocab_size}, {layers} layers, {q_heads} heads \
                 of {head_dim}) whose weights would not fit in memory"
            )));
        }
        let attention_scale = match config.query_pre_attn_scalar {
            Some(scalar) if self.query_pre_attn_scalar => 1.0 / scalar.sqrt(),
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        let softcap = |applied: bool, cap: Option<f32>| if applied { cap.unwrap_or(0.0) } else { 0.0 };
        Ok(ModelSpec {
            family: self,
            vocab_size,
            hidden,
            layers,
            q_heads,
            kv_heads,
            head_dim,
            intermediate,
            max_positions,
            norm: self.norm.kind,
            norm_eps,
            norm_bias: self.norm.bias,
            norm_weight_offset: self.norm.weight_offset,
            norms: self.norms,
            qk_norm: self.qk_norm,
            activation,
            gated_mlp: self.gated_mlp,
            ropes,
            layer_attention,
            learned_positions,
            parallel_residual: self.parallel_residual && config.use_parallel_residual.unwrap_or(true),
            qkv_bias,
            o_bias,
            mlp_bias,
            tied_head: config.tie_word_embeddings.unwrap_or(self.tied_by_default),
            embedding_scale: if self.scaled_embedding { (hidden as f32).sqrt() } else { 1.0 },
            attention_scale,
            attention_softcap: softcap(self.attention_softcap, config.attn_logit_softcapping),
            final_softcap: softcap(self.final_softcap, config.final_logit_softcapping),
            model_type,
        })
    }
}

/// The rotary frequency rule of `rope_scaling` (or `rope_parameters`).
fn rope_scaling(config: &Config) -> Result<RopeScaling> {
    let Some(scaling) = &config.rope_scaling else { return Ok(RopeScaling::None) };
    let RopeScalingConfig { rope_type, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = scaling;
    let kind = rope_type.as_deref().unwrap_or("default");
    let needs = |value: Option<f32>, key: &str| -> Result<f32> {
        value.ok_or_else(|| Error::bad_input(format!("{}: rope_scaling \"{kind}\" needs \"{key}\"", config.source.display())))
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: needs(*factor, "factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: needs(*factor, "factor")?,
            low_freq_factor: needs(*low_freq_factor, "low_freq_factor")?,
            high_freq_factor: needs(*high_freq_factor, "high_freq_factor")?,
            original_max_positions: needs(*original_max_position_embeddings, "original_max_position_embeddings")?,
        },
        other => return Err(config.unsupported(format!("rope_scaling type \"{other}\" (supported: linear, llama3)"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_architectures_are_unique() {
        let mut names: Vec<&str> = FAMILIES.iter().flat_map(|f| f.model_types.iter().copied()).collect();
        let mut architectures: Vec<&str> = FAMILIES.iter().filter_map(|f| f.gguf.as_ref()).map(|g| g.architecture).collect();
        for list in [&mut names, &mut architectures] {
            let count = list.len();
            list.sort();
            list.dedup();
            assert_eq!(list.len(), count, "a name is claimed by two families: {list:?}");
        }
    }

    /// A family whose blocks have a norm names it, so that no norm is silently left out.
    #[test]
    fn every_norm_a_family_has_is_named() {
        for family in FAMILIES {
            let t = &family.tensors;
            if family.norms.post {
                assert!(t.post_attn_norm.is_some() && t.post_ffn_norm.is_some(), "{family:?}: post-norms without names");
            }
            if family.qk_norm != QkNorm::None {
                assert!(t.q_norm.is_some() && t.k_norm.is_some(), "{family:?}: QK-norm without names");
            }
            assert_eq!(family.positions == Positions::Learned, t.positions.is_some(), "{family:?}: learned positions and their table");
        }
    }
}
