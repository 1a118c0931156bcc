//! Phi-3: Llama with fused projections (one [q | k | v] matrix, one [gate | up] matrix), no
//! biases, and sliding-window attention in every layer.

use super::{llama, sliding_attention, Biases, Family};
use crate::model::names::{FusedQkv, QkvNames, TensorNames, UpNames};

pub const PHI3: Family = Family {
    model_types: &["phi3"],
    layer_attention: sliding_attention,
    biases: Biases::None,
    tensors: TensorNames {
        qkv: QkvNames::Fused { name: "self_attn.qkv_proj", layout: FusedQkv::Grouped },
        up: UpNames::FusedGateUp("mlp.gate_up_proj"),
        ..llama::TENSORS
    },
    gguf: None,
    ..llama::LLAMA
};
