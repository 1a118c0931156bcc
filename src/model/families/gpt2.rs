//! GPT-2: LayerNorm with biases, learned absolute positions instead of RoPE, a plain GELU MLP,
//! biases everywhere, and matrices stored [in, out] (its Conv1D modules).

use super::{global_attention, llama::LLAMA, ActivationRule, Biases, Family, NormRule, Positions};
use crate::error::Result;
use crate::model::config::Config;
use crate::model::names::{FusedQkv, QkvNames, TensorNames, UpNames};
use crate::model::NormKind;

pub const GPT2: Family = Family {
    model_types: &["gpt2"],
    norm: NormRule { kind: NormKind::Layer, bias: true, eps: |c| c.layer_norm_epsilon, default_eps: 1e-5, weight_offset: 0.0 },
    activation: ActivationRule { configured: |c| c.activation_function.as_deref(), default: "gelu_new" },
    gated_mlp: false,
    intermediate,
    positions: Positions::Learned,
    layer_attention: global_attention,
    biases: Biases::All,
    tied_by_default: true,
    tensors: TensorNames {
        embedding: "transformer.wte",
        positions: Some("transformer.wpe"),
        final_norm: "transformer.ln_f",
        head: "lm_head",
        conv1d: true,
        optional_prefix: Some("transformer."),
        layers: "transformer.h",
        attn_norm: "ln_1",
        post_attn_norm: None,
        ffn_norm: "ln_2",
        post_ffn_norm: None,
        qkv: QkvNames::Fused { name: "attn.c_attn", layout: FusedQkv::Grouped },
        q_norm: None,
        k_norm: None,
        o: "attn.c_proj",
        up: UpNames::Plain("mlp.c_fc"),
        down: "mlp.c_proj",
    },
    gguf: None,
    ..LLAMA
};

/// `n_inner`, four times the hidden size by default.
fn intermediate(config: &Config, hidden: usize) -> Result<usize> {
    match config.n_inner {
        Some(n) => Ok(n),
        None => hidden.checked_mul(4).ok_or_else(|| config.implausible(format!("hidden size {hidden}"))),
    }
}
