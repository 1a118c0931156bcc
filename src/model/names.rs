//! Tensor names: each family's module names (families/), expanded for a model's layers. Names are
//! module paths without `.weight` / `.bias`.

use super::{ModelSpec, QkNorm};

/// How a checkpoint stores the query/key/value projections.
#[derive(Debug, Clone, Copy)]
pub enum QkvNames<S = String> {
    Separate { q: S, k: S, v: S },
    Fused { name: S, layout: FusedQkv },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedQkv {
    /// Rows [q | k | v] (Phi-3, GPT-2 after transposing its Conv1D).
    Grouped,
    /// Rows [head 0: q k v | head 1: q k v | ...] (GPT-NeoX).
    PerHead,
}

/// How a checkpoint stores the MLP's first projection(s).
#[derive(Debug, Clone, Copy)]
pub enum UpNames<S = String> {
    Gated { gate: S, up: S },
    /// One matrix with rows [gate | up] (Phi-3).
    FusedGateUp(S),
    Plain(S),
}

/// Module names of one layer.
#[derive(Debug, Clone)]
pub struct LayerNames {
    pub attn_norm: Option<String>,
    pub post_attn_norm: Option<String>,
    pub ffn_norm: Option<String>,
    pub post_ffn_norm: Option<String>,
    pub qkv: QkvNames,
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
    pub o: String,
    pub up: UpNames,
    pub down: String,
}

/// Module names of a whole model. `conv1d`: matrices are stored [in, out] (GPT-2's Conv1D) and
/// are transposed at load.
#[derive(Debug, Clone)]
pub struct Naming {
    pub embedding: String,
    pub positions: Option<String>,
    pub final_norm: String,
    pub head: String,
    pub conv1d: bool,
}

/// A family's module names. Layer modules are relative to `{layers}.{layer}`; which of the
/// norms a layer has is the spec's (`norms`, `qk_norm`), so a family names every norm its
/// layers can have.
#[derive(Debug, Clone, Copy)]
pub struct TensorNames {
    pub embedding: &'static str,
    /// Learned position embeddings (GPT-2).
    pub positions: Option<&'static str>,
    pub final_norm: &'static str,
    /// The head when it is not tied to the embedding.
    pub head: &'static str,
    /// Matrices are stored [in, out] (GPT-2's Conv1D).
    pub conv1d: bool,
    /// A prefix of every name that some checkpoints leave out (GPT-2 checkpoints saved by
    /// OpenAI's original code lack transformers' `transformer.`).
    pub optional_prefix: Option<&'static str>,
    pub layers: &'static str,
    /// Before attention.
    pub attn_norm: &'static str,
    /// On the attention output (sandwich norms; OLMo 2's only attention norm).
    pub post_attn_norm: Option<&'static str>,
    /// Before the MLP.
    pub ffn_norm: &'static str,
    /// On the MLP output.
    pub post_ffn_norm: Option<&'static str>,
    pub qkv: QkvNames<&'static str>,
    pub q_norm: Option<&'static str>,
    pub k_norm: Option<&'static str>,
    pub o: &'static str,
    pub up: UpNames<&'static str>,
    pub down: &'static str,
}

impl TensorNames {
    pub fn naming(&self, spec: &ModelSpec) -> Naming {
        Naming {
            embedding: self.embedding.into(),
            positions: self.positions.map(String::from),
            final_norm: self.final_norm.into(),
            head: if spec.tied_head { self.embedding } else { self.head }.into(),
            conv1d: self.conv1d,
        }
    }

    pub fn layer_names(&self, spec: &ModelSpec, layer: usize) -> LayerNames {
        let p = |module: &str| format!("{}.{layer}.{module}", self.layers);
        let post = |module: Option<&str>| module.filter(|_| spec.norms.post).map(p);
        let qk = |module: Option<&str>| module.filter(|_| spec.qk_norm != QkNorm::None).map(p);
        LayerNames {
            attn_norm: spec.norms.pre.then(|| p(self.attn_norm)),
            post_attn_norm: post(self.post_attn_norm),
            ffn_norm: spec.norms.pre.then(|| p(self.ffn_norm)),
            post_ffn_norm: post(self.post_ffn_norm),
            qkv: match self.qkv {
                QkvNames::Separate { q, k, v } => QkvNames::Separate { q: p(q), k: p(k), v: p(v) },
                QkvNames::Fused { name, layout } => QkvNames::Fused { name: p(name), layout },
            },
            q_norm: qk(self.q_norm),
            k_norm: qk(self.k_norm),
            o: p(self.o),
            up: match self.up {
                UpNames::Gated { gate, up } => UpNames::Gated { gate: p(gate), up: p(up) },
                UpNames::FusedGateUp(name) => UpNames::FusedGateUp(p(name)),
                UpNames::Plain(name) => UpNames::Plain(p(name)),
            },
            down: p(self.down),
        }
    }
}

impl ModelSpec {
    pub fn naming(&self) -> Naming {
        self.family.tensors.naming(self)
    }

    pub fn layer_names(&self, layer: usize) -> LayerNames {
        self.family.tensors.layer_names(self, layer)
    }
}
