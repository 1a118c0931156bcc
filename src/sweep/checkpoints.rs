//! Which checkpoints a sweep scores: directories (or glob patterns over them), text files listing
//! them, and hub ids with revisions from the local Hugging Face cache; each with the run it
//! belongs to and its training step, in natural order.

use crate::error::{Error, Result};
use crate::model::hub;
use std::cmp::Ordering;
use std::path::Path;

/// One checkpoint to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRef {
    /// Its name in results: the path as found, or `org/name@revision`.
    pub id: String,
    /// What [`crate::Model::open_revision`] takes: a path or a hub id.
    pub model: String,
    pub revision: Option<String>,
    /// The training run it belongs to: the directory holding the step directories, or the hub id.
    pub run: String,
    /// Training step: `global_step` of a `trainer_state.json` beside the weights, else the number
    /// in the directory or revision name (`step1000`, `checkpoint-500`, `iter_0002000`).
    pub step: Option<u64>,
}

/// Every checkpoint named by `models` (patterns, directories, list files, hub ids), with the
/// hub ids' `revisions` (names or glob patterns over the cached branches; all of them if empty),
/// without duplicates, in natural order: by run, then step.
pub fn discover(models: &[String], revisions: &[String]) -> Result<Vec<CheckpointRef>> {
    let mut found = Vec::new();
    let mut used_revisions = false;
    for entry in models {
        expand(entry, revisions, &mut found, &mut used_revisions, None)?;
    }
    if !revisions.is_empty() && !used_revisions {
        return Err(Error::bad_input("--revisions applies to hub ids (org/name) in the Hugging Face cache; no --models entry is one"));
    }
    found.sort_by(natural_order);
    found.dedup_by(|a, b| a.id == b.id);
    if found.is_empty() {
        return Err(Error::bad_input("--models names no checkpoint"));
    }
    Ok(found)
}

fn has_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

fn expand(entry: &str, revisions: &[String], found: &mut Vec<CheckpointRef>, used_revisions: &mut bool, list: Option<&Path>) -> Result<()> {
    let origin = || list.map_or(String::new(), |l| format!(" (listed in {})", l.display()));
    if has_glob(entry) {
        let paths = glob::glob(entry).map_err(|e| Error::bad_input(format!("--models {entry}: bad pattern: {e}")))?;
        let mut any = false;
        for path in paths.flatten() {
            if is_checkpoint(&path) {
                found.push(from_path(&path));
                any = true;
            }
        }
        if !any {
            return Err(Error::bad_input(format!(
                "--models {entry}{}: matches no checkpoint (a directory with config.json, or a .gguf file)",
                origin()
            )));
        }
        return Ok(());
    }
    let (name, pinned) = match entry.rsplit_once('@') {
        Some((name, revision)) if hub::looks_like_hub_id(name) && !Path::new(entry).exists() => (name, Some(revision)),
        _ => (entry, None),
    };
    let path = Path::new(name);
    if path.exists() {
        if is_checkpoint(path) {
            found.push(from_path(path));
        } else if path.is_file() && list.is_none() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::bad_input(format!("{}: cannot read: {e}", path.display())))?;
            let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
            if lines.is_empty() {
                return Err(Error::bad_input(format!("{}: lists no checkpoint", path.display())));
            }
            for line in lines {
                expand(line, revisions, found, used_revisions, Some(path))?;
            }
        } else {
            return Err(Error::bad_input(format!(
                "{}{}: not a checkpoint (a directory with config.json, or a .gguf file){}",
                path.display(),
                origin(),
                if list.is_none() { ", nor a text file listing checkpoints" } else { "" }
            )));
        }
        return Ok(());
    }
    if !hub::looks_like_hub_id(name) {
        return Err(Error::bad_input(format!("--models {entry}{}: no such file or directory, and not a hub id (org/name)", origin())));
    }
    let chosen = match pinned {
        Some(revision) => vec![revision.to_string()],
        None => {
            *used_revisions |= !revisions.is_empty();
            cached_revisions(&hub::cache_dir(), name, revisions)?
        }
    };
    for revision in chosen {
        found.push(CheckpointRef {
            id: format!("{name}@{revision}"),
            model: name.to_string(),
            step: step_in_name(&revision),
            revision: Some(revision),
            run: name.to_string(),
        });
    }
    Ok(())
}

fn is_checkpoint(path: &Path) -> bool {
    (path.is_dir() && path.join("config.json").is_file()) || (path.is_file() && path.extension().is_some_and(|e| e == "gguf"))
}

fn from_path(path: &Path) -> CheckpointRef {
    let id = path.display().to_string();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let step = trainer_step(path).or_else(|| step_in_name(&name));
    let run = match (step, path.parent()) {
        (Some(_), Some(parent)) if !parent.as_os_str().is_empty() => parent.display().to_string(),
        _ => id.clone(),
    };
    CheckpointRef { id: id.clone(), model: id, revision: None, run, step }
}

/// `global_step` of the `trainer_state.json` that Hugging Face's Trainer writes into each checkpoint.
fn trainer_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?.get("global_step")?.as_u64()
}

