//! lm-evaluation-harness `loglikelihood(context, continuation)`: the log-probability of a
//! continuation given a context, and whether greedy decoding would have produced it.
//!
//! Tokenization follows the harness's `HFLM.loglikelihood` / `_encode_pair` to the letter, because
//! that is what makes benchmark numbers comparable: trailing whitespace of the context moves to the
//! continuation; context + continuation is tokenized as one string and split at the length of the
//! tokenized context; an empty context becomes the prefix token (BOS, else EOS) unless the
//! continuation already starts with it. The model input is `(context + continuation)[-(L+1):][:-1]`
//! with L the maximum length, and the last `len(continuation)` positions are scored, so an
//! over-long request loses tokens from the left (counted as truncated).
//!
//! Requests with the same context tokens (the choices of one question) share one packed window:
//! the context is computed once and each distinct continuation is a segment after it that sees
//! the context and itself (see [`Window`]). A segment's rows, positions and visible keys are those
//! of the request's own window, so the scores are those of the request alone (up to rounding). Truncated requests
//! and contexts with one continuation stay plain windows.
//!
//! With a resume log (`perplex eval --resume`), every answered request is logged as its pass
//! finishes, and a rerun scores only the windows whose requests are not all in the log.

use super::resume::{model_fingerprint, sums_setting, Entry, ResumeLog};
use super::{score_windows, stop_requested, watcher, Progress, Window, PASSES_PER_GROUP};
use crate::forward::{Batch, TokenScore};
use crate::hash::Fnv1a;
use std::collections::BTreeMap;
use crate::error::{Error, Result};
use crate::model::TextTokenizer;
use crate::Model;

/// One request: the text that conditions and the text that is scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub context: String,
    pub continuation: String,
}

/// A request split into tokens the harness's way.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRequest {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Loglikelihood {
    /// Sum of the continuation tokens' log-probabilities (nats).
    pub ll: f64,
    /// Every continuation token is the model's argmax at its position.
    pub is_greedy: bool,
    /// Continuation tokens scored.
    pub tokens: usize,
    /// The input lost context tokens on the left to fit the maximum length.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct LoglikOptions {
    /// Longest model input; None = the model's maximum positions (the harness's `max_length`).
    pub max_length: Option<usize>,
    pub batch: Batch,
    pub progress: Option<std::sync::Arc<dyn Progress>>,
}

