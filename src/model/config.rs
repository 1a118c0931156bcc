//! config.json as typed values: the fields perplex reads, named as transformers names them. A
//! model directory's config.json is read into a [`Config`] here; a GGUF file's metadata is mapped
//! into the same struct (gguf/metadata.rs). Which fields a family reads, and its defaults for the
//! absent ones, are the family's (families/).

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The fields of config.json that decide a model's numbers. `None` is an absent (or null) field,
/// which the family fills with its default.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where the values came from, for errors: a config.json, or a GGUF file.
    pub source: PathBuf,
    pub model_type: Option<String>,
    /// `hidden_size`, or GPT-2's `n_embd`.
    pub hidden_size: Option<usize>,
    /// `num_hidden_layers`, or GPT-2's `n_layer`.
    pub num_hidden_layers: Option<usize>,
    /// `num_attention_heads`, or GPT-2's `n_head`.
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    /// `max_position_embeddings`, or GPT-2's `n_positions`.
    pub max_position_embeddings: Option<usize>,
    pub intermediate_size: Option<usize>,
    /// GPT-2's MLP width.
    pub n_inner: Option<usize>,
    pub vocab_size: Option<usize>,
    pub rms_norm_eps: Option<f32>,
    /// GPT-NeoX's norm epsilon.
    pub layer_norm_eps: Option<f32>,
    /// GPT-2's norm epsilon.
    pub layer_norm_epsilon: Option<f32>,
    pub hidden_act: Option<String>,
    /// Gemma's activation (it also reads `hidden_act`).
    pub hidden_activation: Option<String>,
    /// GPT-2's activation.
    pub activation_function: Option<String>,
    /// `partial_rotary_factor`, or GPT-NeoX's `rotary_pct`.
    pub partial_rotary_factor: Option<f32>,
    /// transformers 5's `rope_parameters.rope_theta`, `rope_theta`, or GPT-NeoX's `rotary_emb_base`.
    pub rope_theta: Option<f32>,
    /// transformers 5's `rope_parameters`, or the classic `rope_scaling`.
    pub rope_scaling: Option<RopeScalingConfig>,
    /// Gemma 3's RoPE base for its local (sliding-window) layers.
    pub rope_local_base_freq: Option<f32>,
    pub sliding_window: Option<usize>,
    /// Qwen 2's switch for sliding-window attention.
    pub use_sliding_window: Option<bool>,
    /// Gemma 3's per-layer attention: true for "sliding_attention", false for anything else.
    pub layer_types: Option<Vec<bool>>,
    /// Gemma 3's older form of `layer_types`: every n-th layer is global.
    pub sliding_window_pattern: Option<usize>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    /// Gemma 2/3: queries are scaled by 1/sqrt of this instead of 1/sqrt(head_dim).
    pub query_pre_attn_scalar: Option<f32>,
    pub attn_logit_softcapping: Option<f32>,
    pub final_logit_softcapping: Option<f32>,
    /// GPT-NeoX's parallel attention and MLP.
    pub use_parallel_residual: Option<bool>,
    pub tie_word_embeddings: Option<bool>,
}

/// `rope_scaling` (or `rope_parameters`) as written; the family's spec decides which kinds it
/// implements (families/mod.rs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RopeScalingConfig {
    /// `rope_type`, or the older `type`; absent means "default".
    pub rope_type: Option<String>,
    pub factor: Option<f32>,
    pub low_freq_factor: Option<f32>,
    pub high_freq_factor: Option<f32>,
    pub original_max_position_embeddings: Option<f32>,
}

/// `text`, the contents of `path`, as JSON.
pub fn parse_json(text: &str, path: &Path) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::bad_input(format!("{}: invalid JSON: {e}", path.display())))
}

/// Reads config.json fields with errors that name the file and the key.
struct Json<'a> {
    path: &'a Path,
    json: Value,
}

/// A type a config.json value is read as, and what an error says was expected instead.
trait FromValue: Sized {
    const EXPECTED: &'static str;
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for usize {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_value(v: &Value) -> Option<usize> {
        v.as_u64().map(|n| n as usize)
    }
}

impl FromValue for f32 {
    const EXPECTED: &'static str = "a number";
    fn from_value(v: &Value) -> Option<f32> {
        v.as_f64().map(|x| x as f32)
    }
}

impl FromValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_value(v: &Value) -> Option<bool> {
        v.as_bool()
    }
}

