//! Mistral: Llama with sliding-window attention in every layer.

use super::{llama::LLAMA, sliding_attention, Family};

pub const MISTRAL: Family = Family { model_types: &["mistral"], layer_attention: sliding_attention, gguf: None, ..LLAMA };
