//! perplex in a browser page (web/index.html): a model from the files the visitor picks (or the
//! default model the page ships), scored on a text on the visitor's own GPU through WebGPU. The
//! same engine and kernels as the command line, awaited instead of blocked on (a page gets GPU
//! results only from its event loop): `perplex::score::perplexity_scored`.

use js_sys::{Promise, Uint8Array};
use perplex::data::Document;
use perplex::forward::Batch;
use perplex::gpu::{Gpu, GpuOptions};
use perplex::model::HeldFiles;
use perplex::score::{perplexity_scored, PplOptions, Progress, ProgressCounts, WindowMode};
use perplex::{ErrorKind, Model};
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

/// An error as the command line words it.
fn error(e: perplex::Error) -> JsValue {
    JsError::new(&e.message).into()
}

/// A model on the visitor's GPU.
#[wasm_bindgen]
pub struct Scorer {
    model: Rc<Model>,
    /// Tokens scored so far and in all, for the page's progress bar (it reads them between
    /// passes, while the engine awaits the GPU).
    counts: Arc<ProgressCounts>,
}

#[wasm_bindgen]
impl Scorer {
    /// Opens the browser's WebGPU adapter and loads a model from files (`names[i]` holds
    /// `contents[i]`): one `.gguf`, or `config.json`, `tokenizer.json`, `tokenizer_config.json`
    /// and `model.safetensors`. `label` names the model in messages.
    pub async fn load(label: String, names: Vec<String>, contents: Vec<Uint8Array>) -> Result<Scorer, JsValue> {
        let gpu = Gpu::open(&GpuOptions::default()).await.map_err(error)?;
        let mut files = HeldFiles::new(&label);
        for (name, bytes) in names.iter().zip(&contents) {
            files.insert(name, bytes.to_vec());
        }
        let model = Model::open_held(&files, gpu.clone()).map_err(error)?;
        gpu.settle().await.map_err(|e| match e.kind {
            ErrorKind::DeviceMemory => JsError::new(&format!("{label} does not fit in the memory of {}: {}", gpu.describe(), e.message)).into(),
            _ => error(e),
        })?;
        Ok(Scorer { model: Rc::new(model), counts: Arc::default() })
    }

    /// The adapter, as `perplex devices` names it.
    pub fn adapter(&self) -> String {
        self.model.adapter()
    }

    pub fn name(&self) -> String {
        self.model.name.clone()
    }

    /// Scores `text` as `perplex ppl` scores a text file (rolling windows of the model's default
    /// length): resolves to the JSON `perplex ppl --json` writes, with `tokens` added: each
    /// scored token's text, log-probability, whether it was the model's first choice, and the
    /// text of that first choice (`top`).
    pub fn score(&self, text: String) -> Promise {
        let (model, counts) = (self.model.clone(), self.counts.clone());
        wasm_bindgen_futures::future_to_promise(async move {
            let documents = [Document { name: "text".into(), text }];
            let progress: Arc<dyn Progress> = counts;
            let options = PplOptions { mode: WindowMode::Rolling, ctx: None, batch: Batch::Auto, per_token: true, progress: Some(progress) };
            let result = perplexity_scored(&model, &documents, &options, None).await.map_err(error)?;
            let mut json = perplex::report::ppl_json(&result, &model.name, &model.adapter());
            let tokens: Vec<serde_json::Value> = result
                .tokens
                .iter()
                .map(|t| {
                    let top = t.top.map(|id| model.tokenizer.decode_token(id));
                    serde_json::json!({ "text": model.tokenizer.decode_token(t.token_id), "logprob": t.logprob, "greedy": t.greedy, "top": top })
                })
                .collect();
            json["tokens"] = tokens.into();
            Ok(JsValue::from_str(&json.to_string()))
        })
    }

    /// Tokens scored so far in the running `score`, and in all.
    pub fn progress(&self) -> Vec<f64> {
        let (done, total) = self.counts.counts();
        vec![done as f64, total as f64]
    }
}
