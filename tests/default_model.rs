//! The embedded default model (models/default, trained from scratch by
//! models/scripts/train_default.py) against lm-evaluation-harness's rolling log-likelihood of its
//! held-out text, computed with transformers in float32 and saved in models/default/reference.json.

mod common;

use common::{gpu, repo};
use perplex::score::{self, PplOptions, WindowMode};
use perplex::Model;

#[test]
fn held_out_text_matches_lm_evaluation_harness() {
    let dir = repo().join("models/default");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let model = Model::open(dir.to_str().unwrap(), gpu()).unwrap();
    let ctx = reference["ctx"].as_u64().unwrap() as usize;
    for doc in reference["docs"].as_array().unwrap() {
        let path = dir.join(doc["file"].as_str().unwrap());
        let documents = perplex::data::read_documents(&path, "text").unwrap();
        let options = PplOptions { mode: WindowMode::Rolling, ctx: Some(ctx), batch: 8.into(), per_token: false, progress: None };
        let result = score::perplexity(&model, &documents, &options).unwrap();
        let total = &result.total;
        let want = |key: &str| doc[key].as_f64().unwrap();
        assert_eq!(total.tokens as f64, want("tokens"));
        assert_eq!(total.words as f64, want("words"), "word count as re.split(r\"\\s+\")");
        assert_eq!(total.bytes as f64, want("bytes"));
        let err = (total.nll - want("nll")).abs() / want("nll");
        assert!(err < 1e-5, "{}: nll {} vs {} (relative {err:.1e})", path.display(), total.nll, want("nll"));
        assert!((total.bits_per_byte - want("bits_per_byte")).abs() < 1e-4);
        assert!((total.word_perplexity / want("word_perplexity") - 1.0).abs() < 1e-3);
    }
}
