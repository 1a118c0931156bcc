//! Llama (transformers' `LlamaForCausalLM`): RMSNorm before attention and MLP, RoPE, a gated
//! SiLU MLP, optional biases. Most families are Llama with a few differences, and are written
//! here as such.

use super::{global_attention, intermediate_size, ActivationRule, Biases, Family, Gguf, NormRule, Positions};
use crate::error::Result;
use crate::model::config::Config;
use crate::model::gguf::GgufFile;
use crate::model::names::{QkvNames, TensorNames, UpNames};
use crate::model::{NormKind, NormPlacement, QkNorm};

pub const LLAMA: Family = Family {
    model_types: &["llama"],
    norm: NormRule { kind: NormKind::Rms, bias: false, eps: |c| c.rms_norm_eps, default_eps: 1e-6, weight_offset: 0.0 },
    norms: NormPlacement { pre: true, post: false },
    qk_norm: QkNorm::None,
    activation: ActivationRule { configured: |c| c.hidden_act.as_deref(), default: "silu" },
    gated_mlp: true,
    intermediate: intermediate_size,
    positions: Positions::Rotary,
    layer_attention: global_attention,
    biases: Biases::Configured,
    tied_by_default: false,
    scaled_embedding: false,
    query_pre_attn_scalar: false,
    attention_softcap: false,
    final_softcap: false,
    parallel_residual: false,
    tensors: TENSORS,
    gguf: Some(Gguf { architecture: "llama", permuted_qk: true, config: gguf_config }),
};

/// transformers' names for Llama-style models, which most families share.
pub const TENSORS: TensorNames = TensorNames {
    embedding: "model.embed_tokens",
    positions: None,
    final_norm: "model.norm",
    head: "lm_head",
    conv1d: false,
    optional_prefix: None,
    layers: "model.layers",
    attn_norm: "input_layernorm",
    post_attn_norm: Some("post_attention_layernorm"),
    // The MLP's pre-norm is called post_attention_layernorm: it sits right after attention.
    ffn_norm: "post_attention_layernorm",
    post_ffn_norm: Some("post_feedforward_layernorm"),
    qkv: QkvNames::Separate { q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj" },
    q_norm: Some("self_attn.q_norm"),
    k_norm: Some("self_attn.k_norm"),
    o: "self_attn.o_proj",
    up: UpNames::Gated { gate: "mlp.gate_proj", up: "mlp.up_proj" },
    down: "mlp.down_proj",
};

/// transformers' GGUF loader: `rope.dimension_count` is the head size when no key length is
/// given, and the biases are there if the tensors are.
fn gguf_config(file: &GgufFile, config: &mut Config) -> Result<()> {
    if config.head_dim.is_none() {
        config.head_dim = file.opt_usize(&file.arch_key("rope.dimension_count"))?;
    }
    config.attention_bias = Some(file.has_tensor("blk.0.attn_q.bias"));
    config.mlp_bias = Some(file.has_tensor("blk.0.ffn_up.bias"));
    Ok(())
}
