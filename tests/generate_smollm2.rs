//! Greedy generation on SmolLM2-135M (hf-f32 from the assets) against lm-evaluation-harness
//! 0.4.13's HFLM `generate_until` with transformers in float32
//! (models/reference/generation-smollm2.json, made by models/scripts/make_generation_reference.py):
//! the same generated tokens and text, except after a step where lm-eval's own top two
//! log-probabilities are a near tie. CI runs a few GSM8K requests with short answers and the
//! first TriviaQA ones; PERPLEX_GENERATION_ALL=1 runs all 250 (50 GSM8K 8-shot, 200 TriviaQA).

mod common;

use common::{assets, gpu, repo};
use perplex::forward::Batch;
use perplex::generate::{generate, GenOptions, GenRequest};
use perplex::Model;
use serde_json::Value;

/// A divergence is accepted only where lm-eval's margin between its top two log-probabilities at
/// the first differing step is below this (nats): float32 rounding in a different order of
/// operations moves log-probabilities by about 1e-4 here.
const NEAR_TIE_NATS: f64 = 2e-3;

/// GSM8K documents run by default: answers of 1 and 10 tokens.
const GSM8K_DEFAULT: [u64; 2] = [6, 16];
const TRIVIAQA_DEFAULT: u64 = 20;

#[test]
fn smollm2_generates_what_lm_eval_generates() {
    let Some(assets) = assets("smollm2_generates_what_lm_eval_generates") else { return };
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("models/reference/generation-smollm2.json")).unwrap()).unwrap();
    let all = std::env::var("PERPLEX_GENERATION_ALL").is_ok_and(|v| v == "1");
    let chosen: Vec<&Value> = reference["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let doc = r["doc"].as_u64().unwrap();
            all || match r["task"].as_str().unwrap() {
                "gsm8k" => GSM8K_DEFAULT.contains(&doc),
                _ => doc < TRIVIAQA_DEFAULT,
            }
        })
        .collect();
    let strings = |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect() };
    let requests: Vec<GenRequest> = chosen
        .iter()
        .map(|r| GenRequest {
            context: r["context"].as_str().unwrap().to_string(),
            until: strings(&r["until"]),
            max_gen_toks: r["max_gen_toks"].as_u64().unwrap() as usize,
        })
        .collect();
    let model = Model::open(assets.join("smollm2/hf-f32").to_str().unwrap(), gpu()).unwrap();
    let (mut identical, mut near_ties, mut tokens, mut seconds) = (0, Vec::new(), 0, 0.0);
    // In chunks, each reported as it finishes (the answers do not depend on the chunking).
    for (requests, chosen) in requests.chunks(CHUNK).zip(chosen.chunks(CHUNK)) {
        let output = generate(&model, requests, &GenOptions { max_length: None, batch: Batch::Auto, progress: None }).unwrap();
        assert_eq!(output.max_length, reference["max_length"].as_u64().unwrap() as usize);
        compare_chunk(chosen, &output.results, &mut identical, &mut near_ties);
        (tokens, seconds) = (tokens + output.generated_tokens, seconds + output.seconds);
        eprintln!("{identical} answers identical to lm-eval's so far; diverging after a near tie: {near_ties:?} ({tokens} tokens in {seconds:.1} s)");
    }
    eprintln!("{identical} of {} answers identical to lm-eval's; diverging after a near tie: {near_ties:?}", chosen.len());
}

/// Requests generated together.
const CHUNK: usize = 25;

/// Checks each answer against lm-eval's: the same tokens and text, or a first difference where
/// lm-eval's margin was a near tie (listed in `near_ties`).
fn compare_chunk(chosen: &[&Value], answers: &[perplex::generate::Generation], identical: &mut usize, near_ties: &mut Vec<String>) {
    for (r, answer) in chosen.iter().zip(answers) {
        let want: Vec<u32> = r["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let name = format!("{} doc {}", r["task"].as_str().unwrap(), r["doc"]);
        match answer.tokens.iter().zip(&want).position(|(a, b)| a != b) {
            None => {
                assert_eq!(answer.tokens, want, "{name}: one answer stops before the other");
                assert_eq!(answer.text, r["text"].as_str().unwrap(), "{name}: same tokens, different text");
                *identical += 1;
            }
            Some(step) => {
                let margin = r["near_ties"][step.to_string()].as_f64().unwrap_or(f64::INFINITY);
                assert!(margin < NEAR_TIE_NATS, "{name}: first differs at step {step}, where lm-eval's top-two margin is {margin} nats");
                near_ties.push(format!("{name}: step {step}, lm-eval margin {margin:.2e} nats"));
            }
        }
    }
}
