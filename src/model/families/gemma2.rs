//! Gemma 2: Gemma with sandwich norms (before and after both attention and MLP), sliding-window
//! attention on even layers, soft-capped attention scores and logits, and queries scaled by
//! `query_pre_attn_scalar`.

use super::{gemma::GEMMA, llama, Family, Gguf};
use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::model::gguf::GgufFile;
use crate::model::names::TensorNames;
use crate::model::{LayerAttention, NormPlacement, RopeSpec};

pub const GEMMA2: Family = Family {
    model_types: &["gemma2"],
    norms: NormPlacement { pre: true, post: true },
    layer_attention,
    query_pre_attn_scalar: true,
    attention_softcap: true,
    final_softcap: true,
    tensors: SANDWICH_TENSORS,
    gguf: Some(Gguf { architecture: "gemma2", permuted_qk: false, config: gguf_config }),
    ..GEMMA
};

/// Llama's names, except that with a norm after attention the MLP's pre-norm has its own name.
pub const SANDWICH_TENSORS: TensorNames = TensorNames { ffn_norm: "pre_feedforward_layernorm", ..llama::TENSORS };

/// Even layers attend within the window, odd layers globally.
fn layer_attention(config: &Config, layers: usize, _: &mut Vec<RopeSpec>) -> Result<Vec<LayerAttention>> {
    Ok((0..layers).map(|i| LayerAttention { sliding_window: config.sliding_window.filter(|_| i % 2 == 0), rope: 0 }).collect())
}

/// llama.cpp's Gemma 2 defaults: a 4096-token window, soft-caps 50 (attention) and 30 (logits).
fn gguf_config(file: &GgufFile, config: &mut Config) -> Result<()> {
    sandwich_gguf_config(file, config, 46)?;
    config.sliding_window = Some(file.opt_usize(&file.arch_key("attention.sliding_window"))?.unwrap_or(4096));
    config.attn_logit_softcapping = Some(file.opt_f32(&file.arch_key("attn_logit_softcapping"))?.unwrap_or(50.0));
    config.final_logit_softcapping = config.final_logit_softcapping.or(Some(30.0));
    Ok(())
}

/// What Gemma 2 and 3 files share. llama.cpp (src/models/gemma2.cpp, gemma3.cpp) scales queries
/// by 1/sqrt(hidden / heads) in the 27B models (`big_layers` layers), 1/sqrt(head_dim) in the
/// others, which is transformers' `query_pre_attn_scalar` of the released configs.
pub fn sandwich_gguf_config(file: &GgufFile, config: &mut Config, big_layers: usize) -> Result<()> {
    let (hidden, heads, layers) = (config.hidden_size, config.num_attention_heads, config.num_hidden_layers);
    let per_head = hidden.zip(heads).and_then(|(hidden, heads)| hidden.checked_div(heads)).ok_or_else(|| {
        let key = file.arch_key("attention.head_count");
        Error::bad_input(format!("{}: '{key}' is 0: a model needs at least one attention head", file.path().display()))
    })?;
    let scalar = if layers == Some(big_layers) { per_head } else { config.head_dim.unwrap_or(per_head) };
    config.query_pre_attn_scalar = Some(scalar as f64 as f32);
    if let Some(cap) = file.opt_f32(&file.arch_key("final_logit_softcapping"))? {
        config.final_logit_softcapping = Some(cap);
    }
    Ok(())
}
