//! Loads the tensors a [`ModelSpec`] needs, by the family's names (names.rs, families/), into any storage:
//! GPU buffers for the engine, host vectors for the CPU reference. Layout differences between
//! families (fused or separate projections, GPT-2's transposed Conv1D weights, GPT-NeoX's per-head
//! QKV interleaving) are undone here, so the forward pass sees one layout.

use super::{Checkpoint, FusedQkv, ModelSpec, QkvNames, TensorData, UpNames};
use crate::error::{Error, Result};
use crate::dtype::DType;
use std::borrow::Cow;

pub struct NormWeights<V> {
    pub weight: V,
    pub bias: Option<V>,
}

pub struct LayerWeights<M, V> {
    pub attn_norm: Option<NormWeights<V>>,
    /// Matrices whose rows, concatenated, produce the fused [q | k | v] activation.
    pub qkv: Vec<M>,
    pub qkv_bias: Option<V>,
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
    pub o: M,
    pub o_bias: Option<V>,
    pub post_attn_norm: Option<NormWeights<V>>,
    pub ffn_norm: Option<NormWeights<V>>,
    /// Matrices whose rows, concatenated, produce [gate | up] (gated) or [up] (plain).
    pub up: Vec<M>,
    pub up_bias: Option<V>,
    pub down: M,
    pub down_bias: Option<V>,
    pub post_ffn_norm: Option<NormWeights<V>>,
}

/// Which kernels read a weight matrix, which decides where it lives on the texture read path
/// (see `gpu::ReadPath`): the product kernels (matmul, the LM heads) read a texture the matrix is
/// uploaded into once, instead of a copy made before every dispatch; the embedding gather reads
/// rows of a storage buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixUse {
    /// Multiplied by activations only (projections, an untied LM head).
    Products,
    /// Gathered by rows only (an embedding table whose head is separate, learned positions).
    Rows,
    /// Both: an embedding table tied to the LM head (on the texture path it is held twice).
    RowsAndProducts,
}

pub struct ModelWeights<M, V> {
    pub embedding: M,
    pub positions: Option<M>,
    pub layers: Vec<LayerWeights<M, V>>,
    pub final_norm: NormWeights<V>,
    /// None when the head is tied to the embedding.
    pub head: Option<M>,
}

impl<M, V> ModelWeights<M, V> {
    pub fn head(&self) -> &M {
        self.head.as_ref().unwrap_or(&self.embedding)
    }
}

/// Reads tensors by name with shape checks and the family's layout fixes.
struct Reader<'a> {
    spec: &'a ModelSpec,
    checkpoint: &'a Checkpoint,
    conv1d: bool,
}

impl<'a> Reader<'a> {
    /// The stored name of `name`: without the family's optional prefix when the checkpoint left
    /// it out (GPT-2 checkpoints saved by OpenAI's original code lack `transformer.`).
    fn stored(&self, name: &str) -> String {
        let bare = self.spec.family.tensors.optional_prefix.and_then(|prefix| name.strip_prefix(prefix));
        match bare {
            Some(bare) if !self.checkpoint.contains(name) && self.checkpoint.contains(bare) => bare.to_string(),
            _ => name.to_string(),
        }
    }

    /// A `[rows, cols]` weight matrix (PyTorch Linear layout) named `module.weight`.
    fn matrix(&self, module: &str, rows: usize, cols: usize) -> Result<TensorData<'a>> {
        let name = self.stored(&format!("{module}.weight"));
        if self.conv1d {
            let t = self.checkpoint.get(&name, &[cols, rows])?;
            // Quantized groups run along the stored rows, so those are widened before transposing.
            let (dtype, bytes) = match t.dtype {
                DType::Int8Groups => (DType::F32, Cow::Owned(bytemuck::cast_slice(&t.to_f32()).to_vec())),
                dtype => (dtype, t.bytes),
            };
            let bytes = transpose(&bytes, cols, rows, dtype.row_bytes(1));
            return Ok(TensorData { name, dtype, shape: vec![rows, cols], bytes: Cow::Owned(bytes) });
        }
        self.checkpoint.get(&name, &[rows, cols])
    }

    /// An embedding table (never transposed).
    fn table(&self, module: &str, rows: usize, cols: usize) -> Result<TensorData<'a>> {
        self.checkpoint.get(&self.stored(&format!("{module}.weight")), &[rows, cols])
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.checkpoint.get(&self.stored(name), &[len])?.to_f32())
    }

    fn norm(&self, module: &str) -> Result<NormWeights<Vec<f32>>> {
        self.norm_of_width(module, self.spec.hidden)
    }

    fn norm_of_width(&self, module: &str, width: usize) -> Result<NormWeights<Vec<f32>>> {
        let bias = if self.spec.norm_bias { Some(self.vector(&format!("{module}.bias"), width)?) } else { None };
        Ok(NormWeights { weight: self.vector(&format!("{module}.weight"), width)?, bias })
    }
}

