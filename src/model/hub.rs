//! Hub ids (`org/name`, optionally `--revision`) resolved in the local Hugging Face cache, the
//! layout `huggingface_hub` writes: `<cache>/models--org--name/{refs/<branch>, snapshots/<commit>/}`.
//! Nothing is ever downloaded.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The hub cache directory: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// Whether `model` has the shape of a hub id rather than a path.
pub fn looks_like_hub_id(model: &str) -> bool {
    let parts: Vec<&str> = model.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.')) && !model.contains('\\')
}

/// The snapshot directory of `repo` at `revision` (a branch or tag under refs/, or a commit hash;
/// default "main") in `cache`.
pub fn resolve_in(cache: &Path, repo: &str, revision: Option<&str>) -> Result<PathBuf> {
    let repo_dir = repo_dir(cache, repo);
    let fetch_hint = |rev: &str| format!("download it first, e.g. `huggingface-cli download {repo} --revision {rev}`");
    let revision = revision.unwrap_or("main");
    if !repo_dir.is_dir() {
        return Err(Error::bad_input(format!(
            "--model {repo}: not a directory, and not in the Hugging Face cache (searched {}; set HF_HOME or \
             HF_HUB_CACHE to look elsewhere). perplex never downloads: {}",
            repo_dir.display(),
            fetch_hint(revision)
        )));
    }
    let commit = if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        revision.to_string()
    } else {
        let reference = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&reference) {
            Ok(text) => text.trim().to_string(),
            Err(_) => {
                return Err(Error::bad_input(format!(
                    "--model {repo}: revision '{revision}' is not in the cache ({} has: {}); {}",
                    repo_dir.display(),
                    cached_refs(cache, repo).filter(|names| !names.is_empty()).map_or("no revisions".into(), |names| names.join(", ")),
                    fetch_hint(revision)
                )))
            }
        }
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(Error::bad_input(format!(
            "--model {repo}: revision '{revision}' points to commit {commit}, whose snapshot is missing from {}; {}",
            repo_dir.join("snapshots").display(),
            fetch_hint(revision)
        )));
    }
    Ok(snapshot)
}

/// `repo`'s directory in `cache`: `models--org--name`.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The branch and tag names of `repo` in `cache` (the files under refs/), sorted; None where it
/// has no refs directory.
pub fn cached_refs(cache: &Path, repo: &str) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(repo_dir(cache, repo).join("refs")).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_branches_and_commits_and_explains_misses() {
        let cache = std::env::temp_dir().join(format!("perplex-hub-{}", std::process::id()));
        let repo = cache.join("models--EleutherAI--pythia-14m");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::write(repo.join("refs").join("step1000"), format!("{commit}\n")).unwrap();
        let snapshot = repo.join("snapshots").join(commit);
        assert_eq!(resolve_in(&cache, "EleutherAI/pythia-14m", Some("step1000")).unwrap(), snapshot);
        assert_eq!(resolve_in(&cache, "EleutherAI/pythia-14m", Some(commit)).unwrap(), snapshot);
        let missing = resolve_in(&cache, "EleutherAI/pythia-14m", Some("step2000")).unwrap_err().message;
        assert!(missing.contains("step2000") && missing.contains("step1000"), "{missing}");
        let absent = resolve_in(&cache, "EleutherAI/pythia-70m", None).unwrap_err().message;
        assert!(absent.contains("models--EleutherAI--pythia-70m") && absent.contains("never downloads"), "{absent}");
        assert!(looks_like_hub_id("EleutherAI/pythia-160m"));
        assert!(!looks_like_hub_id("models/default/x") && !looks_like_hub_id("./x"));
        std::fs::remove_dir_all(cache).unwrap();
    }
}
