//! `perplex._native`: the compiled half of the `perplex` Python package. It holds a
//! [`perplex::Model`] and calls the library's own scoring, generating and comparing functions
//! (`score::loglikelihood`, `score::perplexity`, `generate::generate`, `compare::compare`), so
//! Python gets exactly the command line's rules and numbers. The Python half
//! (`perplex/__init__.py`) turns arguments and results into Python shapes (NumPy arrays, dicts)
//! and documents the API.
//!
//! Every long call runs on a worker thread while the calling thread, with the GIL released, waits
//! in short ticks; between ticks it takes the GIL to look for Ctrl-C and to report progress.
//! Python runs signal handlers only in its main thread and only while that thread holds the GIL,
//! so this is how Ctrl-C reaches a run that is busy on the device: it sets the engine's stop
//! flag, the run stops between passes as the command line's does, and the call raises
//! `KeyboardInterrupt`.

use perplex::compare::{CompareOptions, Pair, Residency};
use perplex::data::Document;
use perplex::forward::Batch;
use perplex::generate::{self, GenOptions, GenRequest};
use perplex::gpu::{Gpu, GpuOptions, Sums};
use perplex::score::{self, LoglikOptions, PplOptions, PplResult, Progress, ProgressCounts, Request, WindowMode};
use perplex::{Error, ErrorKind};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long the calling thread leaves the GIL released between looks for Ctrl-C and progress.
const TICK: Duration = Duration::from_millis(50);

/// The exception a Python caller expects for each kind of engine error, with the command line's
/// message.
fn to_python(error: Error) -> PyErr {
    match error.kind {
        ErrorKind::BadInput => PyValueError::new_err(error.message),
        ErrorKind::DeviceMemory => PyMemoryError::new_err(error.message),
        ErrorKind::Interrupted => PyKeyboardInterrupt::new_err(error.message),
        ErrorKind::Internal => PyRuntimeError::new_err(error.message),
    }
}

/// Runs `work` on a worker thread with the GIL released (see the module documentation). With a
/// `progress` callable, calls `progress(done, total)` in tokens at every tick and once at the end.
fn run_released<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(Option<Arc<dyn Progress>>) -> perplex::Result<T> + Send,
) -> PyResult<T> {
    // What the run has reported so far, read by the calling thread at every tick.
    let counts = Arc::new(ProgressCounts::default());
    let reporter = progress.map(|_| counts.clone() as Arc<dyn Progress>);
    let report = |py_error: &mut Option<PyErr>| {
        if let (Some(callback), None) = (progress, &py_error) {
            let (done, total) = counts.counts();
            if let Err(error) = callback.call1((done, total)) {
                *py_error = Some(error);
            }
        }
    };
    std::thread::scope(|scope| {
        let caller = std::thread::current();
        let worker = scope.spawn(move || {
            let result = work(reporter);
            caller.unpark();
            result
        });
        // The first Python exception met while waiting: Ctrl-C, or one the progress callback raised.
        let mut py_error: Option<PyErr> = None;
        while !worker.is_finished() {
            // Woken early when the worker finishes.
            py.allow_threads(|| std::thread::park_timeout(TICK));
            if py_error.is_none() {
                if let Err(error) = py.check_signals() {
                    py_error = Some(error);
                }
                report(&mut py_error);
                if py_error.is_some() {
                    // The run stops after the passes in flight, as the command line's does.
                    score::STOP_REQUESTED.store(true, Ordering::SeqCst);
                }
            }
        }
        let result = worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if py_error.is_some() {
            score::STOP_REQUESTED.store(false, Ordering::SeqCst);
        } else {
            report(&mut py_error);
        }
        match py_error {
            Some(error) => Err(error),
            None => result.map_err(to_python),
        }
    })
}

/// A checkpoint on a device, ready to score. See `perplex.Model` for the documented API.
#[pyclass(frozen, module = "perplex._native")]
struct Model {
    model: perplex::Model,
    /// The caller's longest input / window length; None: the command line's defaults.
    ctx: Option<usize>,
    batch: Batch,
}

/// How texts are cut into windows: the `window`, `ctx` and `stride` arguments of the methods that
/// score whole texts.
struct Windows {
    mode: WindowMode,
    ctx: Option<usize>,
    stride: Option<usize>,
}