/// The step a checkpoint name carries: the number after "step" (`step1000`, `global_step200`),
/// else the last number in the name (`checkpoint-500`, `iter_0002000`); none without digits.
pub fn step_in_name(name: &str) -> Option<u64> {
    let lower = name.to_ascii_lowercase();
    if let Some(at) = lower.rfind("step") {
        let digits: String = lower[at + 4..].trim_start_matches(['_', '-']).chars().take_while(char::is_ascii_digit).collect();
        if let Ok(step) = digits.parse() {
            return Some(step);
        }
    }
    let end = lower.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = lower[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    lower[start..end].parse().ok()
}

/// The branches and tags of `repo` in the hub cache whose names match one of `patterns` (all of
/// them if none), in natural order.
pub fn cached_revisions(cache: &Path, repo: &str, patterns: &[String]) -> Result<Vec<String>> {
    let refs = hub::repo_dir(cache, repo).join("refs");
    let mut names = hub::cached_refs(cache, repo).ok_or_else(|| {
        Error::bad_input(format!(
            "--models {repo}: not in the Hugging Face cache ({} is missing; set HF_HOME or HF_HUB_CACHE to look elsewhere). \
             perplex never downloads: fetch the revisions first, e.g. `huggingface-cli download {repo} --revision step1000`",
            refs.display()
        ))
    })?;
    let mut matchers = Vec::new();
    for pattern in patterns {
        matchers.push(glob::Pattern::new(pattern).map_err(|e| Error::bad_input(format!("--revisions {pattern}: bad pattern: {e}")))?);
    }
    names.retain(|name| matchers.is_empty() || matchers.iter().any(|m| m.matches(name)));
    names.sort_by(|a, b| natural_cmp(a, b));
    if names.is_empty() {
        return Err(Error::bad_input(format!(
            "--models {repo}: no cached revision matches --revisions {} (cached: {})",
            patterns.join(" "),
            refs.display()
        )));
    }
    Ok(names)
}

/// Runs in natural order, then steps (checkpoints without one last), then names.
pub fn natural_order(a: &CheckpointRef, b: &CheckpointRef) -> Ordering {
    natural_cmp(&a.run, &b.run)
        .then_with(|| a.step.is_none().cmp(&b.step.is_none()))
        .then_with(|| a.step.cmp(&b.step))
        .then_with(|| natural_cmp(&a.id, &b.id))
}

/// Compares text with runs of digits compared as numbers: "step9" < "step10".
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb)).then_with(|| da.cmp(&db));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_from_names() {
        assert_eq!(step_in_name("step1000"), Some(1000));
        assert_eq!(step_in_name("global_step200"), Some(200));
        assert_eq!(step_in_name("checkpoint-500"), Some(500));
        assert_eq!(step_in_name("iter_0002000"), Some(2000));
        assert_eq!(step_in_name("step-30"), Some(30));
        assert_eq!(step_in_name("main"), None);
        assert_eq!(step_in_name("final"), None);
    }

    #[test]
    fn natural_order_compares_numbers() {
        let mut names = vec!["step10", "step9", "step100", "step09x", "2.2M", "10M", "0.9M"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["0.9M", "2.2M", "10M", "step9", "step09x", "step10", "step100"]);
    }

    #[test]
    fn discovers_directories_lists_and_hub_revisions() {
        let root = std::env::temp_dir().join(format!("perplex-discover-{}", std::process::id()));
        for step in ["step10", "step9", "step100"] {
            std::fs::create_dir_all(root.join("run").join(step)).unwrap();
            std::fs::write(root.join("run").join(step).join("config.json"), "{}").unwrap();
        }
        let pattern = format!("{}/run/step*", root.display());
        let found = discover(std::slice::from_ref(&pattern), &[]).unwrap();
        assert_eq!(found.iter().map(|c| c.step.unwrap()).collect::<Vec<_>>(), [9, 10, 100]);
        assert!(found.iter().all(|c| c.run == format!("{}/run", root.display())));
        // A list file naming two of them, one twice.
        let list = root.join("list.txt");
        let step9 = root.join("run/step9").display().to_string();
        std::fs::write(&list, format!("# checkpoints\n{step9}\n{}/run/step100\n{step9}\n", root.display())).unwrap();
        let listed = discover(&[list.display().to_string()], &[]).unwrap();
        assert_eq!(listed.iter().map(|c| c.step.unwrap()).collect::<Vec<_>>(), [9, 100]);
        // Hub revisions by pattern.
        let refs = root.join("hub/models--org--model/refs");
        std::fs::create_dir_all(&refs).unwrap();
        for name in ["main", "step2000", "step1000", "step10000"] {
            std::fs::write(refs.join(name), "0123").unwrap();
        }
        let revisions = cached_revisions(&root.join("hub"), "org/model", &["step*".to_string()]).unwrap();
        assert_eq!(revisions, ["step1000", "step2000", "step10000"]);
        assert!(cached_revisions(&root.join("hub"), "org/model", &["nope*".into()]).is_err());
        assert!(discover(&[format!("{}/run/none*", root.display())], &[]).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
