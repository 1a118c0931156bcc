//! `tokenizer.json` (the `tokenizers` crate) plus the special tokens that scoring needs, read from
//! `tokenizer_config.json` and `config.json` the way transformers resolves them.

use crate::error::{Error, Result};
use serde_json::Value;
use super::ModelDir;

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether the tokenizer puts BOS in front of a text when special tokens are added
    /// (llama.cpp's `add_bos`): decides the first token of `--window chunks`.
    pub adds_bos: bool,
    pub vocab_size: usize,
}

fn special_token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    pub fn load(dir: &(impl ModelDir + ?Sized)) -> Result<TextTokenizer> {
        let path = dir.path("tokenizer.json");
        if !dir.has("tokenizer.json") {
            return Err(Error::bad_input(format!(
                "{}: missing; perplex needs the model's tokenizer.json (a \"fast\" tokenizer: convert with \
                 transformers' AutoTokenizer.from_pretrained(...).save_pretrained(dir))",
                path.display()
            )));
        }
        let text = dir.text("tokenizer.json").map_err(|e| Error::bad_input(format!("cannot load tokenizer: {}", e.message)))?;
        // tokenizers panics, rather than returning an error, on a JSON syntax error inside the
        // "decoder" object (found by fuzzing): a file that is not JSON is refused here first.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| Error::bad_input(format!("{}: cannot load tokenizer: invalid JSON: {e}", path.display())))?;
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| Error::bad_input(format!("{}: cannot load tokenizer: {e}", path.display())))?;
        let read = |name: &str| -> Value {
            let text = if dir.has(name) { dir.text(name).ok() } else { None };
            text.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or(Value::Null)
        };
        // transformers takes special tokens from tokenizer_config.json, then special_tokens_map.json;
        // config.json's ids are a last resort for directories that have neither file.
        let tokenizer_config = read("tokenizer_config.json");
        let special_map = read("special_tokens_map.json");
        let config = read("config.json");
        let has_token_files = !tokenizer_config.is_null() || !special_map.is_null();
        let resolve = |key: &str, id_key: &str| -> Option<u32> {
            let text = special_token_text(tokenizer_config.get(key)).or_else(|| special_token_text(special_map.get(key)));
            match text {
                Some(text) => inner.token_to_id(&text),
                None if has_token_files => None,
                None => config.get(id_key).and_then(|v| v.as_u64()).map(|v| v as u32),
            }
        };
        let bos = resolve("bos_token", "bos_token_id");
        let eos = resolve("eos_token", "eos_token_id");
        let adds_bos = match tokenizer_config.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(flag) => flag && bos.is_some(),
            None => {
                // Ask the tokenizer's post-processor what it does with special tokens.
                let probe = inner.encode("a", true).map(|e| e.get_ids().to_vec()).unwrap_or_default();
                bos.is_some() && probe.first() == bos.as_ref()
            }
        };
        let vocab_size = inner.get_vocab_size(true);
        Ok(TextTokenizer { inner, bos, eos, adds_bos, vocab_size })
    }

    /// A tokenizer built elsewhere (a GGUF file's vocabulary), with its special tokens.
    pub fn from_parts(inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Option<u32>, adds_bos: bool) -> TextTokenizer {
        let vocab_size = inner.get_vocab_size(true);
        TextTokenizer { inner, bos, eos, adds_bos: adds_bos && bos.is_some(), vocab_size }
    }

    /// Token ids of `text` without special tokens (what lm-evaluation-harness scores).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            // The tokenizer comes from the user's files (an unknown token missing from its own
            // vocabulary is the usual cause), so this is their input's fault, not the engine's.
            .map_err(|e| {
                Error::bad_input(format!(
                    "the model's tokenizer cannot encode the text ({e}); its tokenizer.json (or the GGUF file's vocabulary) \
                     is broken"
                ))
            })
    }

    /// The token that conditions the first token of a document: BOS if there is one, else EOS.
    pub fn prefix_token(&self) -> Result<u32> {
        self.bos.or(self.eos).ok_or_else(|| {
            Error::bad_input(
                "the tokenizer defines neither a BOS nor an EOS token, so the first token of a document cannot be \
                 scored; set bos_token in tokenizer_config.json",
            )
        })
    }

    pub fn decode_token(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
    }

    /// The text of a run of tokens (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// The text of a run of tokens with special tokens left out: how the harness decodes a
    /// generated answer (`skip_special_tokens=True`).
    pub fn decode_text(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// The vocabulary entry of `id` as stored (byte-level tokens unmapped), None past the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The ids of the added tokens marked special (never produced from ordinary text), increasing.
    pub fn special_tokens(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.inner.get_added_tokens_decoder().into_iter().filter(|(_, token)| token.special).map(|(id, _)| id).collect();
        ids.sort();
        ids
    }
}
