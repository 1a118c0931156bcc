//! End to end against Hugging Face transformers on the tiny random checkpoints in models/tiny
//! (made by models/scripts/make_fixtures.py, which saved transformers' float32 log-probabilities
//! and lm-evaluation-harness / HF-guide / llama.cpp window totals beside each model).

mod common;

use common::{gpu, repo};
use perplex::forward::TokenScore;
use perplex::gpu::{Gpu, GpuOptions};
use perplex::model::{load_spec, Checkpoint};
use perplex::reference;
use perplex::forward::Batch;
use perplex::data::Document;
use perplex::score::{self, PplOptions, WindowMode};
use perplex::Model;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// Every tiny checkpoint.
const VARIANTS: &[&str] = common::TINY_VARIANTS;
/// Per-token log-probability tolerance against transformers (f32 on both sides; these random
/// models have large logits, so absolute errors of ~1e-5 are normal).
const LOGPROB_ABS: f64 = 2e-4;

fn dir(variant: &str) -> PathBuf {
    repo().join("models/tiny").join(variant)
}

fn reference_json(variant: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(variant).join("reference.json")).unwrap()).unwrap()
}

fn open(variant: &str, gpu: Arc<Gpu>) -> Model {
    Model::open(dir(variant).to_str().unwrap(), gpu).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Scores one sequence predicting each next token.
fn score_sequence(model: &Model, input: &[u32]) -> Vec<TokenScore> {
    let mut targets = input[1..].to_vec();
    targets.push(0);
    let mut scores = model.gpu_model.score(1, input.len(), input, &targets).unwrap();
    scores.pop();
    scores
}

#[test]
fn gpu_log_probabilities_match_transformers() {
    for variant in VARIANTS {
        let model = open(variant, gpu());
        let reference = reference_json(variant);
        for (i, seq) in reference["sequences"].as_array().unwrap().iter().enumerate() {
            let input = ids(&seq["input_ids"]);
            let want = floats(&seq["logprobs"]);
            let greedy: Vec<bool> = seq["greedy"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
            let got = score_sequence(&model, &input);
            let worst = got.iter().zip(&want).map(|(g, w)| (g.logprob as f64 - w).abs()).fold(0.0, f64::max);
            eprintln!("{variant} sequence {i}: {} positions, max |error| {worst:.2e}", got.len());
            assert!(worst < LOGPROB_ABS, "{variant} sequence {i}: max |error| {worst}");
            for (j, (g, w)) in got.iter().zip(&greedy).enumerate() {
                assert_eq!(g.greedy, *w, "{variant} sequence {i} position {j}: greedy");
            }
        }
    }
}

/// Every family in the registry is checked here: one of its tiny checkpoints is in VARIANTS.
#[test]
fn every_family_has_a_checkpoint() {
    let checked: Vec<&str> = VARIANTS.iter().map(|variant| load_spec(&dir(variant)).unwrap().family.name()).collect();
    for family in perplex::model::families::FAMILIES {
        assert!(checked.contains(&family.name()), "family {family:?} has no tiny checkpoint in VARIANTS (models/scripts/make_fixtures.py)");
    }
}

#[test]
fn cpu_reference_forward_matches_transformers() {
    for variant in VARIANTS {
        let spec = load_spec(&dir(variant)).unwrap();
        let weights = reference::load_host_weights(&spec, &Checkpoint::open(&dir(variant)).unwrap()).unwrap();
        let reference = reference_json(variant);
        let seq = &reference["sequences"][0];
        let input = ids(&seq["input_ids"]);
        let mut targets = input[1..].to_vec();
        targets.push(0);
        let got = reference::forward(&spec, &weights, &input, &targets);
        for (j, w) in floats(&seq["logprobs"]).iter().enumerate() {
            assert!((got[j].0 - w).abs() < LOGPROB_ABS, "{variant} position {j}: {} vs {w}", got[j].0);
        }
    }
}

#[test]
fn window_modes_reproduce_their_references() {
    for variant in VARIANTS {
        let model = open(variant, gpu());
        let reference = reference_json(variant);
        let documents: Vec<Document> = reference["documents"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| Document { name: format!("doc{i}"), text: t.as_str().unwrap().to_string() })
            .collect();
        for entry in reference["windows"].as_array().unwrap() {
            let ctx = entry["ctx"].as_u64().unwrap() as usize;
            let mode = match entry["mode"].as_str().unwrap() {
                "rolling" => WindowMode::Rolling,
                "sliding" => WindowMode::Sliding { stride: entry["stride"].as_u64().unwrap() as usize },
                _ => WindowMode::Chunks,
            };
            let options = PplOptions { mode, ctx: Some(ctx), batch: 4.into(), per_token: false, progress: None };
            let result = score::perplexity(&model, &documents, &options).unwrap();
            for (got, want) in result.documents.iter().zip(entry["docs"].as_array().unwrap()) {
                let (nll, tokens) = (want["nll"].as_f64().unwrap(), want["tokens"].as_u64().unwrap() as usize);
                assert_eq!(got.tokens, tokens, "{variant} {mode:?} ctx {ctx} {}: tokens", got.name);
                assert!((got.nll - nll).abs() <= 1e-5 * nll.abs(), "{variant} {mode:?} ctx {ctx} {}: nll {} vs {nll}", got.name, got.nll);
            }
        }
    }
}

fn per_token_bits(model: &Model, documents: &[Document], batch: Batch) -> Vec<(String, usize, u32)> {
    let options = PplOptions { mode: WindowMode::Rolling, ctx: Some(16), batch, per_token: true, progress: None };
    score::perplexity(model, documents, &options)
        .unwrap()
        .tokens
        .into_iter()
        .map(|t| (t.doc, t.pos, t.logprob.to_bits()))
        .collect()
}

#[test]
fn scores_are_bit_identical_whatever_the_batch() {
    let model = open("llama-f32", gpu());
    let reference = reference_json("llama-f32");
    let text = |i: usize| reference["documents"][i].as_str().unwrap().to_string();
    let alone = vec![Document { name: "a".into(), text: text(0) }];
    let together = vec![
        Document { name: "b".into(), text: text(1) },
        Document { name: "a".into(), text: text(0) },
        Document { name: "c".into(), text: text(1)[..200].to_string() },
    ];
    let baseline = per_token_bits(&model, &alone, 1.into());
    assert!(baseline.len() > 100);
    for batch in [1.into(), 3.into(), 8.into(), Batch::Auto] {
        assert_eq!(per_token_bits(&model, &alone, batch), baseline, "alone, batch {batch:?}");
        let mixed: Vec<_> = per_token_bits(&model, &together, batch).into_iter().filter(|t| t.0 == "a").collect();
        assert_eq!(mixed, baseline, "with other documents, batch {batch:?}");
    }
}

#[test]
fn split_tensors_give_identical_scores() {
    // A 72 KiB binding limit splits the 363 x 72 f32 embedding and LM head into two parts.
    let limited = Gpu::new(&GpuOptions { max_binding_override: Some(256 * 72 * 4 + 16), ..Default::default() }).unwrap();
    let split = open("llama-f32", limited);
    let whole = open("llama-f32", gpu());
    assert_eq!(split.gpu_model.embedding_parts(), 2);
    let input = &ids(&reference_json("llama-f32")["sequences"][0]["input_ids"])[..64];
    let a: Vec<u32> = score_sequence(&split, input).iter().map(|s| s.logprob.to_bits()).collect();
    let b: Vec<u32> = score_sequence(&whole, input).iter().map(|s| s.logprob.to_bits()).collect();
    assert_eq!(a, b);
}

#[test]
fn every_read_path_gives_identical_scores() {
    // Storage buffers, texture copies, and texture copies with subgroup row sharing, on tiny
    // models of different families (fused and separate projections, biases, learned positions).
    for name in ["llama-f32", "qwen2-bf16", "gpt2-f32", "gemma3-f32", "gpt-neox-f16"] {
        let input = &ids(&reference_json(name)["sequences"][0]["input_ids"])[..48];
        common::same_bits_on_every_read_path(name, |path| {
            let model = open(name, common::gpu_reading(path));
            score_sequence(&model, input).iter().map(|s| s.logprob).collect::<Vec<f32>>()
        });
    }
}
