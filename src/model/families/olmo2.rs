//! OLMo 2: Llama whose norms follow attention and MLP (on their outputs, before the residual
//! add) instead of preceding them, with a norm over the whole query and key projections.

use super::{llama::LLAMA, Family};
use crate::model::{NormPlacement, QkNorm};

pub const OLMO2: Family = Family {
    model_types: &["olmo2"],
    norms: NormPlacement { pre: false, post: true },
    qk_norm: QkNorm::Whole,
    gguf: None,
    ..LLAMA
};
