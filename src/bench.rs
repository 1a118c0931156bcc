//! `perplex bench`: scoring throughput of a model on one adapter, the FLOP rate it reaches, the
//! adapter's best matmul rate measured in the same run, memory, and a per-kernel breakdown from
//! timestamp queries — one JSON shape for every backend so results can be compared side by side.

use crate::error::Result;
use crate::gpu::{ops, DType, GpuMatrix, MatrixUse, Program};
use crate::Model;
use std::collections::BTreeMap;
use web_time::Instant;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub ctx: usize,
    pub batch: crate::forward::Batch,
    /// Timed passes (after one warm-up pass).
    pub repeats: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: usize,
    pub seconds: f64,
    pub share: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub model: String,
    pub model_type: String,
    pub parameters: usize,
    pub weight_dtype: String,
    pub adapter: crate::gpu::AdapterSummary,
    /// How the kernels read their operands on this adapter (storage buffers or texture copies).
    pub reads: String,
    /// How the matrix kernels sum their products (`--sums`).
    pub sums: &'static str,
    pub ctx: usize,
    pub batch: usize,
    pub seconds_per_pass: f64,
    pub tokens_per_second: f64,
    pub gflop_per_pass: f64,
    pub achieved_gflops: f64,
    /// Best rate of the engine's matmul kernel on large products with weights in the model's
    /// format on this adapter ([`PEAK_SHAPES`]).
    pub peak_matmul_gflops: f64,
    pub fraction_of_peak: f64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    /// Device memory the driver's allocator holds for this run after the timed passes (blocks
    /// reserved, including their unused parts), where the backend reports it (Vulkan, D3D12).
    pub device_reserved_bytes: Option<u64>,
    /// Per-kernel time of one pass, largest first; empty without timestamp queries.
    pub kernels: Vec<KernelTime>,
    pub notes: Vec<String>,
}

/// Per-kernel totals of one profiled pass, largest first.
fn kernel_times(times: Vec<(crate::gpu::KernelId, f64)>) -> Vec<KernelTime> {
    let total: f64 = times.iter().map(|(_, s)| s).sum();
    let mut by_kernel: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (id, s) in times {
        let entry = by_kernel.entry(id.family().to_string()).or_default();
        entry.0 += 1;
        entry.1 += s;
    }
    let mut list: Vec<KernelTime> =
        by_kernel.into_iter().map(|(kernel, (dispatches, s))| KernelTime { kernel, dispatches, seconds: s, share: s / total.max(1e-12) }).collect();
    list.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    list
}

/// FLOPs of one forward pass over `windows` windows of `len` tokens (multiply-adds count 2).
pub fn forward_flops(model: &Model, windows: usize, len: usize) -> f64 {
    let s = &model.spec;
    let per_token_matmul = s.layers * (s.hidden * s.qkv_width() + s.q_width() * s.hidden + s.hidden * s.up_width() + s.intermediate * s.hidden)
        + s.hidden * s.vocab_size;
    // Causal attention: q.k and p.v over the keys each query sees.
    let keys_seen: usize = s
        .layer_attention
        .iter()
        .map(|a| (0..len).map(|t| a.sliding_window.map_or(t + 1, |w| (t + 1).min(w))).sum::<usize>())
        .sum();
    let attention = 2 * s.q_heads * s.head_dim * keys_seen;
    2.0 * (windows * (len * per_token_matmul + attention)) as f64
}

/// The products (rows x n x k) the practical peak is the best of: a large square-ish one, and a
/// wide and a deep one, because no single shape is the fastest on every adapter (on lavapipe a
/// depth of 2048 runs slower than the depths of small models' projections).
pub const PEAK_SHAPES: [(usize, usize, usize); 3] = [(1024, 2048, 2048), (1024, 2048, 512), (1024, 512, 2048)];

/// The adapter's practical matmul peak for weights in `dtype` (each format has its own: f16 and
/// quantized weights take fewer fetches than f32): the engine's matmul kernel at its best over
/// [`PEAK_SHAPES`], in GFLOP/s.
pub fn peak_matmul_gflops(gpu: &crate::gpu::Gpu, dtype: DType) -> Result<f64> {
    PEAK_SHAPES.iter().try_fold(0.0f64, |best, &(rows, n, k)| Ok(best.max(matmul_gflops(gpu, rows, n, k, dtype)?)))
}

