//! GPT-NeoX (Pythia): LayerNorm with biases, RoPE on part of each head, a plain GELU MLP, biases
//! everywhere, a fused QKV interleaved per head, and (by default) attention and MLP in parallel.

use super::{global_attention, intermediate_size, llama::LLAMA, ActivationRule, Biases, Family, NormRule, Positions};
use crate::model::names::{FusedQkv, QkvNames, TensorNames, UpNames};
use crate::model::NormKind;

pub const GPT_NEOX: Family = Family {
    model_types: &["gpt_neox"],
    norm: NormRule { kind: NormKind::Layer, bias: true, eps: |c| c.layer_norm_eps, default_eps: 1e-5, weight_offset: 0.0 },
    activation: ActivationRule { configured: |c| c.hidden_act.as_deref(), default: "gelu" },
    gated_mlp: false,
    intermediate: intermediate_size,
    positions: Positions::PartialRotary,
    layer_attention: global_attention,
    biases: Biases::All,
    parallel_residual: true,
    tensors: TensorNames {
        embedding: "gpt_neox.embed_in",
        positions: None,
        final_norm: "gpt_neox.final_layer_norm",
        head: "embed_out",
        conv1d: false,
        optional_prefix: None,
        layers: "gpt_neox.layers",
        attn_norm: "input_layernorm",
        post_attn_norm: None,
        ffn_norm: "post_attention_layernorm",
        post_ffn_norm: None,
        qkv: QkvNames::Fused { name: "attention.query_key_value", layout: FusedQkv::PerHead },
        q_norm: None,
        k_norm: None,
        o: "attention.dense",
        up: UpNames::Plain("mlp.dense_h_to_4h"),
        down: "mlp.dense_4h_to_h",
    },
    gguf: None,
    ..LLAMA
};
