//! Greedy generation on the GPU, the way lm-evaluation-harness's HFLM `generate_until` builds
//! and cuts its answers: the context is tokenized without special tokens added (as its
//! loglikelihood requests are), left-truncated to `max_length - max_gen_toks` tokens; the model
//! continues greedily (ties to the lowest token id, as `torch.argmax`) until it emits the end-of-
//! text token, one of the `until` strings appears in the decoded continuation, or `max_gen_toks`
//! tokens are generated; the answer is the decoded continuation cut before the first `until`
//! string (`s.split(term)[0]` for each term).
//!
//! Every sequence has a slot of the KV cache; a finished sequence frees its slot for the next
//! request (continuous batching), and nothing a sequence computes depends on which other
//! sequences share its steps, so the answers do not depend on the batch or the request order.

use crate::error::Result;
use crate::forward::Batch;
use crate::score::Progress;
use crate::Model;
use std::sync::Arc;

/// One `generate_until` request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// The prompt, tokenized as it is (no BOS added unless the tokenizer adds one itself).
    pub context: String,
    /// Stop strings: the answer is cut before the first occurrence of any (empty strings are
    /// ignored, as the harness does). The end-of-text token always stops.
    pub until: Vec<String>,
    /// Most tokens generated (the harness's default is 256).
    pub max_gen_toks: usize,
}

/// The harness's default `max_gen_toks`.
pub const DEFAULT_MAX_GEN_TOKS: usize = 256;

#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Longest model input, context and answer together; None = the model's maximum positions
    /// (the harness's `max_length`).
    pub max_length: Option<usize>,
    /// Sequences decoded together (KV-cache slots); `Auto` = as many as fit.
    pub batch: Batch,
    pub progress: Option<Arc<dyn Progress>>,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// One of the `until` strings appeared (its index in the request's list).
    Until(usize),
    /// The model emitted the end-of-text token.
    EndOfText,
    /// `max_gen_toks` tokens were generated.
    MaxTokens,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    /// The decoded continuation cut before the first `until` string: what the harness scores.
    pub text: String,
    /// Every generated token id, the stopping one included.
    pub tokens: Vec<u32>,
    pub stop: Stop,
    /// Context tokens the model saw (after truncation).
    pub context_tokens: usize,
    /// The context lost tokens on the left to leave room for `max_gen_toks`.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct GenOutput {
    /// One per request, in request order.
    pub results: Vec<Generation>,
    /// The maximum length used.
    pub max_length: usize,
    /// KV-cache slots (sequences decoded together).
    pub slots: usize,
    /// Context tokens run through the prefill.
    pub prefill_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    pub seconds: f64,
}

/// Generates an answer to every request (see the module documentation).
pub fn generate(model: &Model, requests: &[GenRequest], options: &GenOptions) -> Result<GenOutput> {
    let _ = (model, requests, options);
    Err(crate::error::Error::bad_input("generation is not built yet".to_string()))
}
