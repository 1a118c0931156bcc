//! Typed reads of GGUF metadata, and the metadata mapped into a [`Config`] as transformers' GGUF
//! loader maps it, with llama.cpp's defaults and rules where transformers leaves a field to the
//! model class (the family's `Gguf::config`).

use super::{bad, Array, GgufFile, Value};
use crate::error::{Error, Result};
use crate::model::config::{Config, RopeScalingConfig};
use crate::model::families::MAX_LAYERS;
use crate::model::ModelSpec;

impl GgufFile {
    fn missing(&self, key: &str) -> Error {
        bad(&self.path, format!("GGUF metadata has no '{key}', which a {} model needs", self.family.name()))
    }

    pub(crate) fn wrong_type(&self, key: &str, expected: &str) -> Error {
        bad(&self.path, format!("GGUF metadata '{key}' should be {expected}, found {:?}", self.metadata.get(key)))
    }

    /// `<architecture>.<key>`, e.g. `llama.block_count`.
    pub(crate) fn arch_key(&self, key: &str) -> String {
        let arch = self.metadata.get("general.architecture").and_then(Value::as_str).unwrap_or_default();
        format!("{arch}.{key}")
    }

    /// Key/value heads; llama.cpp's default is one per query head.
    pub(super) fn kv_heads(&self) -> Result<usize> {
        match self.metadata.get(&self.arch_key("attention.head_count_kv")) {
            Some(_) => self.arch_uniform_usize("attention.head_count_kv"),
            None => self.arch_uniform_usize("attention.head_count"),
        }
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().and_then(|v| usize::try_from(v).ok()).map(Some).ok_or_else(|| self.wrong_type(key, "a non-negative integer")),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong_type(key, "a number")),
        }
    }

    /// A number as config.json would hold it (f32).
    pub(crate) fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        Ok(self.opt_f64(key)?.map(|x| x as f32))
    }

    pub(super) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong_type(key, "a string")),
        }
    }

    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.wrong_type(key, "true or false")),
        }
    }

    fn arch_usize(&self, key: &str) -> Result<usize> {
        let key = self.arch_key(key);
        self.opt_usize(&key)?.ok_or_else(|| self.missing(&key))
    }

    /// A per-model count that llama.cpp also allows per layer (head counts): an array is accepted
    /// when all layers agree, which is all the engine can represent.
    pub(super) fn arch_uniform_usize(&self, key: &str) -> Result<usize> {
        let full = self.arch_key(key);
        let Some(Value::Array(array)) = self.metadata.get(&full) else { return self.arch_usize(key) };
        let values: Vec<u64> = match array {
            Array::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I32(v) => v.iter().filter_map(|&x| u64::try_from(x).ok()).collect(),
            Array::U64(v) => v.clone(),
            _ => return Err(self.wrong_type(&full, "a count or an array of counts")),
        };
        match values.split_first() {
            Some((&first, rest)) if rest.iter().all(|&v| v == first) => {
                usize::try_from(first).map_err(|_| self.wrong_type(&full, "a count"))
            }
            _ => Err(bad(&self.path, format!("'{full}' differs between layers ({values:?}); perplex needs the same value in every layer"))),
        }
    }

    pub(super) fn opt_u32_id(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        match self.opt_usize(key)? {
            None => Ok(None),
            Some(id) if id < vocab => Ok(Some(id as u32)),
            Some(id) => Err(bad(&self.path, format!("'{key}' is {id}, outside the vocabulary of {vocab} tokens"))),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<&[String]> {
        match self.metadata.get(key) {
            Some(Value::Array(Array::String(v))) => Ok(v),
            Some(_) => Err(self.wrong_type(key, "an array of strings")),
            None => Err(bad(&self.path, format!("GGUF metadata has no '{key}'; the file carries no tokenizer"))),
        }
    }

    // ---- the config ----------------------------------------------------------------------------

    /// The spec of the model in this file.
    pub fn spec(&self) -> Result<ModelSpec> {
        self.family.spec(&self.config()?)
    }

    /// The file's config, from `<arch>.*` metadata as transformers' GGUF loader reads it, then
    /// what the family's architecture adds (`Gguf::config`).
    pub fn config(&self) -> Result<Config> {
        if self.by_name.contains_key("rope_freqs.weight") {
            return Err(bad(
                &self.path,
                "carries rope_freqs.weight (per-frequency RoPE factors, as llama.cpp stores Llama 3.1 rope scaling); \
                 perplex cannot reproduce those positions yet",
            ));
        }
        let embedding = self
            .by_name
            .get("token_embd.weight")
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| bad(&self.path, "has no token_embd.weight tensor"))?;
        let vocab_size = embedding.dims.get(1).copied().unwrap_or(1);
        let hidden = self.arch_usize("embedding_length")?;
        let layers = self.arch_usize("block_count")?;
        // Per-layer tables are built from this count before any tensor is read; the family
        // rules' limit applies here already.
        if layers > MAX_LAYERS {
            let key = self.arch_key("block_count");
            return Err(bad(&self.path, format!("'{key}' is {layers}, more layers than any model has (perplex reads at most {MAX_LAYERS}; the file is corrupt)")));
        }
        let heads = self.arch_uniform_usize("attention.head_count")?;
        let kv_heads = self.kv_heads()?;
        let key_length = self.opt_usize(&self.arch_key("attention.key_length"))?;
        if let (Some(k), Some(v)) = (key_length, self.opt_usize(&self.arch_key("attention.value_length"))?) {
            if k != v {
                return Err(bad(&self.path, format!("keys of {k} and values of {v} dimensions per head; perplex needs them equal")));
            }
        }
        let eps_key = self.arch_key("attention.layer_norm_rms_epsilon");
        let eps = self.opt_f32(&eps_key)?.ok_or_else(|| self.missing(&eps_key))?;
        let mut config = Config {
            source: self.path.clone(),
            model_type: Some(self.family.name().to_string()),
            hidden_size: Some(hidden),
            intermediate_size: Some(self.arch_usize("feed_forward_length")?),
            num_hidden_layers: Some(layers),
            num_attention_heads: Some(heads),
            num_key_value_heads: Some(kv_heads),
            head_dim: key_length,
            rms_norm_eps: Some(eps),
            rope_theta: Some(self.opt_f32(&self.arch_key("rope.freq_base"))?.unwrap_or(10000.0)),
            max_position_embeddings: Some(self.arch_usize("context_length")?),
            vocab_size: Some(vocab_size),
            tie_word_embeddings: Some(!self.by_name.contains_key("output.weight")),
            rope_scaling: self.rope_scaling()?,
            ..Config::default()
        };
        (self.architecture.config)(self, &mut config)?;
        Ok(config)
    }

    /// `rope_scaling` from llama.cpp's `rope.scaling.*` keys (type "linear" when unstated,
    /// factor 0 meaning none, the older `rope.scale_linear` key as a fallback).
    fn rope_scaling(&self) -> Result<Option<RopeScalingConfig>> {
        let kind = self.opt_str(&self.arch_key("rope.scaling.type"))?.unwrap_or("linear");
        let factor = match self.opt_f64(&self.arch_key("rope.scaling.factor"))? {
            Some(f) => Some(f),
            None => self.opt_f64(&self.arch_key("rope.scale_linear"))?,
        }
        .filter(|&f| f != 0.0);
        Ok(match (kind, factor) {
            ("none", _) | ("linear", None) => None,
            ("linear", Some(factor)) => {
                Some(RopeScalingConfig { rope_type: Some("linear".into()), factor: Some(factor as f32), ..RopeScalingConfig::default() })
            }
            // Passed on so that the family's rules name what they do not implement.
            (other, factor) => {
                let original = self.opt_usize(&self.arch_key("rope.scaling.original_context_length"))?;
                Some(RopeScalingConfig {
                    rope_type: Some(other.to_string()),
                    factor: Some(factor.unwrap_or(1.0) as f32),
                    original_max_position_embeddings: original.map(|n| n as f64 as f32),
                    ..RopeScalingConfig::default()
                })
            }
        })
    }
}