/// GFLOP/s of the engine's matmul kernel on a `rows x n x k` product with `dtype` weights:
/// the best of two timed runs after a warm-up.
pub fn matmul_gflops(gpu: &crate::gpu::Gpu, rows: usize, n: usize, k: usize, dtype: DType) -> Result<f64> {
    let weight = GpuMatrix::upload(gpu, "bench weight", n, k, dtype, &vec![0u8; n * dtype.row_bytes(k)], MatrixUse::Products)?;
    let input = gpu.storage("bench input", (rows * k * 4) as u64);
    let output = gpu.storage("bench output", (rows * n * 4) as u64);
    let bias = gpu.storage("bench bias", 16);
    let mut p = Program::builder(gpu);
    for part in &weight.parts {
        let params = ops::Matmul {
            rows: rows as u32,
            cols: part.rows as u32,
            depth: k as u32,
            col_offset: part.first_row as u32,
            out_stride: n as u32,
            has_bias: 0,
            accumulate: 0,
        };
        ops::matmul(&mut p, dtype.format(), params, &input, part, &bias, &output);
    }
    let program = p.build();
    program.run(gpu)?;
    let mut best = f64::MAX;
    for _ in 0..2 {
        let start = Instant::now();
        program.run(gpu)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (rows * n * k) as f64 / best / 1e9)
}

pub fn run(model: &Model, options: &BenchOptions) -> Result<BenchReport> {
    let gpu = &model.gpu_model.gpu;
    let (len, windows) = (options.ctx, model.gpu_model.windows_per_pass(options.ctx, options.batch));
    let rows = len * windows;
    // Token ids spread over the vocabulary (the values do not change the work).
    let tokens: Vec<u32> = (0..rows).map(|i| ((i as u64 * 2654435761) % model.spec.vocab_size as u64) as u32).collect();
    let mut targets = tokens[1..].to_vec();
    targets.push(0);
    model.gpu_model.score(windows, len, &tokens, &targets)?; // warm-up: pipelines, buffers, program
    let start = Instant::now();
    for _ in 0..options.repeats.max(1) {
        model.gpu_model.score(windows, len, &tokens, &targets)?;
    }
    let seconds = start.elapsed().as_secs_f64() / options.repeats.max(1) as f64;
    // Before the peak measurement allocates its own buffers.
    let device_reserved_bytes = gpu.device.generate_allocator_report().map(|r| r.total_reserved_bytes);
    let flops = forward_flops(model, windows, len);
    let peak = peak_matmul_gflops(gpu, model.gpu_model.weight_dtype)?;

    let mut notes = Vec::new();
    let kernels = match model.gpu_model.profile(windows, len, &tokens, &targets)? {
        Some(times) => kernel_times(times),
        None => {
            notes.push("this adapter has no timestamp queries: no per-kernel breakdown".into());
            Vec::new()
        }
    };
    if device_reserved_bytes.is_none() {
        notes.push("this backend does not report its allocations: no measured device memory".into());
    }
    Ok(BenchReport {
        model: model.name.clone(),
        model_type: model.spec.model_type.clone(),
        parameters: model.spec.parameter_count(),
        weight_dtype: format!("{:?}", model.gpu_model.weight_dtype),
        adapter: gpu.adapter.clone(),
        reads: gpu.describe_reads().to_string(),
        sums: gpu.sums.name(),
        ctx: len,
        batch: windows,
        seconds_per_pass: seconds,
        tokens_per_second: rows as f64 / seconds,
        gflop_per_pass: flops / 1e9,
        achieved_gflops: flops / seconds / 1e9,
        peak_matmul_gflops: peak,
        fraction_of_peak: flops / seconds / 1e9 / peak,
        weight_bytes: model.gpu_model.weight_bytes,
        activation_bytes: model.gpu_model.activation_bytes(rows),
        device_reserved_bytes,
        kernels,
        notes,
    })
}

/// What `perplex bench --generate` measures at one number of sequences decoded together.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationRate {
    pub sequences: usize,
    /// Prompt tokens per second through the prefill (the KV cache filled, the first token chosen).
    pub prefill_tokens_per_second: f64,
    /// Generated tokens per second over the decoding steps, all sequences together.
    pub decode_tokens_per_second: f64,
    pub seconds_per_step: f64,
    /// The KV cache as planned: keys and values of every layer for every sequence, in f32.
    pub kv_cache_bytes: u64,
    /// Device memory the driver's allocator holds while the cache is reserved, where the
    /// backend reports it.
    pub device_reserved_bytes: Option<u64>,
    /// Per-kernel time of the last decoding step, largest first; empty without timestamp queries.
    pub decode_kernels: Vec<KernelTime>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationReport {
    pub model: String,
    pub model_type: String,
    pub weight_dtype: String,
    pub adapter: crate::gpu::AdapterSummary,
    pub reads: String,
    pub sums: &'static str,
    /// Prompt tokens per sequence.
    pub prompt: usize,
    /// Tokens generated per sequence (the first by the prefill).
    pub new_tokens: usize,
    pub weight_bytes: u64,
    /// At one sequence, and at what `--batch auto` plans.
    pub rates: Vec<GenerationRate>,
}