/// Rows of GPT-NeoX's fused QKV, [head][q, k, v][dim], regrouped as [q | k | v][head][dim].
fn regroup_per_head(bytes: &[u8], heads: usize, head_dim: usize, row_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for part in 0..3 {
        for head in 0..heads {
            let first = (head * 3 + part) * head_dim;
            out.extend_from_slice(&bytes[first * row_bytes..(first + head_dim) * row_bytes]);
        }
    }
    out
}

fn transpose(bytes: &[u8], rows: usize, cols: usize, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * size;
            let to = (c * rows + r) * size;
            out[to..to + size].copy_from_slice(&bytes[from..from + size]);
        }
    }
    out
}

/// The LM head matrix alone, `[vocab, hidden]` in its stored width: the embedding table where the
/// head is tied to it (perplex compare puts two models' heads side by side).
pub fn load_head<'a>(spec: &'a ModelSpec, checkpoint: &'a Checkpoint) -> Result<TensorData<'a>> {
    let naming = spec.naming();
    let reader = Reader { spec, checkpoint, conv1d: naming.conv1d };
    let name = if spec.tied_head { &naming.embedding } else { &naming.head };
    reader.table(name, spec.vocab_size, spec.hidden)
}

/// Loads every tensor `spec` needs. `load_matrix` receives 2-D weights in their stored width and
/// how the forward pass reads each; `vector` receives norm weights and biases widened to f32.
pub fn load_weights<M, V>(
    spec: &ModelSpec,
    checkpoint: &Checkpoint,
    mut load_matrix: impl FnMut(&TensorData, MatrixUse) -> Result<M>,
    vector: impl Fn(&str, Vec<f32>) -> Result<V>,
) -> Result<ModelWeights<M, V>> {
    let naming = spec.naming();
    let reader = Reader { spec, checkpoint, conv1d: naming.conv1d };
    let d = spec.hidden;
    let (qw, kvw, f) = (spec.q_width(), spec.kv_width(), spec.intermediate);
    let norm = |n: NormWeights<Vec<f32>>, what: &str| -> Result<NormWeights<V>> {
        Ok(NormWeights { weight: vector(what, n.weight)?, bias: n.bias.map(|b| vector(what, b)).transpose()? })
    };
    let mut matrix = |tensor: &TensorData| load_matrix(tensor, MatrixUse::Products);
    let mut layers = Vec::with_capacity(spec.layers);
    for layer in 0..spec.layers {
        let names = spec.layer_names(layer);
        let bias = |module: &str, len: usize| reader.vector(&format!("{module}.bias"), len);
        let (qkv, qkv_bias) = match &names.qkv {
            QkvNames::Separate { q, k, v } => {
                let b = if spec.qkv_bias { Some([bias(q, qw)?, bias(k, kvw)?, bias(v, kvw)?].concat()) } else { None };
                (vec![matrix(&reader.matrix(q, qw, d)?)?, matrix(&reader.matrix(k, kvw, d)?)?, matrix(&reader.matrix(v, kvw, d)?)?], b)
            }
            QkvNames::Fused { name, layout } => {
                let width = spec.qkv_width();
                let mut t = reader.matrix(name, width, d)?;
                let mut b = if spec.qkv_bias { Some(bias(name, width)?) } else { None };
                if *layout == FusedQkv::PerHead {
                    if spec.kv_heads != spec.q_heads {
                        return Err(Error::bad_input("a per-head fused QKV needs as many key/value heads as query heads"));
                    }
                    let row_bytes = t.dtype.row_bytes(d);
                    t.bytes = Cow::Owned(regroup_per_head(&t.bytes, spec.q_heads, spec.head_dim, row_bytes));
                    b = b.map(|b| bytemuck::pod_collect_to_vec(&regroup_per_head(bytemuck::cast_slice(&b), spec.q_heads, spec.head_dim, 4)));
                }
                (vec![matrix(&t)?], b)
            }
        };
        let (up, up_bias) = match &names.up {
            UpNames::Gated { gate, up } => {
                let b = if spec.mlp_bias { Some([bias(gate, f)?, bias(up, f)?].concat()) } else { None };
                (vec![matrix(&reader.matrix(gate, f, d)?)?, matrix(&reader.matrix(up, f, d)?)?], b)
            }
            UpNames::FusedGateUp(name) => {
                let b = if spec.mlp_bias { Some(bias(name, 2 * f)?) } else { None };
                (vec![matrix(&reader.matrix(name, 2 * f, d)?)?], b)
            }
            UpNames::Plain(name) => {
                let b = if spec.mlp_bias { Some(bias(name, f)?) } else { None };
                (vec![matrix(&reader.matrix(name, f, d)?)?], b)
            }
        };
        let qk_width = |heads: usize| if spec.qk_norm == super::QkNorm::PerHead { spec.head_dim } else { heads * spec.head_dim };
        let o_bias = if spec.o_bias { Some(bias(&names.o, d)?) } else { None };
        let down_bias = if spec.mlp_bias { Some(bias(&names.down, d)?) } else { None };
        let opt_norm = |module: &Option<String>| module.as_ref().map(|m| reader.norm(m)).transpose();
        let layer_weights = LayerWeights {
            attn_norm: opt_norm(&names.attn_norm)?.map(|n| norm(n, "attention norm")).transpose()?,
            qkv,
            qkv_bias: qkv_bias.map(|b| vector("qkv bias", b)).transpose()?,
            q_norm: names.q_norm.as_ref().map(|m| reader.vector(&format!("{m}.weight"), qk_width(spec.q_heads))).transpose()?.map(|v| vector("q norm", v)).transpose()?,
            k_norm: names.k_norm.as_ref().map(|m| reader.vector(&format!("{m}.weight"), qk_width(spec.kv_heads))).transpose()?.map(|v| vector("k norm", v)).transpose()?,
            o: matrix(&reader.matrix(&names.o, d, qw)?)?,
            o_bias: o_bias.map(|b| vector("o bias", b)).transpose()?,
            post_attn_norm: opt_norm(&names.post_attn_norm)?.map(|n| norm(n, "post-attention norm")).transpose()?,
            ffn_norm: opt_norm(&names.ffn_norm)?.map(|n| norm(n, "mlp norm")).transpose()?,
            up,
            up_bias: up_bias.map(|b| vector("up bias", b)).transpose()?,
            down: matrix(&reader.matrix(&names.down, d, f)?)?,
            down_bias: down_bias.map(|b| vector("down bias", b)).transpose()?,
            post_ffn_norm: opt_norm(&names.post_ffn_norm)?.map(|n| norm(n, "post-mlp norm")).transpose()?,
        };
        layers.push(layer_weights);
    }
    let embedding_use = if spec.tied_head { MatrixUse::RowsAndProducts } else { MatrixUse::Rows };
    let embedding = load_matrix(&reader.table(&naming.embedding, spec.vocab_size, d)?, embedding_use)?;
    let positions = naming.positions.as_ref().map(|p| reader.table(p, spec.max_positions, d)).transpose()?.map(|t| load_matrix(&t, MatrixUse::Rows)).transpose()?;
    let head = if spec.tied_head {
        None
    } else {
        if !checkpoint.contains(&format!("{}.weight", naming.head)) {
            return Err(Error::bad_input(format!(
                "the checkpoint has no '{}.weight' but config.json says the head is not tied to the embedding \
                 (tie_word_embeddings: false); the checkpoint is incomplete or the config is wrong",
                naming.head
            )));
        }
        Some(load_matrix(&reader.table(&naming.head, spec.vocab_size, d)?, MatrixUse::Products)?)
    };
    let final_norm = norm(reader.norm(&naming.final_norm)?, "final norm")?;
    Ok(ModelWeights { embedding, positions, layers, final_norm, head })
}
