//! Gemma: Llama with a GELU (tanh) MLP, norm weights applied as `1 + weight`, embeddings scaled
//! by sqrt(hidden) and a head tied to the embedding.

use super::{llama::LLAMA, ActivationRule, Family, Gguf, NormRule};
use crate::model::NormKind;

pub const GEMMA: Family = Family {
    model_types: &["gemma"],
    norm: NormRule { kind: NormKind::Rms, bias: false, eps: |c| c.rms_norm_eps, default_eps: 1e-6, weight_offset: 1.0 },
    activation: ActivationRule {
        configured: |c| c.hidden_activation.as_deref().or(c.hidden_act.as_deref()),
        default: "gelu_pytorch_tanh",
    },
    tied_by_default: true,
    scaled_embedding: true,
    gguf: Some(Gguf { architecture: "gemma", permuted_qk: false, config: |_, _| Ok(()) }),
    ..LLAMA
};