impl Windows {
    fn named(window: &str, ctx: Option<usize>, stride: Option<usize>) -> PyResult<Windows> {
        let mode = WindowMode::named(window).ok_or_else(|| {
            PyValueError::new_err(format!("window={window:?} is not a window mode: use \"rolling\", \"sliding\" or \"chunks\""))
        })?;
        Ok(Windows { mode, ctx, stride })
    }
}

/// The texts as documents, named by their place in the list.
fn documents(texts: Vec<String>) -> Vec<Document> {
    texts.into_iter().enumerate().map(|(i, text)| Document { name: i.to_string(), text }).collect()
}

impl Model {
    /// Scores whole texts over `windows`, as `perplex ppl` does.
    fn score_texts(&self, py: Python<'_>, texts: Vec<String>, windows: Windows, per_token: bool, progress: Option<&Bound<'_, PyAny>>) -> PyResult<PplResult> {
        let Windows { mode, ctx, stride } = windows;
        let documents = documents(texts);
        run_released(py, progress, |progress| {
            let mut options = PplOptions { mode, ctx: ctx.or(self.ctx), batch: self.batch, per_token, progress };
            options.set_stride(&self.model, stride)?;
            score::perplexity(&self.model, &documents, &options)
        })
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path_or_hub_id, revision=None, device=None, ctx=None, batch="auto", sums="plain"))]
    fn new(py: Python<'_>, path_or_hub_id: &str, revision: Option<&str>, device: Option<String>, ctx: Option<usize>, batch: &str, sums: &str) -> PyResult<Model> {
        let batch: Batch = batch.parse().map_err(PyValueError::new_err)?;
        let sums: Sums = sums.parse().map_err(PyValueError::new_err)?;
        let model = run_released(py, None, |_| {
            let gpu = Gpu::new(&GpuOptions { device, sums, ..GpuOptions::default() })?;
            perplex::Model::open_revision(path_or_hub_id, revision, gpu)
        })?;
        Ok(Model { model, ctx, batch })
    }

    /// What the model was opened from.
    #[getter]
    fn name(&self) -> &str {
        &self.model.name
    }

    /// The adapter the model runs on, as `perplex devices` describes it.
    #[getter]
    fn adapter(&self) -> String {
        self.model.adapter()
    }

    /// The longest input the model takes (its `max_position_embeddings`).
    #[getter]
    fn max_positions(&self) -> usize {
        self.model.spec.max_positions
    }

    #[getter]
    fn ctx(&self) -> Option<usize> {
        self.ctx
    }

    /// `(log-likelihood, is_greedy)` of each `(context, continuation)`, as `perplex eval` scores it.
    #[pyo3(signature = (requests, ctx=None, progress=None))]
    fn loglikelihood(
        &self,
        py: Python<'_>,
        requests: Vec<(String, String)>,
        ctx: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(f64, bool)>> {
        let requests: Vec<Request> = requests.into_iter().map(|(context, continuation)| Request { context, continuation }).collect();
        let output = run_released(py, progress, |progress| {
            score::loglikelihood(&self.model, &requests, &LoglikOptions { max_length: ctx.or(self.ctx), batch: self.batch, progress })
        })?;
        Ok(output.results.iter().map(|r| (r.ll, r.is_greedy)).collect())
    }

    /// The total log-likelihood of each text over rolling windows (`perplex ppl --window rolling`).
    #[pyo3(signature = (texts, ctx=None, progress=None))]
    fn loglikelihood_rolling(&self, py: Python<'_>, texts: Vec<String>, ctx: Option<usize>, progress: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<f64>> {
        let result = self.score_texts(py, texts, Windows { mode: WindowMode::Rolling, ctx, stride: None }, false, progress)?;
        Ok(result.documents.iter().map(|d| -d.nll).collect())
    }

    /// The `perplex ppl --json` report of the texts, as JSON text.
    #[pyo3(signature = (texts, window, ctx=None, stride=None, progress=None))]
    fn perplexity(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        window: &str,
        ctx: Option<usize>,
        stride: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let result = self.score_texts(py, texts, Windows::named(window, ctx, stride)?, false, progress)?;
        let report = perplex::report::ppl_json(&result, &self.model.name, &self.model.adapter());
        serde_json::to_string(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Every scored token of one text: (positions, token ids, log-probabilities, greedy flags).
    #[pyo3(signature = (text, window, ctx=None, stride=None, progress=None))]
    #[allow(clippy::type_complexity)]
    fn token_logprobs(
        &self,
        py: Python<'_>,
        text: String,
        window: &str,
        ctx: Option<usize>,
        stride: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Vec<usize>, Vec<u32>, Vec<f32>, Vec<bool>)> {
        let result = self.score_texts(py, vec![text], Windows::named(window, ctx, stride)?, true, progress)?;
        let tokens = &result.tokens;
        Ok((
            tokens.iter().map(|t| t.pos).collect(),
            tokens.iter().map(|t| t.token_id).collect(),
            tokens.iter().map(|t| t.logprob).collect(),
            tokens.iter().map(|t| t.greedy).collect(),
        ))
    }

    /// Greedy continuations of `(context, until, max_gen_toks)` requests, each cut before its
    /// first stop string, as `perplex generate` and lm-eval's HFLM `generate_until` make them.
    #[pyo3(signature = (requests, ctx=None, progress=None))]
    fn generate_until(
        &self,
        py: Python<'_>,
        requests: Vec<(String, Vec<String>, usize)>,
        ctx: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<String>> {
        let requests: Vec<GenRequest> = requests
            .into_iter()
            .map(|(context, until, max_gen_toks)| GenRequest {
                context,
                until,
                max_gen_toks,
            })
            .collect();
        let output = run_released(py, progress, |progress| {
            generate::generate(
                &self.model,
                &requests,
                &GenOptions {
                    max_length: ctx.or(self.ctx),
                    batch: self.batch,
                    progress,
                },
            )
        })?;
        Ok(output
            .results
            .into_iter()
            .map(|answer| answer.text)
            .collect())
    }

    /// The text's token ids, without special tokens (as every scoring rule tokenizes it).
    fn tokenize(&self, text: &str) -> PyResult<Vec<u32>> {
        self.model.tokenizer.encode(text).map_err(to_python)
    }
}

/// Every scored position of a comparison, as columns: document index, position, token id, KL
/// divergence, the base's and the model's log-probabilities, and their top tokens.
type ComparedTokens = (Vec<usize>, Vec<usize>, Vec<u32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>, Vec<u32>);

/// `perplex compare`: the `--json` report of `model` against `base` on the texts, as JSON text,
/// and with `per_token` every scored position.
#[pyfunction]
#[pyo3(signature = (base, model, texts, window="rolling", ctx=None, stride=None, batch="auto", device=None, sums="plain", swap=false, revision=None, per_token=false, resume=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn compare(
    py: Python<'_>,
    base: &str,
    model: &str,
    texts: Vec<String>,
    window: &str,
    ctx: Option<usize>,
    stride: Option<usize>,
    batch: &str,
    device: Option<String>,
    sums: &str,
    swap: bool,
    revision: Option<&str>,
    per_token: bool,
    resume: Option<std::path::PathBuf>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Option<ComparedTokens>)> {
    let batch: Batch = batch.parse().map_err(PyValueError::new_err)?;
    let sums: Sums = sums.parse().map_err(PyValueError::new_err)?;
    let Windows { mode, ctx, stride } = Windows::named(window, ctx, stride)?;
    let mode = CompareOptions::windows(mode, stride).map_err(to_python)?;
    let documents = documents(texts);
    let (report, tokens) = run_released(py, progress, |progress| {
        let gpu = Gpu::new(&GpuOptions { device, sums, ..GpuOptions::default() })?;
        let pair = Pair::open_revision(base, model, revision, swap.then_some(Residency::Swapped), gpu)?;
        let result = perplex::compare::compare(&pair, &documents, &CompareOptions { mode, ctx, batch, per_token, progress, resume })?;
        let report = perplex::report::compare_json(&result, &pair.base.name, &pair.model.name, &pair.base.adapter());
        Ok((report, result.tokens))
    })?;
    let report = serde_json::to_string(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let tokens = per_token.then(|| {
        (
            tokens.iter().map(|t| t.doc.parse().expect("documents are named by their index")).collect(),
            tokens.iter().map(|t| t.pos).collect(),
            tokens.iter().map(|t| t.token_id).collect(),
            tokens.iter().map(|t| t.kld).collect(),
            tokens.iter().map(|t| t.logprob_base).collect(),
            tokens.iter().map(|t| t.logprob_model).collect(),
            tokens.iter().map(|t| t.top_base).collect(),
            tokens.iter().map(|t| t.top_model).collect(),
        )
    });
    Ok((report, tokens))
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Model>()?;
    module.add_function(wrap_pyfunction!(compare, module)?)?;
    Ok(())
}