/// `perplex bench --generate`: prefill and decode throughput at batch 1 and at the auto batch
/// of `perplex generate`, with the KV cache against its plan.
pub fn generation(model: &Model, prompt: usize, new_tokens: usize) -> Result<GenerationReport> {
    let gpu = &model.gpu_model.gpu;
    let slot_len = prompt + new_tokens;
    let auto = crate::generate::plan_slots(model, crate::forward::Batch::Auto, slot_len);
    let mut rates = Vec::new();
    for sequences in [1, auto] {
        if rates.iter().any(|r: &GenerationRate| r.sequences == sequences) {
            continue;
        }
        rates.push(generation_rate(model, sequences, prompt, new_tokens)?);
    }
    Ok(GenerationReport {
        model: model.name.clone(),
        model_type: model.spec.model_type.clone(),
        weight_dtype: format!("{:?}", model.gpu_model.weight_dtype),
        adapter: gpu.adapter.clone(),
        reads: gpu.describe_reads().to_string(),
        sums: gpu.sums.name(),
        prompt,
        new_tokens,
        weight_bytes: model.gpu_model.weight_bytes,
        rates,
    })
}

/// Greedy decoding of `sequences` prompts of `prompt` tokens for `new_tokens` tokens each, after
/// a warm-up run of the same shapes (pipelines and programs recorded).
fn generation_rate(model: &Model, sequences: usize, prompt: usize, new_tokens: usize) -> Result<GenerationRate> {
    use crate::forward::{DecodeRow, Prompt};
    let gpu_model = &model.gpu_model;
    let vocab = model.spec.vocab_size as u64;
    // Distinct prompts with token ids spread over the vocabulary (the values do not change the work).
    let prompts: Vec<Vec<u32>> =
        (0..sequences).map(|s| (0..prompt).map(|i| (((s * prompt + i) as u64 * 2654435761) % vocab) as u32).collect()).collect();
    gpu_model.reserve_kv_cache(sequences, prompt + new_tokens)?;
    let run = || -> Result<(f64, f64, Vec<KernelTime>)> {
        let start = Instant::now();
        let mut last = Vec::with_capacity(sequences);
        let per_pass = crate::generate::prompts_per_prefill(model, prompt, sequences);
        for (chunk, group) in prompts.chunks(per_pass).enumerate() {
            let batch: Vec<Prompt> = group.iter().enumerate().map(|(i, tokens)| Prompt { tokens, slot: chunk * per_pass + i }).collect();
            last.extend(gpu_model.prefill(&batch)?.into_iter().map(|t| t.token));
        }
        let prefill = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for step in 0..new_tokens.saturating_sub(1) {
            let rows: Vec<DecodeRow> = last.iter().enumerate().map(|(slot, &token)| DecodeRow { token, slot, position: prompt + step }).collect();
            last = gpu_model.decode(&rows)?.into_iter().map(|t| t.token).collect();
        }
        let decode = start.elapsed().as_secs_f64();
        // One more step, timed kernel by kernel.
        let rows: Vec<DecodeRow> = last.iter().enumerate().map(|(slot, &token)| DecodeRow { token, slot, position: prompt + new_tokens - 1 }).collect();
        let kernels = gpu_model.profile_decode(&rows)?.map(kernel_times).unwrap_or_default();
        Ok((prefill, decode, kernels))
    };
    let measured = run().and_then(|_| run());
    let device_reserved_bytes = model.gpu_model.gpu.device.generate_allocator_report().map(|r| r.total_reserved_bytes);
    let kv_cache_bytes = gpu_model.kv_cache_bytes(sequences, prompt + new_tokens);
    gpu_model.release_kv_cache();
    let (prefill, decode, decode_kernels) = measured?;
    let steps = new_tokens.saturating_sub(1).max(1);
    Ok(GenerationRate {
        sequences,
        prefill_tokens_per_second: (sequences * prompt) as f64 / prefill,
        decode_tokens_per_second: (sequences * steps) as f64 / decode.max(1e-12),
        seconds_per_step: decode / steps as f64,
        kv_cache_bytes,
        device_reserved_bytes,
        decode_kernels,
    })
}
