//! Kernel-level throughput on the default adapter, at the shapes of real models.
//! `cargo bench --bench kernels` prints GFLOP/s per kernel and shape.

use perplex::forward::RowLayout;
use perplex::gpu::{ops, DType, Gpu, GpuMatrix, GpuOptions, MatrixUse, Program};
use std::time::Instant;

fn time_program(gpu: &Gpu, program: &Program, repeats: usize) -> f64 {
    program.run(gpu).unwrap(); // warm-up (pipeline compilation happens at build time)
    let start = Instant::now();
    for _ in 0..repeats {
        program.submit(gpu);
    }
    gpu.wait().unwrap();
    start.elapsed().as_secs_f64() / repeats as f64
}

fn bench_matmul(gpu: &Gpu, rows: usize, n: usize, k: usize, dtype: DType) {
    let gflops = perplex::bench::matmul_gflops(gpu, rows, n, k, dtype).unwrap();
    let ms = 2.0 * (rows * n * k) as f64 / gflops / 1e6;
    println!("matmul {rows:>5} x {n:>5} x {k:>5} {dtype:?}: {ms:8.2} ms  {gflops:7.2} GFLOP/s");
}

fn bench_lm_head(gpu: &Gpu, rows: usize, vocab: usize, k: usize) {
    let dtype = DType::F32;
    let weight = GpuMatrix::upload(gpu, "head", vocab, k, dtype, &vec![0u8; vocab * k * 4], MatrixUse::Products).unwrap();
    let input = gpu.storage("in", (rows * k * 4) as u64);
    let targets = gpu.storage("targets", (rows * 4) as u64);
    let head = ops::LmHead { matrix: &weight, vocab, softcap: 0.0 };
    let partials = gpu.storage("partials", (rows * head.tiles() * 16) as u64);
    let mut p = Program::builder(gpu);
    ops::lm_head_loss(&mut p, rows, head, &input, &targets, &partials);
    let seconds = time_program(gpu, &p.build(), 2);
    let flops = 2.0 * (rows * vocab * k) as f64;
    println!("lm head loss {rows:>5} x {vocab:>6} x {k:>5}: {:8.2} ms  {:7.2} GFLOP/s", seconds * 1e3, flops / seconds / 1e9);
}

fn bench_attention(gpu: &Gpu, windows: usize, len: usize, q_heads: usize, kv_heads: usize, head_dim: usize) {
    let rows = windows * len;
    let width = (q_heads + 2 * kv_heads) * head_dim;
    let qkv = gpu.storage("qkv", (rows * width * 4) as u64);
    let out = gpu.storage("out", (rows * q_heads * head_dim * 4) as u64);
    let layout = RowLayout::plain(windows, len);
    let positions = gpu.upload("positions", &layout.positions);
    let segments = gpu.upload("segments", &layout.segments);
    let mut p = Program::builder(gpu);
    let params = ops::Attention {
        rows: rows as u32,
        window_len: len as u32,
        q_heads: q_heads as u32,
        kv_heads: kv_heads as u32,
        qkv_stride: width as u32,
        scale: 0.125,
        softcap: 0.0,
        sliding_window: 0,
        packed: 0,
    };
    ops::attention(&mut p, head_dim as u32, params, &qkv, &positions, &segments, &out);
    let seconds = time_program(gpu, &p.build(), 2);
    // q.k and p.v over the causal half
    let flops = 2.0 * 2.0 * (windows * q_heads * head_dim) as f64 * (len * (len + 1) / 2) as f64;
    println!("attention {windows} x {len} heads {q_heads}/{kv_heads} dim {head_dim}: {:8.2} ms  {:7.2} GFLOP/s", seconds * 1e3, flops / seconds / 1e9);
}

fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    println!("adapter: {}", gpu.describe());
    // SmolLM2-135M: hidden 576, intermediate 1536, vocab 49152.
    bench_attention(&gpu, 1, 512, 9, 3, 64);
    bench_lm_head(&gpu, 512, 49152, 576);
    for dtype in [DType::F32, DType::F16, DType::Int8Groups] {
        bench_matmul(&gpu, 512, 576, 576, dtype);
        bench_matmul(&gpu, 512, 1536, 576, dtype);
        bench_matmul(&gpu, 512, 576, 1536, dtype);
    }
}
