//! Plain-Rust CPU implementation of every op and of the forward pass: the oracle the GPU kernels
//! and the GPU forward pass are tested against. Straightforward loops, f32 storage, f64 sums.

use crate::error::Result;
use crate::model::{load_weights, Activation, Checkpoint, ModelSpec, ModelWeights, NormKind, NormWeights, QkNorm, TensorData};

/// A row-major `[rows, cols]` matrix on the host.
#[derive(Debug, Clone)]
pub struct HostMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl HostMatrix {
    pub fn from_tensor(tensor: &TensorData) -> HostMatrix {
        HostMatrix { rows: tensor.shape[0], cols: tensor.shape[1], data: tensor.to_f32() }
    }
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// `input[m, k] @ weight[n, k]^T (+ bias)`.
pub fn matmul(input: &[f32], rows: usize, weight: &HostMatrix, bias: Option<&[f32]>) -> Vec<f32> {
    let k = weight.cols;
    let mut out = vec![0f32; rows * weight.rows];
    for m in 0..rows {
        let a = &input[m * k..(m + 1) * k];
        for n in 0..weight.rows {
            let dot: f64 = a.iter().zip(weight.row(n)).map(|(&x, &w)| x as f64 * w as f64).sum();
            out[m * weight.rows + n] = (dot + bias.map_or(0.0, |b| b[n] as f64)) as f32;
        }
    }
    out
}

/// RMSNorm or LayerNorm of each `width`-wide row.
pub fn norm(x: &[f32], width: usize, weight: &[f32], bias: Option<&[f32]>, kind: NormKind, eps: f32, weight_offset: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (row, dst) in x.chunks(width).zip(out.chunks_mut(width)) {
        let n = width as f64;
        let mean = if kind == NormKind::Layer { row.iter().map(|&v| v as f64).sum::<f64>() / n } else { 0.0 };
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..width {
            let y = (row[i] as f64 - mean) * inv * (weight[i] + weight_offset) as f64 + bias.map_or(0.0, |b| b[i] as f64);
            dst[i] = y as f32;
        }
    }
    out
}

/// Rotate-half RoPE in place on `heads` heads of each row; `table[pos][pair]` = (cos, sin).
pub fn rope(x: &mut [f32], row_stride: usize, heads: usize, head_dim: usize, rotary_half: usize, positions: &[usize], table: &[[f32; 2]]) {
    for (row, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = row * row_stride + h * head_dim;
            for i in 0..rotary_half {
                let [c, s] = table[pos * rotary_half + i];
                let (x1, x2) = (x[base + i] as f64, x[base + i + rotary_half] as f64);
                x[base + i] = (x1 * c as f64 - x2 * s as f64) as f32;
                x[base + i + rotary_half] = (x2 * c as f64 + x1 * s as f64) as f32;
            }
        }
    }
}

/// Causal attention over one window. q: [len, q_heads*hd], k/v: [len, kv_heads*hd].
#[allow(clippy::too_many_arguments)]
pub fn attention(q: &[f32], k: &[f32], v: &[f32], len: usize, q_heads: usize, kv_heads: usize, head_dim: usize, scale: f32, sliding_window: Option<usize>) -> Vec<f32> {
    attention_capped(q, k, v, len, q_heads, kv_heads, head_dim, scale, sliding_window, 0.0)
}

/// [`attention`] with tanh soft-capping of the scaled scores (0 = off).
#[allow(clippy::too_many_arguments)]
pub fn attention_capped(q: &[f32], k: &[f32], v: &[f32], len: usize, q_heads: usize, kv_heads: usize, head_dim: usize, scale: f32, sliding_window: Option<usize>, softcap: f32) -> Vec<f32> {
    let visible = |t: usize, s: usize| s <= t && sliding_window.is_none_or(|w| t - s < w);
    attention_masked(q, k, v, len, q_heads, kv_heads, head_dim, scale, softcap, visible)
}

