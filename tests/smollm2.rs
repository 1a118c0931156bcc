//! The real SmolLM2-135M (the asset cache's dequantized HF dirs) against reference numbers computed
//! with transformers in float32 and lm-evaluation-harness (models/scripts/make_smollm2_reference.py,
//! saved in models/reference/smollm2-135m.json with the documents themselves).
//! Skipped, with a notice, when PERPLEX_ASSETS is not set.

mod common;

use common::{assets, gpu, repo};
use perplex::data::Document;
use perplex::score::{self, PplOptions, WindowMode};
use perplex::Model;
use serde_json::Value;
use std::sync::OnceLock;

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let text = std::fs::read_to_string(repo().join("models/reference/smollm2-135m.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn documents() -> Vec<Document> {
    reference()["documents"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| Document { name: format!("doc{i}"), text: t.as_str().unwrap().to_string() })
        .collect()
}

/// The model for `width` ("f32" or "f16"), loaded once per test binary.
fn model(width: &str) -> Option<&'static Model> {
    static F32: OnceLock<Model> = OnceLock::new();
    static F16: OnceLock<Model> = OnceLock::new();
    let root = assets(&format!("smollm2 {width}"))?;
    let cell = if width == "f32" { &F32 } else { &F16 };
    Some(cell.get_or_init(|| {
        let dir = root.join("smollm2").join(format!("hf-{width}"));
        Model::open(dir.to_str().unwrap(), gpu()).unwrap()
    }))
}

fn check_totals(model: &Model, mode: WindowMode, entry: &Value, rel: f64, per_token: Option<&Value>) {
    let ctx = entry["ctx"].as_u64().unwrap() as usize;
    let options = PplOptions { mode, ctx: Some(ctx), batch: 4.into(), per_token: per_token.is_some(), progress: None };
    let result = score::perplexity(model, &documents(), &options).unwrap();
    for (got, want) in result.documents.iter().zip(entry["docs"].as_array().unwrap()) {
        let (nll, tokens) = (want["nll"].as_f64().unwrap(), want["tokens"].as_u64().unwrap() as usize);
        assert_eq!(got.tokens, tokens, "{mode:?} ctx {ctx} {}: tokens", got.name);
        let err = (got.nll - nll).abs() / nll.abs().max(1e-9);
        eprintln!("{mode:?} ctx {ctx} {}: nll {:.6} reference {nll:.6} relative error {err:.2e}", got.name, got.nll);
        assert!(got.nll == nll || err <= rel, "{mode:?} ctx {ctx} {}: relative error {err:.2e} > {rel:.0e}", got.name);
    }
    if let Some(reference) = per_token {
        // Per-token log-probabilities of document 0 within 2e-3 absolute; greedy flags agree except
        // at near-ties.
        let want: Vec<f64> = reference["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let greedy: Vec<bool> = reference["greedy"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
        let got: Vec<_> = result.tokens.iter().filter(|t| t.doc == "doc0").collect();
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(g, w)| (g.logprob as f64 - w).abs()).fold(0.0, f64::max);
        eprintln!("per-token max |error| {worst:.2e}");
        assert!(worst < 2e-3, "per-token max |error| {worst}");
        let disagree = got.iter().zip(&greedy).filter(|(g, w)| g.greedy != **w).count();
        assert!(disagree <= got.len() / 100, "greedy flags disagree at {disagree} positions");
    }
}

#[test]
fn f32_rolling_matches_lm_evaluation_harness() {
    let Some(model) = model("f32") else { return };
    let f32 = &reference()["f32"];
    for (i, entry) in f32["rolling"].as_array().unwrap().iter().enumerate() {
        let per_token = (i == 0).then_some(&f32["per_token"]);
        check_totals(model, WindowMode::Rolling, entry, 1e-4, per_token);
    }
}

#[test]
fn f32_sliding_and_chunks_match_their_references() {
    let Some(model) = model("f32") else { return };
    let f32 = &reference()["f32"];
    for entry in f32["sliding"].as_array().unwrap() {
        let stride = entry["stride"].as_u64().unwrap() as usize;
        check_totals(model, WindowMode::Sliding { stride }, entry, 1e-4, None);
    }
    for entry in f32["chunks"].as_array().unwrap() {
        check_totals(model, WindowMode::Chunks, entry, 1e-4, None);
    }
}

#[test]
fn f16_weights_match_within_1e3() {
    let Some(model) = model("f16") else { return };
    let f16 = &reference()["f16"];
    check_totals(model, WindowMode::Rolling, &f16["rolling"][0], 1e-3, Some(&f16["per_token"]));
}
