//! How a document's tokens become model inputs, for each reference method (ARCHITECTURE.md, "Reference semantics"):
//! rolling = lm-evaluation-harness `loglikelihood_rolling`, sliding = the Hugging Face
//! fixed-length-model perplexity guide, chunks = llama.cpp `llama-perplexity`.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowMode {
    Rolling,
    Sliding { stride: usize },
    Chunks,
}

impl WindowMode {
    pub fn name(&self) -> &'static str {
        match self {
            WindowMode::Rolling => "rolling",
            WindowMode::Sliding { .. } => "sliding",
            WindowMode::Chunks => "chunks",
        }
    }

    /// The mode called `name` (as [`WindowMode::name`] spells it); a sliding window's stride is
    /// left at 0, for [`crate::score::PplOptions::set_stride`] to settle.
    pub fn named(name: &str) -> Option<WindowMode> {
        [WindowMode::Rolling, WindowMode::Sliding { stride: 0 }, WindowMode::Chunks].into_iter().find(|mode| mode.name() == name)
    }
}

/// One model input: `input[j]` is fed at position j and `targets[j]` is what position j predicts.
/// Only positions in `scored` count; the target at position j is token `first_target + j` of the
/// document.
///
/// A packed window (non-empty `segments`, see `loglikelihood`) ends with segments of these row
/// counts, each continuing the rows before the first segment on its own: a segment row attends to
/// those shared rows and to its own segment, at positions that restart where the shared rows end.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub doc: usize,
    pub input: Vec<u32>,
    pub targets: Vec<u32>,
    pub scored: Range<usize>,
    pub first_target: usize,
    pub segments: Vec<usize>,
}

impl Window {
    /// Rows before the first segment (all of them in a plain window).
    pub fn shared_rows(&self) -> usize {
        self.input.len() - self.segments.iter().sum::<usize>()
    }

    /// A window over `stream[start..end]` predicting the next token at every position (the last
    /// position predicts nothing). `stream_offset` = stream index of document token 0.
    fn over_stream(doc: usize, stream: &[u32], start: usize, end: usize, scored: Range<usize>, stream_offset: usize) -> Window {
        let input = stream[start..end].to_vec();
        let targets = (start..end).map(|i| stream.get(i + 1).copied().unwrap_or(0)).collect();
        Window { doc, input, targets, scored, first_target: start + 1 - stream_offset, segments: Vec::new() }
    }
}

/// lm-evaluation-harness rolling windows (`get_rolling_token_windows` with context_len 1 and
/// `make_disjoint_window`): every token is scored once; the first window is conditioned on the
/// prefix token, later windows on the `len - predicted` tokens before them, as full-length inputs.
pub fn rolling(doc: usize, tokens: &[u32], prefix: u32, len: usize) -> Vec<Window> {
    let mut windows = Vec::new();
    if tokens.is_empty() {
        return windows;
    }
    let first = len.min(tokens.len());
    let mut input = vec![prefix];
    input.extend_from_slice(&tokens[..first - 1]);
    windows.push(Window { doc, input, targets: tokens[..first].to_vec(), scored: 0..first, first_target: 0, segments: Vec::new() });
    let mut predicted = first;
    while predicted < tokens.len() {
        let new = (tokens.len() - predicted).min(len);
        let end = predicted + new;
        // Input tokens[end - len - 1 .. end - 1] predicts tokens[end - len .. end].
        let start = end - len - 1;
        windows.push(Window {
            doc,
            input: tokens[start..end - 1].to_vec(),
            targets: tokens[start + 1..end].to_vec(),
            scored: len - new..len,
            first_target: start + 1,
            segments: Vec::new(),
        });
        predicted = end;
    }
    windows
}