/// Attention over one window where query row t sees key row s when `visible(t, s)`; every row
/// must see at least one key.
#[allow(clippy::too_many_arguments)]
pub fn attention_masked(q: &[f32], k: &[f32], v: &[f32], len: usize, q_heads: usize, kv_heads: usize, head_dim: usize, scale: f32, softcap: f32, visible: impl Fn(usize, usize) -> bool) -> Vec<f32> {
    let group = q_heads / kv_heads;
    let mut out = vec![0f32; len * q_heads * head_dim];
    let mut scores = vec![0f64; len];
    for h in 0..q_heads {
        let kh = h / group;
        for t in 0..len {
            let qrow = &q[t * q_heads * head_dim + h * head_dim..][..head_dim];
            let keys: Vec<usize> = (0..len).filter(|&s| visible(t, s)).collect();
            let mut max = f64::NEG_INFINITY;
            for &s in &keys {
                let krow = &k[s * kv_heads * head_dim + kh * head_dim..][..head_dim];
                let dot: f64 = qrow.iter().zip(krow).map(|(&a, &b)| a as f64 * b as f64).sum();
                scores[s] = soft_cap(dot * scale as f64, softcap);
                max = max.max(scores[s]);
            }
            let total: f64 = keys.iter().map(|&s| (scores[s] - max).exp()).sum();
            let dst = &mut out[t * q_heads * head_dim + h * head_dim..][..head_dim];
            for d in 0..head_dim {
                let mut acc = 0f64;
                for &s in &keys {
                    acc += (scores[s] - max).exp() / total * v[s * kv_heads * head_dim + kh * head_dim + d] as f64;
                }
                dst[d] = acc as f32;
            }
        }
    }
    out
}

/// The MLP activation, in f64.
pub fn activate(kind: Activation, x: f32) -> f32 {
    let x = x as f64;
    let y = match kind {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => 0.5 * x * (1.0 + (0.7978845608028654 * (x + 0.044715 * x * x * x)).tanh()),
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
    };
    y as f32
}

/// erf to ~1e-15 by its Taylor series (|x| < 3) or the asymptotic continued fraction.
fn erf(x: f64) -> f64 {
    if x.abs() >= 6.0 {
        return x.signum();
    }
    if x.abs() < 3.0 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // erfc continued fraction (Lentz), accurate for |x| >= 3.
    let z = x.abs();
    let mut f = z;
    for k in (1..60).rev() {
        f = z + (k as f64 / 2.0) / f;
    }
    let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
    x.signum() * (1.0 - erfc)
}

/// The index of the largest logit (ties: the lowest index, as torch.argmax).
pub fn argmax(logits: &[f32]) -> usize {
    logits.iter().enumerate().fold(0, |best, (i, &v)| if v > logits[best] { i } else { best })
}

/// (log p(target), target == argmax) from a row of logits, in f64.
pub fn log_softmax_target(logits: &[f32], target: usize) -> (f64, bool) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    (logits[target] as f64 - max - sum.ln(), argmax(logits) == target)
}

/// What perplex compare computes for one position from both models' logits, in f64: KL(base ‖
/// model) in nats, log p_base(target), log p_model(target), and each model's argmax (ties: the
/// lowest index).
pub fn compare_logits(base: &[f32], model: &[f32], target: usize) -> (f64, f64, f64, usize, usize) {
    let log_softmax = |logits: &[f32]| -> Vec<f64> {
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max + logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        logits.iter().map(|&v| v as f64 - lse).collect()
    };
    let (lb, lm) = (log_softmax(base), log_softmax(model));
    let kl = lb.iter().zip(&lm).map(|(&b, &m)| b.exp() * (b - m)).sum();
    (kl, lb[target], lm[target], argmax(base), argmax(model))
}

pub type HostWeights = ModelWeights<HostMatrix, Vec<f32>>;

