//! The weight-name map: which tensors a [`ModelSpec`] needs, with their shapes, loaded into any
//! storage (GPU buffers for the engine, host vectors for the CPU reference) by one function.

use super::{Checkpoint, LayerTensor, ModelSpec, TensorData};
use crate::error::{Error, Result};

pub struct LayerWeights<M, V> {
    pub attn_norm: V,
    pub q: M,
    pub k: M,
    pub v: M,
    /// q | k | v biases, laid out like the fused QKV activation.
    pub qkv_bias: Option<V>,
    pub o: M,
    pub o_bias: Option<V>,
    pub ffn_norm: V,
    /// Present for gated MLPs; its output sits beside `up`'s.
    pub gate: Option<M>,
    pub up: M,
    /// gate | up biases, laid out like the fused gate/up activation.
    pub up_bias: Option<V>,
    pub down: M,
    pub down_bias: Option<V>,
}

pub struct ModelWeights<M, V> {
    pub embedding: M,
    pub layers: Vec<LayerWeights<M, V>>,
    pub final_norm: V,
    /// None when the head is tied to the embedding.
    pub head: Option<M>,
}

impl<M, V> ModelWeights<M, V> {
    pub fn head(&self) -> &M {
        self.head.as_ref().unwrap_or(&self.embedding)
    }
}

/// Loads every tensor `spec` needs. `matrix` receives 2-D weights in their stored width;
/// `vector` receives norm weights and biases widened to f32.
pub fn load_weights<M, V>(
    spec: &ModelSpec,
    checkpoint: &Checkpoint,
    mut matrix: impl FnMut(&TensorData) -> Result<M>,
    mut vector: impl FnMut(&str, Vec<f32>) -> Result<V>,
) -> Result<ModelWeights<M, V>> {
    let d = spec.hidden;
    let q_width = spec.q_heads * spec.head_dim;
    let kv_width = spec.kv_heads * spec.head_dim;
    let f = spec.intermediate;
    let mut mat = |name: String, rows: usize, cols: usize| -> Result<M> { matrix(&checkpoint.get(&name, &[rows, cols])?) };
    let mut layers = Vec::with_capacity(spec.layers);
    for layer in 0..spec.layers {
        let name = |t: LayerTensor, suffix: &str| format!("{}.{suffix}", spec.layer_tensor(layer, t));
        let vec_of = |t: LayerTensor, suffix: &str, len: usize| -> Result<Vec<f32>> {
            Ok(checkpoint.get(&name(t, suffix), &[len])?.to_f32())
        };
        let concat = |parts: &[(LayerTensor, usize)]| -> Result<Vec<f32>> {
            let mut all = Vec::new();
            for &(t, len) in parts {
                all.extend(vec_of(t, "bias", len)?);
            }
            Ok(all)
        };
        let qkv_bias = if spec.qkv_bias {
            Some(vector("qkv bias", concat(&[(LayerTensor::Q, q_width), (LayerTensor::K, kv_width), (LayerTensor::V, kv_width)])?)?)
        } else {
            None
        };
        let up_bias = match (spec.mlp_bias, spec.gated_mlp) {
            (true, true) => Some(vector("gate/up bias", concat(&[(LayerTensor::Gate, f), (LayerTensor::Up, f)])?)?),
            (true, false) => Some(vector("up bias", concat(&[(LayerTensor::Up, f)])?)?),
            _ => None,
        };
        layers.push(LayerWeights {
            attn_norm: vector("attention norm", vec_of(LayerTensor::AttnNorm, "weight", d)?)?,
            q: mat(name(LayerTensor::Q, "weight"), q_width, d)?,
            k: mat(name(LayerTensor::K, "weight"), kv_width, d)?,
            v: mat(name(LayerTensor::V, "weight"), kv_width, d)?,
            qkv_bias,
            o: mat(name(LayerTensor::O, "weight"), d, q_width)?,
            o_bias: if spec.o_bias { Some(vector("o bias", vec_of(LayerTensor::O, "bias", d)?)?) } else { None },
            ffn_norm: vector("mlp norm", vec_of(LayerTensor::FfnNorm, "weight", d)?)?,
            gate: if spec.gated_mlp { Some(mat(name(LayerTensor::Gate, "weight"), f, d)?) } else { None },
            up: mat(name(LayerTensor::Up, "weight"), f, d)?,
            up_bias,
            down: mat(name(LayerTensor::Down, "weight"), d, f)?,
            down_bias: if spec.mlp_bias { Some(vector("down bias", vec_of(LayerTensor::Down, "bias", d)?)?) } else { None },
        });
    }
    let embedding = mat(spec.embedding_name().to_string(), spec.vocab_size, d)?;
    let head = if spec.tied_head {
        None
    } else {
        if !checkpoint.contains(spec.head_name()) {
            return Err(Error::bad_input(format!(
                "the checkpoint has no '{}' but config.json says the head is not tied to the embedding \
                 (tie_word_embeddings: false); the checkpoint is incomplete or the config is wrong",
                spec.head_name()
            )));
        }
        Some(mat(spec.head_name().to_string(), spec.vocab_size, d)?)
    };
    let final_norm = vector("final norm", checkpoint.get(spec.final_norm_name(), &[d])?.to_f32())?;
    Ok(ModelWeights { embedding, layers, final_norm, head })
}
