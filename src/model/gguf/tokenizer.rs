//! The tokenizer a GGUF file carries, rebuilt as a `tokenizers::Tokenizer` that tokenizes as
//! llama.cpp does.

use super::{bad, Array, GgufFile, Value};
use crate::error::{Error, Result};
use crate::model::TextTokenizer;
use std::collections::HashSet;

/// A tokenizer read from a GGUF, with the special-token facts scoring needs
/// (what `TextTokenizer` is built from).
pub struct GgufTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether llama.cpp puts BOS in front of a text (`tokenizer.ggml.add_bos_token`).
    pub adds_bos: bool,
}

impl GgufFile {
    /// The tokenizer stored in the file, ready for scoring (see [`GgufFile::tokenizer_parts`]).
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        let parts = self.tokenizer_parts()?;
        Ok(TextTokenizer::from_parts(parts.tokenizer, parts.bos, parts.eos, parts.adds_bos))
    }

    /// The tokenizer stored in the file, as a `tokenizers::Tokenizer` that tokenizes as llama.cpp
    /// does: "gpt2" vocabularies are byte-level BPE from the stored merges with the pre-tokenizer
    /// that `tokenizer.ggml.pre` names; "llama" vocabularies are SentencePiece BPE, rebuilt as a
    /// BPE with byte fallback whose merges come from the token scores (as transformers converts
    /// SentencePiece models). Control tokens become special added tokens and user-defined tokens
    /// plain added tokens, both matched whole in the text.
    pub fn tokenizer_parts(&self) -> Result<GgufTokenizer> {
        use tokenizers::models::bpe::{Vocab, BPE};
        let model = self
            .opt_str("tokenizer.ggml.model")?
            .ok_or_else(|| bad(&self.path, "GGUF metadata has no tokenizer.ggml.model; the file carries no tokenizer"))?;
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = self.token_types(n)?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(id, token)| (token.clone(), id as u32)).collect();
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| bad(&self.path, format!("cannot build its tokenizer: {e}"));

        let (mut tokenizer, default_add_bos) = match model {
            "gpt2" => {
                let merges = self
                    .strings("tokenizer.ggml.merges")?
                    .iter()
                    .map(|m| {
                        // llama.cpp splits at the first space after the first character.
                        let cut = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
                        cut.map(|i| (m[..i].to_string(), m[i + 1..].to_string()))
                            .ok_or_else(|| bad(&self.path, format!("tokenizer merge '{m}' is not two tokens separated by a space")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(failed)?;
                let mut tokenizer = tokenizers::Tokenizer::new(bpe);
                let pre = self.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
                tokenizer.with_pre_tokenizer(Some(byte_level_pre_tokenizer(pre).ok_or_else(|| {
                    let known = [GPT2_NAMES, DIGITS_NAMES, LLAMA3_NAMES, QWEN2_NAMES].concat().join(", ");
                    bad(&self.path, format!("tokenizer.ggml.pre '{pre}' is not a pre-tokenizer perplex knows (known: {known})"))
                })?));
                tokenizer.with_decoder(Some(tokenizers::pre_tokenizers::byte_level::ByteLevel::default()));
                (tokenizer, false)
            }
            "llama" => {
                let scores = match self.metadata.get("tokenizer.ggml.scores") {
                    Some(Value::Array(Array::F32(s))) if s.len() >= n => s.as_slice(),
                    _ => return Err(self.wrong_type("tokenizer.ggml.scores", &format!("{n} token scores (f32)"))),
                };
                let merges = sentencepiece_merges(tokens, &vocab, scores);
                let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
                if let Some(unk) = self.opt_u32_id("tokenizer.ggml.unknown_token_id", n)? {
                    builder = builder.unk_token(tokens[unk as usize].clone());
                }
                let mut tokenizer = tokenizers::Tokenizer::new(builder.build().map_err(failed)?);
                // llama.cpp's default for SentencePiece vocabularies.
                let add_space_prefix = self.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                tokenizer.with_normalizer(Some(sentencepiece_normalizer(add_space_prefix)?));
                tokenizer.with_decoder(Some(sentencepiece_decoder(add_space_prefix)));
                (tokenizer, true)
            }
            other => {
                let message = format!("tokenizer model '{other}' is not supported (perplex reads \"gpt2\" and \"llama\" GGUF tokenizers)");
                return Err(bad(&self.path, message));
            }
        };

        let added = |wanted: i32, special: bool| -> Vec<tokenizers::AddedToken> {
            types
                .iter()
                .zip(tokens)
                .filter(|&(&t, _)| t == wanted)
                .map(|(_, token)| tokenizers::AddedToken::from(token.clone(), special).normalized(false))
                .collect()
        };
        tokenizer.add_special_tokens(&added(TOKEN_CONTROL, true));
        tokenizer.add_tokens(&added(TOKEN_USER_DEFINED, false));

        let bos = self.opt_u32_id("tokenizer.ggml.bos_token_id", n)?;
        let eos = self.opt_u32_id("tokenizer.ggml.eos_token_id", n)?;
        let adds_bos = self.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos) && bos.is_some();
        Ok(GgufTokenizer { tokenizer, bos, eos, adds_bos })
    }

    /// llama.cpp's token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte);
    /// all normal when the file has none.
    fn token_types(&self, n: usize) -> Result<Vec<i32>> {
        match self.metadata.get("tokenizer.ggml.token_type") {
            None => Ok(vec![1; n]),
            Some(Value::Array(Array::I32(types))) if types.len() >= n => Ok(types[..n].to_vec()),
            Some(_) => Err(self.wrong_type("tokenizer.ggml.token_type", &format!("{n} token types (i32)"))),
        }
    }
}

const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

// ---- tokenizer pieces -----------------------------------------------------------------------

/// GPT-2's split (transformers' ByteLevel regex).
const GPT2_NAMES: &[&str] = &[
    "default", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
    "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling",
];
/// GPT-2's split after splitting off every digit (llama.cpp's "\p{N}" first).
const DIGITS_NAMES: &[&str] = &["smollm", "codeshell", "exaone", "minerva-7b", "mellum2"];
const LLAMA3_NAMES: &[&str] =
    &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"];
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_NAMES: &[&str] = &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "hunyuan", "solar-open"];
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The Hugging Face pre-tokenizer equivalent to llama.cpp's for `tokenizer.ggml.pre` (the regexes
/// of llama-vocab.cpp, written as the models' own tokenizer.json files write them).
fn byte_level_pre_tokenizer(pre: &str) -> Option<tokenizers::PreTokenizerWrapper> {
    use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence, split::Split};
    use tokenizers::{PreTokenizerWrapper as P, SplitDelimiterBehavior};
    let byte_level = |use_regex: bool| P::ByteLevel(ByteLevel::new(false, true, use_regex));
    let split = |regex: &str| -> Option<P> {
        let split = Split::new(tokenizers::pre_tokenizers::split::SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false).ok()?;
        Some(P::Sequence(Sequence::new(vec![P::Split(split), byte_level(false)])))
    };
    if GPT2_NAMES.contains(&pre) {
        Some(byte_level(true))
    } else if DIGITS_NAMES.contains(&pre) {
        Some(P::Sequence(Sequence::new(vec![P::Digits(Digits::new(true)), byte_level(true)])))
    } else if LLAMA3_NAMES.contains(&pre) {
        split(LLAMA3_SPLIT)
    } else if QWEN2_NAMES.contains(&pre) {
        split(QWEN2_SPLIT)
    } else {
        None
    }
}

