//! Generated answers in `perplex eval --resume FILE`: they are kept in `FILE.gen` (a resume log of
//! its own: the log-likelihood log's lines are of another kind), one line per answer, keyed by
//! everything the answer depends on besides the model (prompt, until, max_gen_toks, maximum
//! length). With a log, the requests not in it are generated in chunks and each chunk is
//! appended as it finishes; answers do not depend on which requests share a run (see
//! `crate::generate`), so a resumed run's answers are those of an uninterrupted one.

use crate::error::{Error, Result};
use crate::generate::{generate, GenOptions, GenRequest, Generation, Stop};
use crate::score::{model_fingerprint, stop_requested, Entry, ResumeLog};
use crate::Model;
use std::path::{Path, PathBuf};

/// Requests generated per call when answers are logged: each call's answers are appended at once.
const CHUNK: usize = 256;

/// What every entry depends on beyond its key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenLogHeader {
    pub perplex_eval_generate_resume: u32,
    pub model_files: String,
}

/// [`Stop`] as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum LoggedStop {
    Until(usize),
    EndOfText,
    MaxTokens,
}

/// One generated answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoggedGeneration {
    request: String,
    text: String,
    tokens: Vec<u32>,
    stop: LoggedStop,
    context_tokens: usize,
    truncated: bool,
}

impl Entry for LoggedGeneration {
    type Key = String;
    const NAME: &'static str = "generated answers";
    fn key(&self) -> String {
        self.request.clone()
    }
}

impl LoggedGeneration {
    fn new(request: String, g: &Generation) -> Self {
        let stop = match g.stop {
            Stop::Until(i) => LoggedStop::Until(i),
            Stop::EndOfText => LoggedStop::EndOfText,
            Stop::MaxTokens => LoggedStop::MaxTokens,
        };
        LoggedGeneration {
            request,
            text: g.text.clone(),
            tokens: g.tokens.clone(),
            stop,
            context_tokens: g.context_tokens,
            truncated: g.truncated,
        }
    }

    fn generation(&self) -> Generation {
        let stop = match self.stop {
            LoggedStop::Until(i) => Stop::Until(i),
            LoggedStop::EndOfText => Stop::EndOfText,
            LoggedStop::MaxTokens => Stop::MaxTokens,
        };
        Generation {
            text: self.text.clone(),
            tokens: self.tokens.clone(),
            stop,
            context_tokens: self.context_tokens,
            truncated: self.truncated,
        }
    }
}

/// The log of generated answers beside the log `resume`.
pub fn gen_log_path(resume: &Path) -> PathBuf {
    let mut name = resume.as_os_str().to_owned();
    name.push(".gen");
    PathBuf::from(name)
}

/// A request's key: FNV-1a of its prompt, stop strings, `max_gen_toks` and the maximum length.
fn request_key(request: &GenRequest, max_length: Option<usize>) -> String {
    let mut hash = crate::hash::Fnv1a::default();
    hash.field(&request.context).field(&request.until.len().to_string());
    for until in &request.until {
        hash.field(until);
    }
    hash.field(&request.max_gen_toks.to_string()).field(&format!("{max_length:?}"));
    hash.hex()
}

/// What [`generate_resumable`] returns: the answers in request order and the run's figures.
pub struct Generated {
    pub results: Vec<Generation>,
    pub max_length: usize,
    pub slots: usize,
    pub seconds: f64,
}

/// [`generate`] with an optional resume log (see the module documentation).
pub fn generate_resumable(model: &Model, requests: &[GenRequest], options: &GenOptions, resume: Option<&Path>) -> Result<Generated> {
    let check = |n: usize, asked: usize| {
        if n == asked {
            Ok(())
        } else {
            Err(Error::internal(format!("generation answered {n} of {asked} requests")))
        }
    };
    let Some(resume) = resume else {
        let output = generate(model, requests, options)?;
        check(output.results.len(), requests.len())?;
        return Ok(Generated { results: output.results, max_length: output.max_length, slots: output.slots, seconds: output.seconds });
    };
    let path = gen_log_path(resume);
    let header = GenLogHeader { perplex_eval_generate_resume: 1, model_files: model_fingerprint(model)? };
    let mut log: ResumeLog<GenLogHeader, LoggedGeneration> = ResumeLog::open(&path, &header)?;
    let keys: Vec<String> = requests.iter().map(|r| request_key(r, options.max_length)).collect();
    let mut results: Vec<Option<Generation>> = keys.iter().map(|k| log.get(k).map(LoggedGeneration::generation)).collect();
    let pending: Vec<usize> = (0..requests.len()).filter(|&i| results[i].is_none()).collect();
    let mut figures = Generated {
        results: Vec::new(),
        max_length: options.max_length.unwrap_or(model.spec.max_positions),
        slots: 0,
        seconds: 0.0,
    };
    for chunk in pending.chunks(CHUNK) {
        if stop_requested() {
            return Err(Error::interrupted(format!(
                "interrupted: {} of {} generated answers kept in {}; rerun the same command to continue",
                results.iter().filter(|r| r.is_some()).count(),
                requests.len(),
                path.display()
            )));
        }
        let asked: Vec<GenRequest> = chunk.iter().map(|&i| requests[i].clone()).collect();
        let output = generate(model, &asked, options)?;
        check(output.results.len(), asked.len())?;
        (figures.max_length, figures.slots) = (output.max_length, figures.slots.max(output.slots));
        figures.seconds += output.seconds;
        log.append_all(chunk.iter().zip(&output.results).map(|(&i, g)| LoggedGeneration::new(keys[i].clone(), g)).collect())?;
        for (&i, generation) in chunk.iter().zip(output.results) {
            results[i] = Some(generation);
        }
    }
    figures.results = results.into_iter().map(|r| r.expect("every request answered or logged")).collect();
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_answers_round_trip() {
        let g = Generation { text: " 18".into(), tokens: vec![5, 6, 7], stop: Stop::Until(2), context_tokens: 40, truncated: true };
        let line = serde_json::to_string(&LoggedGeneration::new("k".into(), &g)).unwrap();
        let back: LoggedGeneration = serde_json::from_str(&line).unwrap();
        assert_eq!(back.generation(), g);
        assert_eq!(back.key(), "k");
    }

    #[test]
    fn keys_depend_on_everything_but_the_model() {
        let r = GenRequest { context: "Q".into(), until: vec!["\n".into()], max_gen_toks: 4 };
        let base = request_key(&r, None);
        assert_ne!(base, request_key(&GenRequest { context: "Q ".into(), ..r.clone() }, None));
        assert_ne!(base, request_key(&GenRequest { until: vec!["\n".into(), ".".into()], ..r.clone() }, None));
        assert_ne!(base, request_key(&GenRequest { until: vec!["\n.".into()], ..r.clone() }, None));
        assert_ne!(base, request_key(&GenRequest { max_gen_toks: 5, ..r.clone() }, None));
        assert_ne!(base, request_key(&r, Some(64)));
        assert_eq!(base, request_key(&r.clone(), None));
        assert_eq!(gen_log_path(Path::new("/a/run.resume")), Path::new("/a/run.resume.gen"));
    }
}
