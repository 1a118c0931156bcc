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

use crate::error::{Error, ErrorKind, Result};
use crate::forward::{Batch, DecodeRow, Prompt};
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

/// Most sequences decoded together under `--batch auto`: enough rows for the matrix kernels to
/// run well past their weight-reading cost, few enough that the KV cache stays small.
const AUTO_SLOTS: usize = 64;

/// The KV cache `--batch auto` reserves at most (bytes).
const AUTO_CACHE_BYTES: u64 = 2 << 30;

/// Sequences decoded together under `batch` when each needs `slot_len` positions: under `Auto`
/// up to [`AUTO_SLOTS`] within [`AUTO_CACHE_BYTES`] of KV cache; never more than one storage
/// binding per layer holds.
pub fn plan_slots(model: &Model, batch: Batch, slot_len: usize) -> usize {
    let gpu_model = &model.gpu_model;
    let wanted = match batch {
        Batch::Auto => AUTO_SLOTS.min((AUTO_CACHE_BYTES / gpu_model.kv_cache_bytes(1, slot_len).max(1)) as usize),
        Batch::Windows(n) => n,
    };
    wanted.min(gpu_model.max_kv_slots(slot_len)).max(1)
}

/// Prompts of `len` tokens one prefill pass takes (at least one, at most `free`).
pub fn prompts_per_prefill(model: &Model, len: usize, free: usize) -> usize {
    let len = len.max(1);
    (crate::forward::AUTO_PASS_ROWS / len).min(model.gpu_model.max_rows_per_pass() / len).clamp(1, free.max(1))
}

