//! Shared test helpers: one GPU per test binary, deterministic random data, tolerance presets,
//! and where the real-model assets are; [`cli`] for tests that run the binary, [`sweep`] for those of
//! `perplex sweep`.
#![allow(dead_code)]

pub mod cli;
pub mod small_disk;
pub mod sweep;

use perplex::gpu::{Gpu, GpuOptions, ReadPath};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new(&GpuOptions::default()).expect("a GPU adapter (install mesa-vulkan-drivers)")).clone()
}

/// The ways the matrix kernels can read their operands, each of which must give the same bits:
/// storage buffers, textures, and textures with input rows and attention keys shared across a
/// subgroup (where the adapter has subgroups; elsewhere that case repeats the plain texture path).
pub const READ_PATHS: [(ReadPath, bool); 3] = [(ReadPath::Buffers, false), (ReadPath::Textures, false), (ReadPath::Textures, true)];

pub fn read_path_options((reads, share_rows): (ReadPath, bool)) -> GpuOptions {
    GpuOptions { reads: Some(reads), share_rows: Some(share_rows), ..Default::default() }
}

/// One GPU per read path per test binary.
pub fn gpu_reading(path: (ReadPath, bool)) -> Arc<Gpu> {
    static GPUS: [OnceLock<Arc<Gpu>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let index = READ_PATHS.iter().position(|&p| p == path).expect("one of READ_PATHS");
    GPUS[index].get_or_init(|| Gpu::new(&read_path_options(path)).expect("a GPU adapter (install mesa-vulkan-drivers)")).clone()
}

/// `run` on every read path: asserts that all give the same bits as the first and returns its result.
pub fn same_bits_on_every_read_path<T: bytemuck::Pod>(what: &str, run: impl Fn((ReadPath, bool)) -> Vec<T>) -> Vec<T> {
    let mut results = READ_PATHS.iter().map(|&path| run(path));
    let first = results.next().expect("READ_PATHS is not empty");
    for (path, got) in READ_PATHS.iter().skip(1).zip(results) {
        assert!(bytemuck::cast_slice::<T, u8>(&got) == bytemuck::cast_slice::<T, u8>(&first), "{what}: {path:?} differs from {:?}", READ_PATHS[0]);
    }
    first
}

/// xorshift64*: reproducible inputs without a dependency; the seed comes from the test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A fresh seed per run (printed, so a failure can be replayed with PERPLEX_SEED).
pub fn seed() -> u64 {
    let seed = std::env::var("PERPLEX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("seed {seed} (replay with PERPLEX_SEED={seed})");
    seed
}

/// Named tolerances: |got - want| <= abs + rel * |want|, element-wise.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// f32 kernels against the f64-summing CPU reference, for sums of up to a few thousand terms.
pub const KERNEL_F32: Tolerance = Tolerance { abs: 1e-4, rel: 1e-4 };

pub fn assert_close(got: &[f32], want: &[f32], tol: Tolerance, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let allowed = tol.abs + tol.rel * (w as f64).abs();
        assert!(g.is_finite(), "{what}[{i}] = {g}");
        if err - allowed > worst.0 {
            worst = (err - allowed, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 0.0, "{what}[{i}]: got {} want {} (tolerance {tol:?})", got[i], want[i]);
}

/// The tiny random checkpoints in models/tiny, one or more per family (made by
/// models/scripts/make_fixtures.py).
pub const TINY_VARIANTS: &[&str] = &[
    "llama-f32",
    "llama-tied-f16",
    "llama3-bf16",
    "mistral-f32",
    "qwen2-bf16",
    "phi3-f32",
    "gemma-f32",
    "gemma2-f32",
    "gemma3-f32",
    "olmo2-f32",
    "gpt2-f32",
    "gpt-neox-f16",
    "gpt-neox-seq-f32",
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The asset cache of `tests/assets/fetch`, or None (with a visible notice) when unset.
pub fn assets(test: &str) -> Option<PathBuf> {
    match std::env::var("PERPLEX_ASSETS") {
        Ok(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!(
                "SKIPPED {test}: PERPLEX_ASSETS is not set (run tests/assets/fetch and export PERPLEX_ASSETS=<printed path>)"
            );
            None
        }
    }
}
