//! `perplex compare` output: llama.cpp's KL-divergence report as a table (its labels, its
//! uncertainties), the bits per byte of both models, the positions of greatest disagreement, and
//! the same as JSON.

use super::key_values;
use crate::compare::{CompareResult, Estimate};
use serde_json::json;

fn estimate(e: Estimate, decimals: usize) -> String {
    format!("{:.decimals$} ± {:.decimals$}", e.value, e.uncertainty)
}

/// A KL divergence as llama.cpp prints it (six decimals), or in scientific notation where six
/// decimals would hide it (an f16 export differs from its f32 original by a few 1e-6 nats).
fn kl(x: f64) -> String {
    if x == 0.0 || x.abs() >= 1e-3 {
        format!("{x:.6}")
    } else {
        format!("{x:.4e}")
    }
}

fn percent(e: Estimate) -> String {
    format!("{:.3} ± {:.3} %", 100.0 * e.value, 100.0 * e.uncertainty)
}

/// Text of a token or context on one line.
fn shown(text: &str) -> String {
    format!("{text:?}")
}

/// Where the models ran and the device memory their weights take.
fn residency(result: &CompareResult) -> String {
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let [base, model] = result.weight_bytes;
    format!("{} (weights: base {:.1} MiB, Q {:.1} MiB)", result.residency.describe(), mib(base), mib(model))
}

pub fn compare_table(result: &CompareResult, base: &str, model: &str, adapter: &str) -> String {
    let s = &result.stats;
    let (tb, tm) = (&result.total_base, &result.total_model);
    let mut rows: Vec<(String, String)> = vec![
        ("base".into(), base.into()),
        ("model".into(), model.into()),
        ("adapter".into(), adapter.into()),
        ("window".into(), format!("{} (ctx {})", result.mode.name(), result.ctx)),
        ("tokens".into(), s.count.to_string()),
        ("residency".into(), residency(result)),
        ("".into(), "".into()),
        ("Mean PPL(Q)".into(), estimate(s.ppl_model, 6)),
        ("Mean PPL(base)".into(), estimate(s.ppl_base, 6)),
        ("Cor(ln(PPL(Q)), ln(PPL(base)))".into(), format!("{:.2}%", 100.0 * s.logprob_correlation)),
        ("Mean ln(PPL(Q)/PPL(base))".into(), estimate(s.ln_ppl_ratio, 6)),
        ("Mean PPL(Q)/PPL(base)".into(), estimate(s.ppl_ratio, 6)),
        ("Mean PPL(Q)-PPL(base)".into(), estimate(s.ppl_difference, 6)),
        ("bits per byte (Q)".into(), format!("{:.6}", tm.bits_per_byte)),
        ("bits per byte (base)".into(), format!("{:.6}", tb.bits_per_byte)),
        ("".into(), "".into()),
        ("Mean    KLD".into(), format!("{} ± {}", kl(s.kld_mean.value), kl(s.kld_mean.uncertainty))),
        ("Maximum KLD".into(), kl(s.kld.max)),
    ];
    for &(p, v) in &s.kld.percentiles {
        let label = if p == 50.0 { "Median  KLD".to_string() } else { format!("{p:>4.1}%   KLD") };
        rows.push((label, kl(v)));
    }
    rows.push(("Minimum KLD".into(), kl(s.kld.min)));
    rows.push(("".into(), "".into()));
    rows.push(("Mean    Δp".into(), percent(s.delta_p_mean)));
    rows.push(("Maximum Δp".into(), format!("{:.3}%", 100.0 * s.delta_p.max)));
    for &(p, v) in &s.delta_p.percentiles {
        let label = if p == 50.0 { "Median  Δp".to_string() } else { format!("{p:>4.1}%   Δp") };
        rows.push((label, format!("{:.3}%", 100.0 * v)));
    }
    rows.push(("Minimum Δp".into(), format!("{:.3}%", 100.0 * s.delta_p.min)));
    rows.push(("RMS Δp".into(), percent(s.delta_p_rms)));
    rows.push(("Same top p".into(), percent(s.same_top)));
    let borrowed: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut out = key_values(&borrowed);
    out += &format!("\nwhere the models disagree most (KL divergence, nats; Q is {model}):\n");
    for d in &result.worst {
        let t = &d.token;
        out += &format!(
            "  {:.4}  {} token {}: …{} [{}]  p(base) {:.4} top {}, p(Q) {:.4} top {}\n",
            t.kld,
            t.doc,
            t.pos,
            shown(&d.context),
            shown(&d.text),
            t.p_base,
            shown(&d.text_top_base),
            t.p_model,
            shown(&d.text_top_model)
        );
    }
    out
}

pub fn compare_json(result: &CompareResult, base: &str, model: &str, adapter: &str) -> serde_json::Value {
    json!({
        "base": base,
        "model": model,
        "adapter": adapter,
        "window": result.mode.name(),
        "ctx": result.ctx,
        "residency": result.residency.name(),
        "weight_bytes": { "base": result.weight_bytes[0], "model": result.weight_bytes[1] },
        "statistics": result.stats,
        "total_base": result.total_base,
        "total_model": result.total_model,
        "documents_base": result.base,
        "documents_model": result.model,
        "worst": result.worst,
        "seconds": result.seconds,
    })
}