/// Hugging Face sliding windows: `len` tokens advancing by `stride`, each scoring only the tokens
/// no earlier window scored. Token 0 has no context and is never scored.
pub fn sliding(doc: usize, tokens: &[u32], len: usize, stride: usize) -> Vec<Window> {
    let mut windows = Vec::new();
    let n = tokens.len();
    let mut scored_until = 1; // first token index not yet scored
    let mut begin = 0;
    while begin < n {
        let end = (begin + len).min(n);
        if end > scored_until.max(begin + 1) {
            let from = scored_until.max(begin + 1);
            // Position j predicts token begin + j + 1.
            windows.push(Window::over_stream(doc, tokens, begin, end, from - begin - 1..end - begin - 1, 0));
        }
        scored_until = scored_until.max(end);
        if end == n {
            break;
        }
        begin += stride;
    }
    windows
}

/// llama.cpp chunks: the document as one stream (BOS first when the tokenizer adds one), cut into
/// whole chunks of `len` tokens (the tail is dropped); each chunk's first token is replaced by BOS
/// where the model uses one, and only its second half is scored.
pub fn chunks(doc: usize, tokens: &[u32], len: usize, bos: Option<u32>) -> Vec<Window> {
    let mut stream = Vec::with_capacity(tokens.len() + 1);
    stream.extend(bos);
    stream.extend_from_slice(tokens);
    let offset = bos.is_some() as usize;
    let first = len / 2;
    (0..stream.len() / len)
        .map(|c| {
            let mut window = Window::over_stream(doc, &stream, c * len, (c + 1) * len, first..len - 1, offset);
            if let Some(bos) = bos {
                window.input[0] = bos;
            }
            window
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored_targets(windows: &[Window]) -> Vec<(usize, u32)> {
        windows
            .iter()
            .flat_map(|w| w.scored.clone().map(move |j| (w.first_target + j, w.targets[j])))
            .collect()
    }

    #[test]
    fn rolling_scores_every_token_once_with_full_windows() {
        let tokens: Vec<u32> = (10..33).collect();
        let windows = rolling(0, &tokens, 1, 8);
        let scored = scored_targets(&windows);
        assert_eq!(scored, tokens.iter().enumerate().map(|(i, &t)| (i, t)).collect::<Vec<_>>());
        assert_eq!(windows[0].input[0], 1);
        for w in &windows[1..] {
            assert_eq!(w.input.len(), 8);
            // each input token is the document token before its target
            for j in 0..8 {
                assert_eq!(w.input[j], tokens[w.first_target + j - 1]);
            }
        }
    }

    #[test]
    fn sliding_scores_each_token_after_the_first_once() {
        let tokens: Vec<u32> = (0..30).collect();
        for (len, stride) in [(8, 3), (8, 7), (10, 4), (50, 5)] {
            let scored = scored_targets(&sliding(0, &tokens, len, stride));
            assert_eq!(scored, (1..30).map(|i| (i, i as u32)).collect::<Vec<_>>(), "len {len} stride {stride}");
        }
    }

    #[test]
    fn sliding_with_stride_equal_to_window_skips_window_starts() {
        // As in the Hugging Face guide: a window's first token has no context inside the window.
        let tokens: Vec<u32> = (0..30).collect();
        let scored: Vec<usize> = scored_targets(&sliding(0, &tokens, 8, 8)).into_iter().map(|(i, _)| i).collect();
        assert_eq!(scored, (1..30).filter(|i| i % 8 != 0).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_score_second_halves_of_whole_chunks() {
        let tokens: Vec<u32> = (100..125).collect(); // 25 tokens, +bos = 26 -> 3 chunks of 8
        let windows = chunks(0, &tokens, 8, Some(7));
        assert_eq!(windows.len(), 3);
        assert!(windows.iter().all(|w| w.input[0] == 7 && w.scored == (4..7)));
        // Chunk 1 covers stream 8..16 = tokens 7..15; position 4 predicts stream 13 = token 12.
        assert_eq!(windows[1].first_target + 4, 12);
        assert_eq!(windows[1].targets[4], tokens[12]);
    }
}
