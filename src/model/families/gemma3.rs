//! Gemma 3: Gemma 2's sandwich norms with a norm on each query and key head, a pattern of local
//! (sliding-window) and global layers, and a RoPE base of their own for the local layers.
//! transformers' Gemma 3 caps only the final logits (it never passes `attn_logit_softcapping` to
//! its attention).

use super::gemma2::{sandwich_gguf_config, GEMMA2};
use super::{Family, Gguf};
use crate::error::Result;
use crate::model::config::Config;
use crate::model::gguf::{Array, GgufFile, Value};
use crate::model::{LayerAttention, QkNorm, RopeScaling, RopeSpec};

pub const GEMMA3: Family = Family {
    // transformers' GGUF loader reads gemma3 files as the text-only model.
    model_types: &["gemma3_text", "gemma3"],
    qk_norm: QkNorm::PerHead,
    layer_attention,
    attention_softcap: false,
    gguf: Some(Gguf { architecture: "gemma3", permuted_qk: false, config: gguf_config }),
    ..GEMMA2
};

/// Local layers use their own RoPE base and no scaling (rotary table 1); global layers the
/// configured rule (table 0).
fn layer_attention(config: &Config, layers: usize, ropes: &mut Vec<RopeSpec>) -> Result<Vec<LayerAttention>> {
    let rotary_dim = ropes[0].rotary_dim;
    ropes.push(RopeSpec { theta: config.rope_local_base_freq.unwrap_or(10000.0), rotary_dim, scaling: RopeScaling::None });
    let local: Vec<bool> = match &config.layer_types {
        Some(types) => types.clone(),
        None => {
            let pattern = config.sliding_window_pattern.unwrap_or(6);
            if pattern == 0 {
                return Err(config.implausible("sliding_window_pattern 0 (every n-th layer is global: n must be at least 1)".into()));
            }
            (0..layers).map(|i| (i + 1) % pattern != 0).collect()
        }
    };
    if local.len() != layers {
        return Err(config.unsupported(format!("{} layer_types for {layers} layers", local.len())));
    }
    let attention = |local: bool| LayerAttention { sliding_window: config.sliding_window.filter(|_| local), rope: usize::from(local) };
    Ok(local.into_iter().map(attention).collect())
}

/// The window and which layers use it, as llama.cpp decides, and the local layers' RoPE base.
fn gguf_config(file: &GgufFile, config: &mut Config) -> Result<()> {
    sandwich_gguf_config(file, config, 62)?;
    let layers = config.num_hidden_layers.unwrap_or(0);
    let window = file.opt_usize(&file.arch_key("attention.sliding_window"))?.filter(|&w| w > 0);
    config.layer_types = Some(sliding_layers(file, layers, window.is_some())?);
    config.sliding_window = window;
    config.rope_local_base_freq = Some(file.opt_f32(&file.arch_key("rope.freq_base_swa"))?.unwrap_or(10000.0));
    Ok(())
}

/// Which layers attend locally, as llama.cpp decides (`load_swa_pattern`): a per-layer array in
/// `attention.sliding_window_pattern`, or a period n (default 6) where every n-th layer is global.
fn sliding_layers(file: &GgufFile, layers: usize, sliding: bool) -> Result<Vec<bool>> {
    if !sliding {
        return Ok(vec![false; layers]);
    }
    let key = file.arch_key("attention.sliding_window_pattern");
    match file.metadata(&key) {
        Some(Value::Array(Array::Bool(flags))) if flags.len() == layers => Ok(flags.clone()),
        Some(Value::Array(_)) => Err(file.wrong_type(&key, &format!("a period or {layers} per-layer flags"))),
        _ => {
            let period = file.opt_usize(&key)?.unwrap_or(6);
            Ok((0..layers).map(|i| period == 0 || i % period < period - 1).collect())
        }
    }
}