#[derive(Debug, Clone)]
pub struct LoglikOutput {
    /// One per request, in request order.
    pub results: Vec<Loglikelihood>,
    /// Requests whose context was cut on the left.
    pub truncated: usize,
    /// The maximum length used.
    pub max_length: usize,
    /// Windows actually run per pass.
    pub batch: usize,
    /// Rows the model processed in this run (not those of answers a resume log held): a packed
    /// context counts once for all its continuations.
    pub positions: usize,
    pub seconds: f64,
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the ASCII information
/// separators U+001C..U+001F, which Python counts as whitespace and Rust does not.
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` (no arguments).
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// Tokenizes one request as the harness does (see the module documentation).
pub fn encode_request(tokenizer: &TextTokenizer, request: &Request) -> Result<EncodedRequest> {
    let (context, continuation) = (&request.context, &request.continuation);
    if context.is_empty() {
        let continuation = tokenizer.encode(continuation)?;
        let prefix = tokenizer.prefix_token()?;
        return Ok(match continuation.first() {
            Some(&first) if first == prefix => {
                EncodedRequest { context: continuation[..1].to_vec(), continuation: continuation[1..].to_vec() }
            }
            _ => EncodedRequest { context: vec![prefix], continuation },
        });
    }
    // `len(context) - len(context.rstrip())` characters move to the continuation.
    let kept = context.trim_end_matches(is_python_space).len();
    let (context, moved) = context.split_at(kept);
    let whole = tokenizer.encode(&format!("{context}{moved}{continuation}"))?;
    let context = tokenizer.encode(context)?;
    let continuation = whole.get(context.len()..).unwrap_or_default().to_vec();
    Ok(EncodedRequest { context, continuation })
}

/// The model input for an encoded request: left-truncated to `max_length` tokens, scoring the
/// continuation. Returns the window and whether context tokens were dropped.
pub fn request_window(index: usize, encoded: &EncodedRequest, max_length: usize) -> (Window, bool) {
    let all: Vec<u32> = encoded.context.iter().chain(&encoded.continuation).copied().collect();
    let kept = all.len().min(max_length + 1);
    let keep = &all[all.len() - kept..];
    let input = keep[..kept - 1].to_vec();
    let targets = keep[1..].to_vec();
    let scored = input.len() - encoded.continuation.len()..input.len();
    let first_target = all.len() - kept + 1;
    (Window { doc: index, input, targets, scored, first_target, segments: Vec::new() }, all.len() > max_length + 1)
}

/// The windows that score `encoded` and, per window, the requests each of its segments answers
/// (one list for a plain window), plus whether each request was truncated.
///
/// Requests that are not truncated are grouped by context tokens and, within a context, by
/// continuation tokens (identical requests share a segment). Both orders are the tokens' own, and
/// a context's continuations fill packed windows of at most `max_length` rows in that order, so
/// the windows depend only on the set of requests, never on their order or the batch size.
fn plan_windows(encoded: &[EncodedRequest], max_length: usize) -> (Vec<Window>, Vec<Vec<Vec<usize>>>, Vec<bool>) {
    let mut windows = Vec::new();
    let mut owners = Vec::new();
    let mut truncated = vec![false; encoded.len()];
    let mut contexts: BTreeMap<&[u32], BTreeMap<&[u32], Vec<usize>>> = BTreeMap::new();
    for (i, request) in encoded.iter().enumerate() {
        let (window, cut) = request_window(i, request, max_length);
        truncated[i] = cut;
        // A truncated request's context is no longer shared; an empty one has no last token to
        // start segments with.
        if cut || request.context.is_empty() {
            windows.push(window);
            owners.push(vec![vec![i]]);
        } else {
            contexts.entry(request.context.as_slice()).or_default().entry(request.continuation.as_slice()).or_default().push(i);
        }
    }
    for (context, continuations) in contexts {
        let shared = context.len() - 1;
        let mut flush = |chunk: Vec<(&[u32], Vec<usize>)>| {
            if let [(_, requests)] = &chunk[..] {
                // A single continuation is the request's own plain window, bit for bit.
                windows.push(request_window(requests[0], &encoded[requests[0]], max_length).0);
            } else {
                // The shared rows are the context but its last token, which starts every segment
                // so that the segment's first row predicts the continuation's first token.
                let mut input = context[..shared].to_vec();
                let mut targets = context[1..].to_vec();
                for (continuation, _) in &chunk {
                    input.push(context[shared]);
                    input.extend_from_slice(&continuation[..continuation.len() - 1]);
                    targets.extend_from_slice(continuation);
                }
                let segments = chunk.iter().map(|(continuation, _)| continuation.len()).collect();
                let scored = shared..input.len();
                windows.push(Window { doc: chunk[0].1[0], input, targets, scored, first_target: 0, segments });
            }
            owners.push(chunk.into_iter().map(|(_, requests)| requests).collect());
        };
        let mut chunk = Vec::new();
        let mut rows = shared;
        for (continuation, requests) in continuations {
            if !chunk.is_empty() && rows + continuation.len() > max_length {
                flush(std::mem::take(&mut chunk));
                rows = shared;
            }
            rows += continuation.len();
            chunk.push((continuation, requests));
        }
        flush(chunk);
    }
    (windows, owners, truncated)
}

/// Describes a request in an error message without printing a whole document.
fn describe(request: &Request) -> String {
    fn cut(s: &str) -> String {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() <= 60 {
            format!("{s:?}")
        } else {
            format!("\"...{}\"", chars[chars.len() - 60..].iter().collect::<String>().escape_debug())
        }
    }
    format!("context {} continuation {}", cut(&request.context), cut(&request.continuation))
}

/// Scores every request; results come back in request order and do not depend on the batch size
/// or on the order of the requests (see `plan_windows` and `score_windows`).
pub fn loglikelihood(model: &Model, requests: &[Request], options: &LoglikOptions) -> Result<LoglikOutput> {
    loglikelihood_resumable(model, requests, options, None)
}

/// One answered request in the `--resume` log of `perplex eval`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScoredRequest {
    /// The request's [`segment_keys`] entry: its tokens and the model input that scored them.
    pub request: String,
    pub ll: f64,
    pub is_greedy: bool,
}

impl Entry for ScoredRequest {
    type Key = String;
    const NAME: &'static str = "requests";
    fn key(&self) -> String {
        self.request.clone()
    }
}

/// What every entry of a request log depends on beyond its key: the model's files. Task settings
/// (tasks, data, few-shot, limit, ctx) are no part of it: they change which requests there are,
/// and every request is keyed by the exact input that scored it, so a log can be continued by a
/// run with more documents or more tasks, and entries of requests this run does not make are
/// ignored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestLogHeader {
    pub perplex_eval_resume: u32,
    /// [`model_fingerprint`] of the model whose scores the entries are.
    pub model_files: String,
    /// [`sums_setting`] of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums: Option<String>,
}

/// The log of `perplex eval --resume`.
pub type RequestLog = ResumeLog<RequestLogHeader, ScoredRequest>;

/// The key of each segment of a window (one for a plain window): a hash of everything the GPU
/// computes it from (input tokens, targets, scored rows and segment lengths) and the segment's
/// place. A request's own tokens are not enough: which continuations share its packed window, and
/// how much context truncation left, change the last bits of its score; the window is what fixes
/// them (scores do not depend on the batch or the order of windows).
fn segment_keys(window: &Window) -> Vec<String> {
    let mut hash = Fnv1a::default();
    for part in [&window.input, &window.targets, &window.segments.iter().map(|&s| s as u32).collect()] {
        hash.field(&part.len().to_string());
        for token in part {
            hash.update(&token.to_le_bytes());
        }
    }
    hash.field(&format!("{}..{}", window.scored.start, window.scored.end));
    (0..segment_lengths(window).len()).map(|i| hash.clone().field(&i.to_string()).hex()).collect()
}

/// The scored positions of each segment of a window: a plain window's are one request's.
fn segment_lengths(window: &Window) -> Vec<usize> {
    if window.segments.is_empty() {
        vec![window.scored.len()]
    } else {
        window.segments.clone()
    }
}

/// A segment's answer from its scored positions: log-probabilities summed in order, in f64.
fn segment_answer(scores: &[TokenScore]) -> (f64, bool) {
    (scores.iter().map(|s| s.logprob as f64).sum(), scores.iter().all(|s| s.greedy))
}

/// [`loglikelihood`] with an optional resume log: windows whose requests are all in it are not
/// scored again, and the requests of every few passes are appended to it as soon as they finish.
/// The results are bit-identical to a run without the log: the windows are planned over all
/// requests either way, and a logged answer is the very number the window gave.
pub fn loglikelihood_resumable(model: &Model, requests: &[Request], options: &LoglikOptions, resume: Option<&std::path::Path>) -> Result<LoglikOutput> {
    let start = web_time::Instant::now();
    let positions = model.spec.max_positions;
    let max_length = options.max_length.unwrap_or(positions);
    if max_length > positions {
        return Err(Error::bad_input(format!(
            "--ctx {max_length} is longer than the model's {positions} positions (max_position_embeddings); use --ctx \
             {positions} or less"
        )));
    }
    if max_length < 1 {
        return Err(Error::bad_input("--ctx must be at least 1"));
    }
    let mut encoded = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let request_encoded = encode_request(&model.tokenizer, request)?;
        if request_encoded.continuation.is_empty() {
            return Err(Error::bad_input(format!(
                "request {i} ({}): the continuation has no tokens of its own, so there is nothing to score",
                describe(request)
            )));
        }
        if request_encoded.continuation.len() > max_length {
            return Err(Error::bad_input(format!(
                "request {i} ({}): the continuation is {} tokens, longer than the maximum length {max_length}",
                describe(request),
                request_encoded.continuation.len()
            )));
        }
        encoded.push(request_encoded);
    }
    let (windows, owners, truncated) = plan_windows(&encoded, max_length);
    let keys: Vec<Vec<String>> = windows.iter().map(segment_keys).collect();
    let mut log = match resume {
        Some(path) => Some(RequestLog::open(path, &RequestLogHeader { perplex_eval_resume: 1, model_files: model_fingerprint(model)?, sums: sums_setting(model) })?),
        None => None,
    };
    // Each window's answer per segment, where the log has all of them.
    let mut answers: Vec<Option<Vec<(f64, bool)>>> = keys
        .iter()
        .map(|keys| {
            let log = log.as_ref()?;
            keys.iter().map(|key| log.get(key).map(|e| (e.ll, e.is_greedy))).collect()
        })
        .collect();
    // The windows still to score, longest first (as `score_windows` orders them), so that groups
    // of a few passes each batch like one call over all of them would.
    let mut pending: Vec<usize> = (0..windows.len()).filter(|&w| answers[w].is_none()).collect();
    pending.sort_by_key(|&w| std::cmp::Reverse(windows[w].input.len()));
    let pending_windows: Vec<Window> = pending.iter().map(|&w| windows[w].clone()).collect();

    let total: usize = pending_windows.iter().map(|w| w.scored.len()).sum();
    let progress = watcher(&options.progress);
    progress.start(total as u64);
    let mut batch = 0;
    let mut processed = 0;
    let mut next = 0;
    while next < pending.len() {
        if stop_requested() {
            progress.finish();
            let answered: usize = owners.iter().zip(&answers).filter(|(_, a)| a.is_some()).map(|(o, _)| o.iter().map(Vec::len).sum::<usize>()).sum();
            return Err(Error::interrupted(format!(
                "interrupted: {answered} of {} requests answered{}",
                requests.len(),
                match resume {
                    Some(path) => format!(" and kept in {}; rerun the same command to continue", path.display()),
                    None => String::new(),
                }
            )));
        }
        let mut end = next;
        for _ in 0..PASSES_PER_GROUP {
            if end < pending.len() {
                end += model.gpu_model.windows_per_pass(pending_windows[end].input.len(), options.batch).min(pending.len() - end);
            }
        }
        let group = &pending_windows[next..end];
        let (scores, group_batch) = pollster::block_on(score_windows(model, group, options.batch, |n| progress.advance(n as u64)))?;
        batch = batch.max(group_batch);
        processed += group.iter().map(|w| w.input.len()).sum::<usize>();
        let mut answered = Vec::new();
        let mut new_keys = std::collections::HashSet::new();
        for ((&w, window), window_scores) in pending[next..end].iter().zip(group).zip(&scores) {
            let mut rest = &window_scores[..];
            let mut answer = Vec::new();
            for (length, key) in segment_lengths(window).into_iter().zip(&keys[w]) {
                let (mine, tail) = rest.split_at(length);
                rest = tail;
                let (ll, is_greedy) = segment_answer(mine);
                // A window rescored because the log holds only some of its requests (a crash
                // between them), or twice in the plan (identical truncated requests), is logged once.
                if log.as_ref().is_some_and(|log| log.get(key).is_none()) && new_keys.insert(key) {
                    answered.push(ScoredRequest { request: key.clone(), ll, is_greedy });
                }
                answer.push((ll, is_greedy));
            }
            answers[w] = Some(answer);
        }
        if let Some(log) = log.as_mut() {
            log.append_all(answered)?;
        }
        next = end;
    }
    progress.finish();

    let mut results = vec![None; requests.len()];
    for ((window, answered), answer) in windows.iter().zip(&owners).zip(answers) {
        let answer = answer.expect("every window is answered");
        for ((length, requests), (ll, is_greedy)) in segment_lengths(window).into_iter().zip(answered).zip(answer) {
            for &r in requests {
                results[r] = Some(Loglikelihood { ll, is_greedy, tokens: length, truncated: truncated[r] });
            }
        }
    }
    Ok(LoglikOutput {
        results: results.into_iter().map(|r| r.expect("every request has a window")).collect(),
        truncated: truncated.iter().filter(|&&t| t).count(),
        max_length,
        batch,
        positions: processed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace() {
        for c in [' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}', '\u{1c}', '\u{1f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{3000}'] {
            assert!(is_python_space(c), "{c:?}");
        }
        for c in ['a', '\u{200b}', '\u{180e}', '\u{feff}', '_'] {
            assert!(!is_python_space(c), "{c:?}");
        }
        assert_eq!(python_strip("\u{1c} a b\n"), "a b");
    }

    fn encoded(context: &[u32], continuation: &[u32]) -> EncodedRequest {
        EncodedRequest { context: context.to_vec(), continuation: continuation.to_vec() }
    }

    #[test]
    fn windows_score_the_continuation() {
        let (w, cut) = request_window(3, &encoded(&[1, 2, 3], &[4, 5]), 10);
        assert!(!cut);
        assert_eq!(w.input, vec![1, 2, 3, 4]);
        assert_eq!(w.targets, vec![2, 3, 4, 5]);
        assert_eq!(w.scored, 2..4);
        assert_eq!(w.doc, 3);
        assert_eq!(w.first_target, 1);
    }

    #[test]
    fn choices_of_one_context_share_a_packed_window() {
        let requests = [encoded(&[1, 2, 3], &[7, 8]), encoded(&[1, 2, 3], &[5]), encoded(&[9], &[4]), encoded(&[1, 2, 3], &[7, 8])];
        let (windows, owners, truncated) = plan_windows(&requests, 10);
        assert_eq!(truncated, vec![false; 4]);
        // Context [1, 2, 3]: shared row [1], then per continuation (in token order) a segment
        // starting with the context's last token; the duplicate request shares its segment.
        assert_eq!(windows[0].input, vec![1, 2, 3, 3, 7]);
        assert_eq!(windows[0].targets, vec![2, 3, 5, 7, 8]);
        assert_eq!(windows[0].segments, vec![1, 2]);
        assert_eq!(windows[0].scored, 2..5);
        assert_eq!(owners[0], vec![vec![1], vec![0, 3]]);
        // A context with one continuation is a plain window.
        assert_eq!(windows[1], request_window(2, &requests[2], 10).0);
        assert_eq!(owners[1], vec![vec![2]]);
        assert_eq!(windows.len(), 2);

        // Any order of the requests gives the same windows.
        let reversed: Vec<EncodedRequest> = requests.iter().rev().cloned().collect();
        let (again, _, _) = plan_windows(&reversed, 10);
        let shape = |w: &Window| (w.input.clone(), w.targets.clone(), w.scored.clone(), w.segments.clone());
        assert_eq!(again.iter().map(shape).collect::<Vec<_>>(), windows.iter().map(shape).collect::<Vec<_>>());

        // Packed windows hold at most max_length rows: [1, 2, 3] + [5] takes 4, [7, 8] goes alone.
        let (windows, owners, _) = plan_windows(&requests, 4);
        assert!(windows.iter().all(|w| w.segments.is_empty() && w.input.len() <= 4));
        assert_eq!(owners, vec![vec![vec![1]], vec![vec![0, 3]], vec![vec![2]]]);
    }

    #[test]
    fn windows_truncate_on_the_left() {
        // (ctx + cont)[-(L+1):][:-1] with L = 4: [3, 4, 5, 6] predicts [4, 5, 6, 7].
        let (w, cut) = request_window(0, &encoded(&[1, 2, 3, 4, 5], &[6, 7]), 4);
        assert!(cut);
        assert_eq!(w.input, vec![3, 4, 5, 6]);
        assert_eq!(w.targets, vec![4, 5, 6, 7]);
        assert_eq!(w.scored, 2..4);
        assert_eq!(w.first_target, 3);
        // Exactly L + 1 tokens fit without truncation.
        let (w, cut) = request_window(0, &encoded(&[1, 2, 3], &[4, 5]), 4);
        assert!(!cut);
        assert_eq!(w.input.len(), 4);
    }
}
