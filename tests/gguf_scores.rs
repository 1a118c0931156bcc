//! The asset cache's real GGUF models scored end to end on models/gguf-fixtures/score.txt against
//! references made by models/scripts/make_gguf_scores.py (scores.json): transformers in float32
//! loading the same file, and llama.cpp's `llama-perplexity`. Skipped, with a notice, when
//! PERPLEX_ASSETS or a model file is missing.

mod common;

use common::{assets, gpu, repo};
use perplex::data::Document;
use perplex::score::{self, PplOptions, PplResult, WindowMode};
use perplex::Model;
use serde_json::Value;
use std::path::PathBuf;

fn scores() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("models/gguf-fixtures/scores.json")).unwrap()).unwrap()
}

fn text() -> Vec<Document> {
    let text = std::fs::read_to_string(repo().join("models/gguf-fixtures/score.txt")).unwrap();
    vec![Document { name: "score.txt".into(), text }]
}

/// The GGUF file of `model` (a key of scores.json), or None with a notice.
fn model_file(model: &str) -> Option<PathBuf> {
    let root = assets(&format!("{model} gguf scores"))?;
    let path = root.join(scores()["models"][model]["file"].as_str().unwrap());
    if !path.exists() {
        eprintln!("SKIPPED {model} gguf scores: {} is missing (run tests/assets/fetch {model})", path.display());
        return None;
    }
    Some(path)
}

fn run(model: &Model, mode: WindowMode, ctx: Option<usize>, per_token: bool) -> PplResult {
    let options = PplOptions { mode, ctx, batch: 4.into(), per_token, progress: None };
    score::perplexity(model, &text(), &options).unwrap()
}

/// Rolling perplexity against transformers on the same weights (the issue asks for 0.5%; the
/// engine is held to 1e-4 relative on the total log-likelihood), and llama.cpp's chunked perplexity
/// at ctx 128 within 1%: its CPU kernels round activations to 8 bits, so it is not exact (the same
/// chunk method on transformers' logits is matched to 4e-7 in tests/smollm2.rs).
fn check_against_references(key: &str) {
    let Some(path) = model_file(key) else { return };
    let reference = &scores()["models"][key];
    let model = Model::open(path.to_str().unwrap(), gpu()).unwrap();

    let rolling = run(&model, WindowMode::Rolling, None, false);
    let want = &reference["transformers"];
    assert_eq!(rolling.total.tokens as u64, want["tokens"].as_u64().unwrap(), "{key}: token count");
    let nll = want["nll"].as_f64().unwrap();
    let err = (rolling.total.nll - nll).abs() / nll;
    eprintln!("{key}: rolling nll {:.6}, transformers {nll:.6}, relative error {err:.2e}", rolling.total.nll);
    assert!(err < 1e-4, "{key}: rolling nll {} vs transformers {nll}", rolling.total.nll);

    let llama = &reference["llama_perplexity"];
    let chunks = run(&model, WindowMode::Chunks, Some(llama["ctx"].as_u64().unwrap() as usize), false);
    let want = llama["ppl"].as_f64().unwrap();
    let ratio = chunks.total.token_perplexity / want;
    eprintln!("{key}: chunks ppl {:.4}, llama-perplexity {want:.4}, ratio {ratio:.5}", chunks.total.token_perplexity);
    assert!((ratio - 1.0).abs() < 0.01, "{key}: chunks perplexity {} vs llama-perplexity {want}", chunks.total.token_perplexity);
}

#[test]
fn smollm2_q4_1_matches_transformers_llama_cpp_and_its_dequantized_dir() {
    check_against_references("smollm2");
    let Some(path) = model_file("smollm2") else { return };
    // The asset cache's hf-f32 dir holds the same weights dequantized by gguf-py: per-token
    // log-probabilities agree within 2e-3 (they are computed from identical values, so in fact
    // bit for bit).
    let dir = path.parent().unwrap().join("hf-f32");
    let per_token = |m: &str| run(&Model::open(m, gpu()).unwrap(), WindowMode::Rolling, None, true).tokens;
    let (gguf, hf) = (per_token(path.to_str().unwrap()), per_token(dir.to_str().unwrap()));
    assert_eq!(gguf.len(), hf.len());
    let worst = gguf.iter().zip(&hf).map(|(a, b)| (a.logprob - b.logprob).abs()).fold(0.0, f32::max);
    eprintln!("smollm2: GGUF vs hf-f32 per-token max |difference| {worst:.2e} over {} tokens", gguf.len());
    assert!(worst < 2e-3, "per-token difference {worst}");
}

#[test]
fn gemma3_q4_k_m_matches_transformers_and_llama_cpp() {
    check_against_references("gemma3");
}

#[test]
fn qwen2_5_q4_k_m_matches_transformers_and_llama_cpp() {
    check_against_references("qwen2.5");
}
