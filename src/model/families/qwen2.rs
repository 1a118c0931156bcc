//! Qwen 2 (and 2.5): Llama with biases on the query, key and value projections.

use super::{global_attention, llama::LLAMA, Biases, Family, Gguf};
use crate::error::Result;
use crate::model::config::Config;
use crate::model::{LayerAttention, RopeSpec};

pub const QWEN2: Family = Family {
    model_types: &["qwen2"],
    layer_attention,
    biases: Biases::Qkv,
    gguf: Some(Gguf { architecture: "qwen2", permuted_qk: false, config: |_, _| Ok(()) }),
    ..LLAMA
};

/// Global attention; Qwen 2's sliding window (which applies only above `max_window_layers`) is not
/// implemented, so a config that switches it on is refused.
fn layer_attention(config: &Config, layers: usize, ropes: &mut Vec<RopeSpec>) -> Result<Vec<LayerAttention>> {
    if config.use_sliding_window.unwrap_or(false) {
        return Err(config.unsupported("use_sliding_window in a qwen2 model".into()));
    }
    global_attention(config, layers, ropes)
}
