//! `perplex eval` output: a table, and a JSON file shaped like lm-evaluation-harness's results
//! file (`results.<task>."acc,none"`, `"acc_stderr,none"`, `groups`, `configs`, `versions`,
//! `n-shot`, `higher_is_better`, `n-samples`, `config`), so tools that read one read the other.

use super::table;
use crate::tasks::{EvalResult, MetricValue, Stderr, Suite};
use crate::forward::Batch;
use serde_json::{json, Map, Value};

/// Four decimals, or scientific notation for the huge perplexities of untrained models.
fn number(x: f64) -> String {
    if x.abs() < 1e6 {
        format!("{x:.4}")
    } else {
        format!("{x:.4e}")
    }
}

fn stderr_text(stderr: Stderr) -> String {
    match stderr {
        Stderr::Value(s) => number(s),
        Stderr::NotAvailable => "N/A".into(),
    }
}

fn metric_rows(rows: &mut Vec<Vec<String>>, label: &str, shots: String, metrics: &[MetricValue]) {
    for (i, m) in metrics.iter().enumerate() {
        let first = i == 0;
        rows.push(vec![
            if first { label.to_string() } else { String::new() },
            if first { shots.clone() } else { String::new() },
            m.key(),
            if m.higher_is_better { "↑" } else { "↓" }.to_string(),
            number(m.value),
            stderr_text(m.stderr),
        ]);
    }
}

/// Tasks, then groups, one row per metric; then the run's totals.
pub fn eval_table(result: &EvalResult, model: &str, adapter: &str) -> String {
    let header = ["task", "n-shot", "metric", "", "value", "stderr"];
    let mut rows = Vec::new();
    for task in &result.tasks {
        metric_rows(&mut rows, &task.alias, task.num_fewshot.to_string(), &task.metrics);
    }
    let mut out = table(&header, &rows);
    if !result.groups.is_empty() {
        let mut rows = Vec::new();
        for group in &result.groups {
            let shots = group.num_fewshot.map_or(String::new(), |k| k.to_string());
            metric_rows(&mut rows, &group.alias, shots, &group.metrics);
        }
        out += "\n";
        out += &table(&["group", "n-shot", "metric", "", "value", "stderr"], &rows);
    }
    out += &format!(
        "\nmodel {model} on {adapter}: {} requests, {} tokens scored in {:.1} s ({:.1} requests/s), max length {}, batch {}\n",
        result.requests,
        result.tokens,
        result.seconds,
        result.requests as f64 / result.seconds.max(1e-9),
        result.max_length,
        result.batch
    );
    out
}

fn metric_entries(entry: &mut Map<String, Value>, metrics: &[MetricValue]) {
    for m in metrics {
        entry.insert(format!("{},{}", m.name, m.filter), json!(m.value));
        let stderr = match m.stderr {
            Stderr::Value(s) => json!(s),
            Stderr::NotAvailable => json!("N/A"),
        };
        entry.insert(format!("{}_stderr,{}", m.name, m.filter), stderr);
    }
}

/// One entry per metric (a generative task's metric once, whatever its filters).
fn metric_list(metrics: &[MetricValue]) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    metrics
        .iter()
        .filter(|m| seen.insert(m.name))
        .map(|m| json!({"metric": m.name, "higher_is_better": m.higher_is_better}))
        .collect()
}

fn higher_is_better(metrics: &[MetricValue]) -> Value {
    Value::Object(metrics.iter().map(|m| (m.name.to_string(), json!(m.higher_is_better))).collect())
}

/// The lm-evaluation-harness results-file shape. `limit` and `batch` are the run's settings.
pub fn eval_json(result: &EvalResult, suite: &Suite, model: &str, adapter: &str, limit: Option<usize>, batch: Batch) -> Value {
    let mut results = Map::new();
    let mut groups = Map::new();
    let mut group_subtasks = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut better = Map::new();
    let mut n_samples = Map::new();
    for group in &result.groups {
        let mut entry = Map::new();
        entry.insert("alias".into(), json!(group.alias));
        metric_entries(&mut entry, &group.metrics);
        results.insert(group.name.clone(), Value::Object(entry.clone()));
        groups.insert(group.name.clone(), Value::Object(entry));
        group_subtasks.insert(group.name.clone(), json!(group.members));
        versions.insert(group.name.clone(), json!(group.version));
        if let Some(k) = group.num_fewshot {
            n_shot.insert(group.name.clone(), json!(k));
        }
        better.insert(group.name.clone(), higher_is_better(&group.metrics));
    }
    for (task, result) in suite.tasks.iter().zip(&result.tasks) {
        let mut entry = Map::new();
        entry.insert("alias".into(), json!(result.alias));
        metric_entries(&mut entry, &result.metrics);
        results.insert(result.name.clone(), Value::Object(entry));
        if !suite.groups.iter().any(|g| g.members.contains(&result.name)) {
            group_subtasks.insert(result.name.clone(), json!([]));
        }
        let f = task.formulation;
        let dataset_name = match f.dataset_name {
            Some(name) => json!(name),
            None if f.name == "mmlu" => json!(task.name.trim_start_matches("mmlu_")),
            None if f.name == "ceval-valid" => json!(task.name.trim_start_matches("ceval-valid_")),
            None => Value::Null,
        };
        configs.insert(
            result.name.clone(),
            json!({
                "task": result.name,
                "dataset_path": if f.dataset_path.is_empty() { Value::Null } else { json!(f.dataset_path) },
                "dataset_name": dataset_name,
                "data": task.origin,
                "output_type": f.output.name(),
                "description": task.description,
                "target_delimiter": f.target_delimiter,
                "fewshot_delimiter": f.fewshot_delimiter,
                "num_fewshot": task.num_fewshot,
                "fewshot_data": task.fewshot.as_ref().map(|p| p.origin.clone()),
                "metric_list": metric_list(&result.metrics),
                "generation_kwargs": f.generation.map(|g| json!({
                    "until": g.until,
                    "max_gen_toks": task.max_gen_toks.or(g.max_gen_toks).unwrap_or(crate::generate::DEFAULT_MAX_GEN_TOKS),
                    "do_sample": false,
                    "temperature": 0.0,
                })),
                "filter_list": f.generation.map(|g| g.filters.iter().map(|p| json!({"name": p.name})).collect::<Vec<_>>()),
                "metadata": {"version": f.version},
            }),
        );
        versions.insert(result.name.clone(), json!(f.version));
        n_shot.insert(result.name.clone(), json!(result.num_fewshot));
        better.insert(result.name.clone(), higher_is_better(&result.metrics));
        n_samples.insert(result.name.clone(), json!({"original": result.original, "effective": result.docs}));
    }
    json!({
        "results": results,
        "groups": groups,
        "group_subtasks": group_subtasks,
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": better,
        "n-samples": n_samples,
        "config": {
            "model": "perplex",
            "model_args": format!("pretrained={model}"),
            "batch_size": match batch {
                Batch::Auto => json!("auto"),
                Batch::Windows(n) => json!(n),
            },
            "device": adapter,
            "limit": limit,
            "max_length": result.max_length,
            "fewshot_seed": crate::tasks::HARNESS_SEED,
        },
        "requests": result.requests,
        "truncated_requests": result.truncated,
        "tokens": result.tokens,
        "total_evaluation_time_seconds": result.seconds,
    })
}