/// Generates an answer to every request (see the module documentation).
pub fn generate(model: &Model, requests: &[GenRequest], options: &GenOptions) -> Result<GenOutput> {
    let started = web_time::Instant::now();
    let gpu_model = &model.gpu_model;
    let positions = model.spec.max_positions;
    let max_length = options.max_length.unwrap_or(positions);
    if max_length > positions {
        return Err(Error::bad_input(format!(
            "--max-length {max_length} is longer than the model's {positions} positions (max_position_embeddings); \
             use --max-length {positions} or less"
        )));
    }
    let prepared = requests
        .iter()
        .enumerate()
        .map(|(i, request)| Prepared::new(model, request, max_length).map_err(|e| Error { message: format!("generation request {}: {}", i + 1, e.message), ..e }))
        .collect::<Result<Vec<_>>>()?;
    let pass_rows = gpu_model.max_rows_per_pass();
    if let Some(long) = prepared.iter().find(|p| p.context.len() > pass_rows) {
        return Err(Error::bad_input(format!(
            "a context of {} tokens is more than one pass holds on {} ({pass_rows} positions): lower --max-length",
            long.context.len(),
            gpu_model.gpu.describe()
        )));
    }
    let slot_len = prepared.iter().map(|p| p.context.len() + p.max_gen_toks).max().unwrap_or(1);
    let mut slots = plan_slots(model, options.batch, slot_len).min(requests.len()).max(1);
    let total_budget: u64 = prepared.iter().map(|p| p.max_gen_toks as u64).sum();
    let progress = crate::score::watcher(&options.progress);
    progress.start(total_budget);

    let mut decoder = Decoder { model, prepared: &prepared, results: vec![None; requests.len()], progress, prefill_tokens: 0, generated_tokens: 0 };
    // Longest contexts first: prompts of similar lengths share prefill passes.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prepared[i].context.len()));
    let mut queue: std::collections::VecDeque<usize> = order.into();
    let outcome = loop {
        // A device that runs out of memory gets fewer slots; the sequences in flight start again.
        let run = gpu_model.reserve_kv_cache(slots, slot_len).and_then(|()| decoder.run(&mut queue, slots, slot_len));
        match run {
            Err(error) if error.kind == ErrorKind::DeviceMemory && slots > 1 => {
                slots /= 2;
                eprintln!("warning: {}; generating {slots} sequences at once", error.message);
                gpu_model.gpu.clear_error();
            }
            other => break other,
        }
    };
    gpu_model.release_kv_cache();
    progress.finish();
    outcome?;
    Ok(GenOutput {
        results: decoder.results.into_iter().map(|r| r.expect("every request answered")).collect(),
        max_length,
        slots,
        prefill_tokens: decoder.prefill_tokens,
        generated_tokens: decoder.generated_tokens,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A request tokenized and checked: what the decoder runs.
struct Prepared {
    context: Vec<u32>,
    truncated: bool,
    /// The request's stop strings and the end-of-text token's text, as the harness adds it.
    until: Vec<String>,
    max_gen_toks: usize,
}

impl Prepared {
    fn new(model: &Model, request: &GenRequest, max_length: usize) -> Result<Prepared> {
        let tokenizer = &model.tokenizer;
        let max_gen_toks = request.max_gen_toks;
        if max_gen_toks == 0 {
            return Err(Error::bad_input("max_gen_toks is 0: nothing would be generated"));
        }
        if max_gen_toks >= max_length {
            return Err(Error::bad_input(format!(
                "max_gen_toks {max_gen_toks} leaves no room for a context within the model's {max_length} positions: \
                 lower max_gen_toks"
            )));
        }
        if !request.until.is_empty() && request.until.iter().all(|u| u.is_empty()) {
            return Err(Error::bad_input("every `until` string is empty: give none (stop at end of text) or non-empty ones"));
        }
        let mut context = encode_context(model, &request.context)?;
        // Left truncation to max_length - max_gen_toks tokens.
        let room = max_length - max_gen_toks;
        let truncated = context.len() > room;
        if truncated {
            context.drain(..context.len() - room);
        }
        let mut until: Vec<String> = request.until.iter().filter(|u| !u.is_empty()).cloned().collect();
        if let Some(eos) = tokenizer.eos {
            until.push(tokenizer.decode_token(eos));
        }
        Ok(Prepared { context, truncated, until, max_gen_toks })
    }

    /// Whether `generated` (the continuation so far) ends the sequence: how, and the answer (the
    /// decoded continuation cut before the first stop string). The whole continuation is decoded
    /// each step (the harness checks a tail of it): linear in its length, and small beside the
    /// step itself at any max_gen_toks the harness uses.
    fn finish(&self, tokenizer: &crate::model::TextTokenizer, generated: &[u32]) -> Option<(Stop, String)> {
        let text = tokenizer.decode_text(generated);
        let stop = match first_stop(&text, &self.until) {
            _ if generated.last().is_some_and(|&t| Some(t) == tokenizer.eos) => Stop::EndOfText,
            // The end-of-text token's text, which the harness adds to `until`, is not one of the
            // request's strings.
            Some((index, _)) if index < self.until.len() - usize::from(tokenizer.eos.is_some()) => Stop::Until(index),
            Some(_) => Stop::EndOfText,
            None if generated.len() >= self.max_gen_toks => Stop::MaxTokens,
            None => return None,
        };
        Some((stop, cut_at_stops(&text, &self.until)))
    }
}

/// The tokens of a generation request's context before truncation, as the harness's HFLM
/// encodes them: no special tokens, except BOS for Gemma models (HFLM turns `add_bos_token` on
/// for them); an empty context is the prefix token alone (BOS, else EOS).
pub fn encode_context(model: &Model, context: &str) -> Result<Vec<u32>> {
    let tokenizer = &model.tokenizer;
    let mut tokens = tokenizer.encode(context)?;
    if model.spec.model_type.starts_with("gemma") {
        if let Some(bos) = tokenizer.bos {
            tokens.insert(0, bos);
        }
    }
    if tokens.is_empty() {
        tokens.push(tokenizer.prefix_token()?);
    }
    Ok(tokens)
}

/// The earliest occurrence of any of `until` in `text`: (index into `until`, byte offset). Ties
/// at one offset go to the earlier string.
fn first_stop(text: &str, until: &[String]) -> Option<(usize, usize)> {
    until.iter().enumerate().filter_map(|(i, u)| text.find(u.as_str()).map(|at| (i, at))).min_by_key(|&(i, at)| (at, i))
}

/// `text` cut before the first occurrence of any of `until`: the harness's
/// `for term in until: s = s.split(term)[0]`.
pub fn cut_at_stops(text: &str, until: &[String]) -> String {
    match first_stop(text, until) {
        Some((_, at)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// A sequence being decoded.
struct Live {
    request: usize,
    slot: usize,
    generated: Vec<u32>,
}

/// The decoding loop's state across runs (a run that runs out of memory is followed by one with
/// fewer slots).
struct Decoder<'a> {
    model: &'a Model,
    prepared: &'a [Prepared],
    results: Vec<Option<Generation>>,
    progress: &'a dyn Progress,
    prefill_tokens: usize,
    generated_tokens: usize,
}

impl Decoder<'_> {
    /// Answers the requests in `queue` with `slots` sequences at a time. On an error the
    /// sequences in flight go back to the front of the queue.
    fn run(&mut self, queue: &mut std::collections::VecDeque<usize>, slots: usize, slot_len: usize) -> Result<()> {
        let mut live: Vec<Live> = Vec::new();
        let outcome = self.decode_all(queue, &mut live, slots, slot_len);
        if outcome.is_err() {
            for sequence in live.into_iter().rev() {
                queue.push_front(sequence.request);
            }
        }
        outcome
    }

    fn decode_all(&mut self, queue: &mut std::collections::VecDeque<usize>, live: &mut Vec<Live>, slots: usize, slot_len: usize) -> Result<()> {
        let gpu_model = &self.model.gpu_model;
        let mut free: Vec<usize> = (0..slots).rev().collect();
        while !queue.is_empty() || !live.is_empty() {
            if crate::score::stop_requested() {
                return Err(Error::interrupted("interrupted: generation stopped"));
            }
            // Fill the free slots: prompts of similar lengths share a prefill pass.
            while !free.is_empty() && !queue.is_empty() {
                let per_pass = prompts_per_prefill(self.model, self.prepared[queue[0]].context.len(), free.len());
                let taken: Vec<(usize, usize)> = (0..per_pass.min(queue.len())).map(|_| (queue.pop_front().unwrap(), free.pop().unwrap())).collect();
                for &(request, slot) in &taken {
                    live.push(Live { request, slot, generated: Vec::new() });
                }
                let prompts: Vec<Prompt> = taken.iter().map(|&(request, slot)| Prompt { tokens: &self.prepared[request].context, slot }).collect();
                let first = gpu_model.prefill(&prompts)?;
                self.prefill_tokens += prompts.iter().map(|p| p.tokens.len()).sum::<usize>();
                let fresh = live.len() - taken.len();
                for (sequence, token) in live[fresh..].iter_mut().zip(first) {
                    sequence.generated.push(token.token);
                }
                self.retire_finished(live, &mut free);
            }
            if live.is_empty() {
                continue;
            }
            let rows: Vec<DecodeRow> = live
                .iter()
                .map(|s| DecodeRow { token: *s.generated.last().unwrap(), slot: s.slot, position: self.prepared[s.request].context.len() + s.generated.len() - 1 })
                .collect();
            debug_assert!(rows.iter().all(|r| r.position < slot_len));
            let next = gpu_model.decode(&rows)?;
            for (sequence, token) in live.iter_mut().zip(next) {
                sequence.generated.push(token.token);
            }
            self.retire_finished(live, &mut free);
        }
        Ok(())
    }

    /// Moves every sequence that has stopped to the results, freeing its slot, and counts the
    /// newest token of each.
    fn retire_finished(&mut self, live: &mut Vec<Live>, free: &mut Vec<usize>) {
        let tokenizer = &self.model.tokenizer;
        self.generated_tokens += live.len();
        let mut advanced = live.len() as u64;
        let mut kept = Vec::with_capacity(live.len());
        for sequence in live.drain(..) {
            let prepared = &self.prepared[sequence.request];
            match prepared.finish(tokenizer, &sequence.generated) {
                Some((stop, text)) => {
                    advanced += (prepared.max_gen_toks - sequence.generated.len()) as u64;
                    self.results[sequence.request] = Some(Generation {
                        text,
                        tokens: sequence.generated,
                        stop,
                        context_tokens: prepared.context.len(),
                        truncated: prepared.truncated,
                    });
                    free.push(sequence.slot);
                }
                None => kept.push(sequence),
            }
        }
        *live = kept;
        self.progress.advance(advanced);
    }
}
