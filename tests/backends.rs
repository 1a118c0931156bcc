//! Every adapter the machine offers scores like the first: on CI that is lavapipe (Vulkan) and
//! llvmpipe through wgpu's GL backend (OpenGL ES compute: no subgroups, no f16, GLSL instead of
//! SPIR-V). The embedded default model scores its held-out text on each adapter through the CLI.
//!
//! The two backends run the same WGSL, but their drivers compile it differently (naga writes GLSL
//! for one and SPIR-V for the other, and each front end decides on its own which multiply-adds to
//! fuse), so a token's log-probability may differ in its last bits. The check is therefore:
//! identical tokens and greedy flags, every document's summed log-likelihood within 1e-6
//! relative, and each token within 2e-5 absolute (measured: 9e-6 at most over 7,055 tokens, 6e-10
//! relative on the document). Adapters of the same backend and driver must agree bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn perplex(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_perplex")).args(args).current_dir(repo()).output().expect("run perplex");
    assert!(output.status.success(), "perplex {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

struct Adapter {
    index: u64,
    label: String,
    backend: String,
    driver: String,
}

fn adapters(scratch: &Path) -> Vec<Adapter> {
    let json = scratch.join("devices.json");
    perplex(&["devices", "--json", json.to_str().unwrap()]);
    let list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| Adapter {
            index: a["index"].as_u64().unwrap(),
            label: format!("{} ({})", a["name"].as_str().unwrap(), a["backend"].as_str().unwrap()),
            backend: a["backend"].as_str().unwrap().to_string(),
            driver: format!("{} {}", a["driver"].as_str().unwrap(), a["driver_info"].as_str().unwrap()),
        })
        .collect()
}

struct Token {
    id: u64,
    logprob: f64,
    greedy: bool,
}

/// The held-out text's per-token scores and its summed log-likelihood on one adapter.
fn score_on(adapter: &Adapter, scratch: &Path) -> (Vec<Token>, f64) {
    let per_token = scratch.join(format!("tokens-{}.jsonl", adapter.index));
    let json = scratch.join(format!("ppl-{}.json", adapter.index));
    perplex(&[
        "ppl",
        "--model",
        "models/default",
        "--data",
        "models/default/heldout.txt",
        "--device",
        &adapter.index.to_string(),
        "--per-token",
        per_token.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let tokens = std::fs::read_to_string(per_token)
        .unwrap()
        .lines()
        .map(|line| {
            let t: serde_json::Value = serde_json::from_str(line).unwrap();
            Token { id: t["token_id"].as_u64().unwrap(), logprob: t["logprob"].as_f64().unwrap(), greedy: t["greedy"].as_bool().unwrap() }
        })
        .collect();
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (tokens, result["total"]["nll"].as_f64().unwrap())
}

#[test]
fn every_adapter_scores_like_the_first() {
    let scratch = std::env::temp_dir().join(format!("perplex-backends-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let adapters = adapters(&scratch);
    if adapters.len() < 2 {
        eprintln!("SKIPPED every_adapter_scores_like_the_first: one adapter only (on Linux, Mesa's EGL and llvmpipe add a GL one)");
        return;
    }
    let first = &adapters[0];
    let (want, want_nll) = score_on(first, &scratch);
    for other in &adapters[1..] {
        let (got, got_nll) = score_on(other, &scratch);
        assert_eq!(got.len(), want.len(), "{} and {}: scored token counts", other.label, first.label);
        let same_arithmetic = other.backend == first.backend && other.driver == first.driver;
        let mut worst = 0.0f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.id, w.id, "token {i}: {} and {} tokenized differently", other.label, first.label);
            assert_eq!(g.greedy, w.greedy, "token {i}: greedy flag differs between {} and {}", other.label, first.label);
            let diff = (g.logprob - w.logprob).abs();
            if same_arithmetic {
                assert_eq!(g.logprob.to_bits(), w.logprob.to_bits(), "token {i}: {} and {} share a driver but differ", other.label, first.label);
            }
            assert!(diff <= 2e-5, "token {i}: {} gives {} and {} gives {}", other.label, g.logprob, first.label, w.logprob);
            worst = worst.max(diff);
        }
        let relative = (got_nll - want_nll).abs() / want_nll.abs();
        assert!(relative <= 1e-6, "document nll {got_nll} on {} against {want_nll} on {} ({relative:.1e} relative)", other.label, first.label);
        eprintln!(
            "{} against {}: {} tokens, largest per-token difference {worst:.1e}, document nll {relative:.1e} relative",
            other.label,
            first.label,
            got.len()
        );
    }
    std::fs::remove_dir_all(&scratch).ok();
}