impl Json<'_> {
    /// An optional field: absent or null is `None`, a value of the wrong type an error.
    fn opt<T: FromValue>(&self, key: &str) -> Result<Option<T>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::from_value(v).map(Some).ok_or_else(|| {
                Error::bad_input(format!("{}: \"{key}\" should be {}, found {v}", self.path.display(), T::EXPECTED))
            }),
        }
    }

    /// The first of `keys` present (families name the same thing differently).
    fn first_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        for key in keys {
            if let Some(v) = self.opt(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// A string field; a value of another type counts as absent.
    fn str(&self, key: &str) -> Option<String> {
        self.json.get(key).and_then(|v| v.as_str()).map(str::to_string)
    }

    /// transformers 5's `rope_parameters` (an object) or the classic `rope_scaling`; a scaling
    /// that is not an object has no type, which means "default".
    fn rope_scaling(&self) -> Option<RopeScalingConfig> {
        let scaling = self.rope_parameters().or_else(|| self.json.get("rope_scaling")).filter(|s| !s.is_null())?;
        let number = |key: &str| scaling.get(key).and_then(Value::as_f64).map(|x| x as f32);
        Some(RopeScalingConfig {
            rope_type: scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).map(str::to_string),
            factor: number("factor"),
            low_freq_factor: number("low_freq_factor"),
            high_freq_factor: number("high_freq_factor"),
            original_max_position_embeddings: number("original_max_position_embeddings"),
        })
    }

    fn rope_parameters(&self) -> Option<&Value> {
        self.json.get("rope_parameters").filter(|v| v.is_object())
    }

    fn rope_theta(&self) -> Result<Option<f32>> {
        if let Some(theta) = self.rope_parameters().and_then(|p| p.get("rope_theta")).and_then(Value::as_f64) {
            return Ok(Some(theta as f32));
        }
        Ok(match self.opt("rope_theta")? {
            Some(theta) => Some(theta),
            None => self.opt("rotary_emb_base")?,
        })
    }
}

/// A [`Config`] literal in which a field named alone, `field,`, is read from the config.json key of
/// its own name (the fields are named as transformers names them) with [`Json::opt`], and `field:
/// value,` is given as usual. The fields are read in the order written, so an error names the first
/// bad key, as a plain literal would.
macro_rules! config_from_keys {
    ($json:ident; $($fields:tt)*) => {
        config_from_keys!(@read $json [] $($fields)*)
    };
    (@read $json:ident [$($done:tt)*] $field:ident, $($rest:tt)*) => {
        config_from_keys!(@read $json [$($done)* $field: $json.opt(stringify!($field))?,] $($rest)*)
    };
    (@read $json:ident [$($done:tt)*] $field:ident: $value:expr, $($rest:tt)*) => {
        config_from_keys!(@read $json [$($done)* $field: $value,] $($rest)*)
    };
    (@read $json:ident [$($done:tt)*]) => {
        Config { $($done)* }
    };
}

impl Config {
    /// config.json contents; `path` names them in errors.
    pub fn from_json(json: Value, path: &Path) -> Result<Config> {
        let json = Json { path, json };
        let max_positions = json.opt("max_position_embeddings")?;
        let n_positions = json.opt("n_positions")?;
        let partial_rotary_factor = json.opt("partial_rotary_factor")?;
        let rotary_pct = json.opt("rotary_pct")?;
        Ok(config_from_keys!(json;
            source: path.to_path_buf(),
            model_type: json.str("model_type"),
            hidden_size: json.first_usize(&["hidden_size", "n_embd"])?,
            num_hidden_layers: json.first_usize(&["num_hidden_layers", "n_layer"])?,
            num_attention_heads: json.first_usize(&["num_attention_heads", "n_head"])?,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: max_positions.or(n_positions),
            intermediate_size,
            n_inner,
            vocab_size,
            rms_norm_eps,
            layer_norm_eps,
            layer_norm_epsilon,
            hidden_act: json.str("hidden_act"),
            hidden_activation: json.str("hidden_activation"),
            activation_function: json.str("activation_function"),
            partial_rotary_factor: partial_rotary_factor.or(rotary_pct),
            rope_theta: json.rope_theta()?,
            rope_scaling: json.rope_scaling(),
            rope_local_base_freq,
            sliding_window,
            use_sliding_window,
            layer_types: json
                .json
                .get("layer_types")
                .and_then(Value::as_array)
                .map(|types| types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()),
            sliding_window_pattern,
            attention_bias,
            mlp_bias,
            query_pre_attn_scalar,
            attn_logit_softcapping,
            final_logit_softcapping,
            use_parallel_residual,
            tie_word_embeddings,
        ))
    }

    /// A field the model cannot do without.
    pub fn require<T>(&self, value: Option<T>, key: &str) -> Result<T> {
        value.ok_or_else(|| Error::bad_input(format!("{}: missing \"{key}\"", self.source.display())))
    }

    /// A setting perplex does not implement: refused rather than ignored.
    pub fn unsupported(&self, what: String) -> Error {
        Error::bad_input(format!(
            "{}: {what}. perplex refuses rather than compute numbers that differ from the reference; \
             please report the model so support can be added.",
            self.source.display()
        ))
    }

    /// A value no model has.
    pub fn implausible(&self, what: String) -> Error {
        Error::bad_input(format!("{}: {what}; the file is corrupt or not a model's config.json", self.source.display()))
    }
}