/// llama.cpp's SentencePiece input: spaces become "▁", and with `add_space_prefix` a space goes in
/// front of the text and of every piece that follows a special token (normalizers run on each
/// piece between added tokens, which is exactly where llama.cpp adds it).
fn sentencepiece_normalizer(add_space_prefix: bool) -> Result<tokenizers::NormalizerWrapper> {
    use tokenizers::normalizers::{prepend::Prepend, replace::Replace, utils::Sequence};
    use tokenizers::NormalizerWrapper as N;
    let replace = Replace::new(" ", "\u{2581}").map_err(|e| Error::internal(format!("tokenizer normalizer: {e}")))?;
    let mut steps = vec![N::Replace(replace)];
    if add_space_prefix {
        steps.push(N::Prepend(Prepend::new("\u{2581}".into())));
    }
    Ok(N::Sequence(Sequence::new(steps)))
}

fn sentencepiece_decoder(add_space_prefix: bool) -> tokenizers::DecoderWrapper {
    use tokenizers::decoders::{byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence, strip::Strip};
    use tokenizers::normalizers::replace::Replace;
    use tokenizers::DecoderWrapper as D;
    let mut steps = Vec::new();
    if let Ok(replace) = Replace::new("\u{2581}", " ") {
        steps.push(D::Replace(replace));
    }
    steps.push(D::ByteFallback(ByteFallback::new()));
    steps.push(D::Fuse(Fuse::new()));
    if add_space_prefix {
        steps.push(D::Strip(Strip::new(' ', 1, 0)));
    }
    D::Sequence(Sequence::new(steps))
}

/// BPE merges equivalent to SentencePiece's scores, ordered as transformers' `generate_merges`
/// orders them: every cut of a token into two tokens, best score first; ties go to the longer left
/// piece, then the longer right piece, then token order and the pieces' ids. SentencePiece joins
/// the adjacent pair whose union scores best, so applying merges in this order reproduces it.
fn sentencepiece_merges(tokens: &[String], vocab: &tokenizers::models::bpe::Vocab, scores: &[f32]) -> Vec<(String, String)> {
    struct Candidate<'a> {
        left: &'a str,
        right: &'a str,
        score: f32,
        left_chars: usize,
        right_chars: usize,
    }
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    for token in tokens {
        // A token listed twice counts once, with the id and score of its last listing.
        if !seen.insert(token.as_str()) {
            continue;
        }
        let Some(&id) = vocab.get(token) else { continue };
        let score = scores[id as usize];
        let mut local: Vec<Candidate> = token
            .char_indices()
            .skip(1)
            .map(|(cut, _)| token.split_at(cut))
            .filter(|(l, r)| vocab.contains_key(*l) && vocab.contains_key(*r))
            .map(|(left, right)| Candidate { left, right, score, left_chars: left.chars().count(), right_chars: right.chars().count() })
            .collect();
        local.sort_by_key(|c| (vocab[c.left], vocab[c.right]));
        candidates.extend(local);
    }
    // Stable: candidates with equal keys keep the order above. A NaN score (a corrupt file) ranks
    // last, so that the order is total (sort_by may panic otherwise).
    let rank = |score: f32| if score.is_nan() { f32::NEG_INFINITY } else { score };
    candidates.sort_by(|a, b| {
        rank(b.score)
            .partial_cmp(&rank(a.score))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates.into_iter().map(|c| (c.left.to_string(), c.right.to_string())).collect()
}