pub fn load_host_weights(spec: &ModelSpec, checkpoint: &Checkpoint) -> Result<HostWeights> {
    load_weights(spec, checkpoint, |t, _| Ok(HostMatrix::from_tensor(t)), |_, v| Ok(v))
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// Rows of several matrices stacked into one (the fused QKV and gate/up layouts).
fn stack(matrices: &[HostMatrix]) -> HostMatrix {
    HostMatrix { rows: matrices.iter().map(|m| m.rows).sum(), cols: matrices[0].cols, data: matrices.iter().flat_map(|m| m.data.clone()).collect() }
}

fn soft_cap(x: f64, cap: f32) -> f64 {
    if cap > 0.0 { cap as f64 * (x / cap as f64).tanh() } else { x }
}

/// The forward pass of one window on the CPU: per position, (log p(targets[t]), greedy).
pub fn forward(spec: &ModelSpec, w: &HostWeights, tokens: &[u32], targets: &[u32]) -> Vec<(f64, bool)> {
    let logits = logits(spec, w, tokens);
    (0..tokens.len())
        .map(|t| log_softmax_target(&logits[t * spec.vocab_size..(t + 1) * spec.vocab_size], targets[t] as usize))
        .collect()
}

/// The logits of one window on the CPU: `vocab_size` per position, soft-capped where the model
/// caps them.
pub fn logits(spec: &ModelSpec, w: &HostWeights, tokens: &[u32]) -> Vec<f32> {
    let len = tokens.len();
    let d = spec.hidden;
    let (hd, qh, kvh) = (spec.head_dim, spec.q_heads, spec.kv_heads);
    let (qw, kw) = (spec.q_width(), spec.kv_width());
    let apply_norm = |x: &[f32], width: usize, n: &NormWeights<Vec<f32>>| {
        norm(x, width, &n.weight, n.bias.as_deref(), spec.norm, spec.norm_eps, spec.norm_weight_offset)
    };
    let maybe_norm = |x: &[f32], n: &Option<NormWeights<Vec<f32>>>| n.as_ref().map_or_else(|| x.to_vec(), |n| apply_norm(x, d, n));
    let mut x: Vec<f32> = tokens.iter().flat_map(|&t| w.embedding.row(t as usize).iter().map(|&v| v * spec.embedding_scale)).collect();
    if let Some(positions) = &w.positions {
        for t in 0..len {
            add(&mut x[t * d..(t + 1) * d], positions.row(t));
        }
    }
    let positions: Vec<usize> = (0..len).collect();
    let tables: Vec<_> = (0..spec.ropes.len()).map(|r| spec.rope_table(r, len)).collect();
    for (layer, attention) in w.layers.iter().zip(&spec.layer_attention) {
        let h = maybe_norm(&x, &layer.attn_norm);
        let mlp_in_parallel = spec.parallel_residual.then(|| maybe_norm(&x, &layer.ffn_norm));
        let qkv = matmul(&h, len, &stack(&layer.qkv), layer.qkv_bias.as_deref());
        let column = |from: usize, width: usize| -> Vec<f32> { (0..len).flat_map(|t| qkv[t * (qw + 2 * kw) + from..][..width].to_vec()).collect() };
        let (mut q, mut k, v) = (column(0, qw), column(qw, kw), column(qw + kw, kw));
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            let per_head = spec.qk_norm == QkNorm::PerHead;
            let unit = |heads: usize| if per_head { hd } else { heads * hd };
            q = norm(&q, unit(qh), qn, None, spec.norm, spec.norm_eps, spec.norm_weight_offset);
            k = norm(&k, unit(kvh), kn, None, spec.norm, spec.norm_eps, spec.norm_weight_offset);
        }
        if let Some(table) = tables.get(attention.rope) {
            let half = spec.rotary_dim(attention.rope) / 2;
            rope(&mut q, qw, qh, hd, half, &positions, table);
            rope(&mut k, kw, kvh, hd, half, &positions, table);
        }
        let a = attention_capped(&q, &k, &v, len, qh, kvh, hd, spec.attention_scale, attention.sliding_window, spec.attention_softcap);
        let mut o = matmul(&a, len, &layer.o, layer.o_bias.as_deref());
        if let Some(n) = &layer.post_attn_norm {
            o = apply_norm(&o, d, n);
        }
        let mlp_in = match mlp_in_parallel {
            Some(input) => input,
            None => {
                add(&mut x, &o);
                maybe_norm(&x, &layer.ffn_norm)
            }
        };
        let f = spec.intermediate;
        let up = matmul(&mlp_in, len, &stack(&layer.up), layer.up_bias.as_deref());
        let act: Vec<f32> = (0..len * f)
            .map(|i| {
                let (t, c) = (i / f, i % f);
                if spec.gated_mlp {
                    activate(spec.activation, up[t * 2 * f + c]) * up[t * 2 * f + f + c]
                } else {
                    activate(spec.activation, up[i])
                }
            })
            .collect();
        let mut down = matmul(&act, len, &layer.down, layer.down_bias.as_deref());
        if let Some(n) = &layer.post_ffn_norm {
            down = apply_norm(&down, d, n);
        }
        if spec.parallel_residual {
            add(&mut x, &o);
        }
        add(&mut x, &down);
    }
    let h = apply_norm(&x, d, &w.final_norm);
    matmul(&h, len, w.head(), None).into_iter().map(|l| soft_cap(l as f64, spec.final_softcap) as f32).collect()
}
