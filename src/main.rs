//! The `perplex` command line: argument parsing and printing only; the work is in the library.

use clap::{Parser, Subcommand, ValueEnum};
use perplex::gpu::{self, Gpu, GpuOptions};
use perplex::forward::Batch;
use perplex::report;
use perplex::score::{self, PplOptions, WindowMode};
use perplex::tasks::{self, EvalOptions, TaskSpec};
use perplex::{Error, Model, Result};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "perplex", version, about = "Score language-model checkpoints on any GPU: perplexity, bits per byte, log-likelihoods")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DeviceArgs {
    /// Adapter to use: its index in `perplex devices` or a substring of its name
    #[arg(long, global = true)]
    device: Option<String>,
    /// Treat storage bindings as at most this many MiB (exercises tensor splitting)
    #[arg(long, hide = true)]
    max_binding_mib: Option<u64>,
    /// Where the matrix and attention kernels read their operands: storage buffers, or texture
    /// copies (faster on CPU drivers such as lavapipe). Scores are identical either way
    #[arg(long, global = true, value_enum, default_value_t = Reads::Auto)]
    reads: Reads,
    /// How matrix products are summed: plain f32 sums, or compensated ones that carry their
    /// rounding errors (about 2x slower; log-probabilities about 5x closer to float64). For
    /// comparing models whose differences approach f32's resolution, such as an f32 checkpoint
    /// and its f16 export
    #[arg(long, global = true, value_enum, default_value_t = SumsArg::Plain)]
    sums: SumsArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum SumsArg {
    Plain,
    Compensated,
}

/// The text to score and how it is cut into windows: `ppl` and `compare` alike.
#[derive(clap::Args)]
struct TextArgs {
    /// Text files (one document each), or data files and directories as `eval` reads them
    /// (JSONL, JSON, Parquet, Arrow, `datasets.save_to_disk`: one document per record)
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Record field holding the text
    #[arg(long, default_value = "text")]
    field: String,
    #[arg(long, value_enum, default_value = "rolling")]
    window: Window,
    /// Window length in tokens [default: min(model positions, 2048), of the shorter model for
    /// compare; chunks: 512]
    #[arg(long)]
    ctx: Option<usize>,
    /// Tokens a sliding window advances [default: ctx / 2]
    #[arg(long)]
    stride: Option<usize>,
    /// Windows scored together in one GPU pass, or auto: as many as the device takes
    #[arg(long, default_value = "auto")]
    batch: Batch,
}

impl TextArgs {
    /// The window mode, refusing a `--stride` for any but sliding windows before a model is
    /// opened (the stride itself is settled once the window length is known:
    /// `PplOptions::set_stride`).
    fn mode(&self) -> Result<WindowMode> {
        let mode = match self.window {
            Window::Rolling => WindowMode::Rolling,
            Window::Chunks => WindowMode::Chunks,
            Window::Sliding => WindowMode::Sliding { stride: 0 },
        };
        if self.stride.is_some() && !matches!(mode, WindowMode::Sliding { .. }) {
            return Err(Error::bad_input("--stride applies to --window sliding only"));
        }
        Ok(mode)
    }

    /// Every document of every `--data` path.
    fn documents(&self) -> Result<Vec<perplex::data::Document>> {
        let mut documents = Vec::new();
        for path in &self.data {
            documents.extend(perplex::data::read_documents(path, &self.field)?);
        }
        Ok(documents)
    }
}

/// The files `ppl` and `compare` write besides the table.
#[derive(clap::Args)]
struct OutputArgs {
    /// Write the results as JSON (compare: every statistic)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every scored token as JSON Lines (ppl: its log-probability; compare: the KL, both
    /// log-probabilities and both top tokens)
    #[arg(long)]
    per_token: Option<PathBuf>,
}

impl OutputArgs {
    /// Writes the files asked for: `json()`, built only for --json, and the per-token records.
    fn write<T: serde::Serialize>(&self, json: impl FnOnce() -> serde_json::Value, tokens: &[T]) -> Result<()> {
        if let Some(path) = &self.json {
            report::write_json(path, &json())?;
        }
        if let Some(path) = &self.per_token {
            report::write_jsonl(path, tokens)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Reads {
    /// Textures on CPU adapters, storage buffers on GPUs
    Auto,
    Buffers,
    Textures,
}

impl DeviceArgs {
    fn open(&self) -> Result<std::sync::Arc<Gpu>> {
        let reads = match self.reads {
            Reads::Auto => None,
            Reads::Buffers => Some(gpu::ReadPath::Buffers),
            Reads::Textures => Some(gpu::ReadPath::Textures),
        };
        Gpu::new(&GpuOptions { device: self.device.clone(), max_binding_override: self.max_binding_mib.map(|m| m << 20), reads, share_rows: None, sums: self.sums() })
    }

    fn sums(&self) -> gpu::Sums {
        match self.sums {
            SumsArg::Plain => gpu::Sums::Plain,
            SumsArg::Compensated => gpu::Sums::Compensated,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Window {
    /// lm-evaluation-harness loglikelihood_rolling: disjoint windows, every token scored once
    Rolling,
    /// Hugging Face guide: windows of --ctx advancing by --stride
    Sliding,
    /// llama.cpp llama-perplexity: chunks of --ctx, second half of each scored
    Chunks,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters with their backend, type, limits and features
    Devices {
        /// Write the list as JSON
        #[arg(long)]
        json: Option<PathBuf>,
        /// Instead of listing devices, write every WGSL module perplex can build into DIR, one
        /// file per variant (no GPU needed)
        #[arg(long, value_name = "DIR")]
        dump_shaders: Option<PathBuf>,
    },
    /// Perplexity of a model on text files: loss, token/word/byte perplexity, bits per byte
    Ppl {
        /// Hugging Face model directory (config.json, model.safetensors, tokenizer.json), a .gguf
        /// file, or a hub id (org/name) in the local Hugging Face cache
        #[arg(long)]
        model: String,
        /// Branch, tag or commit of a hub id (e.g. step3000 for Pythia's intermediate checkpoints)
        #[arg(long)]
        revision: Option<String>,
        #[command(flatten)]
        text: TextArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Keep finished documents in this file as they complete; rerunning the same command
        /// continues a killed or interrupted run without rescoring them
        #[arg(long)]
        resume: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// What a converted, quantized or distilled model lost against a base model: KL divergence,
    /// same top token, Δp and both perplexities on the same text (llama.cpp's KL statistics),
    /// both models on the device at once (or taking turns where they do not fit) and no logits
    /// file
    Compare {
        /// The reference model: Hugging Face directory, .gguf file or hub id
        #[arg(long)]
        base: String,
        /// The model compared with it (same tokenizer)
        #[arg(long)]
        model: String,
        /// One model on the device at a time, swapped between rounds of passes, even where both
        /// fit (the same numbers in more time; a pair that does not fit together swaps anyway)
        #[arg(long)]
        swap: bool,
        #[command(flatten)]
        text: TextArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Keep every compared window's numbers in this file as its passes finish; rerunning the
        /// same command continues a killed or interrupted run where it stopped
        #[arg(long)]
        resume: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Greedy continuations of prompts: what a checkpoint says (the way `perplex eval` generates
    /// answers, lm-evaluation-harness's generate_until)
    Generate {
        /// Hugging Face model directory, .gguf file or hub id
        #[arg(long)]
        model: String,
        #[arg(long)]
        revision: Option<String>,
        /// A prompt (repeat for several)
        #[arg(long, required_unless_present = "data")]
        prompt: Vec<String>,
        /// Prompts from files: text files (one prompt each), or data files and directories as
        /// `eval` reads them (one prompt per record, from --field)
        #[arg(long, num_args = 1.., conflicts_with = "prompt")]
        data: Vec<PathBuf>,
        /// Record field holding the prompt
        #[arg(long, default_value = "text")]
        field: String,
        /// Most tokens generated per prompt
        #[arg(long, default_value_t = perplex::generate::DEFAULT_MAX_GEN_TOKS)]
        max_tokens: usize,
        /// Stop before this string (repeat for several); the end-of-text token always stops
        #[arg(long)]
        until: Vec<String>,
        /// Longest model input, prompt and answer together; longer prompts lose tokens on the left
        /// [default: model positions]
        #[arg(long)]
        max_length: Option<usize>,
        /// Sequences generated together, or auto: as many as the device takes. The answers are
        /// the same whatever the batch
        #[arg(long, default_value = "auto")]
        batch: Batch,
        /// Write every answer (prompt, text, tokens, why it stopped) as JSON Lines
        #[arg(long)]
        json: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Scoring throughput, achieved FLOP rate against the adapter's matmul peak, memory and a
    /// per-kernel breakdown, for comparing devices and backends
    Bench {
        /// Hugging Face model directory, .gguf file or hub id
        #[arg(long)]
        model: String,
        #[arg(long)]
        revision: Option<String>,
        /// Window length in tokens (with --generate: prompt length)
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Windows per pass, or auto: as many as the device takes
        #[arg(long, default_value = "1")]
        batch: Batch,
        /// Timed passes after one warm-up
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Measure greedy generation instead: prefill and decode tokens/s with one sequence and
        /// with as many as `perplex generate --batch auto` decodes together, and the KV cache
        #[arg(long)]
        generate: bool,
        /// With --generate: tokens generated per sequence
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        /// Write the report as JSON
        #[arg(long)]
        json: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Benchmark accuracy measured the lm-evaluation-harness way: log-likelihoods of each choice
    Eval {
        /// Hugging Face model directory (config.json, model.safetensors, tokenizer.json), a .gguf
        /// file, or a hub id (org/name) in the local Hugging Face cache
        #[arg(long)]
        model: String,
        /// hellaswag, arc_easy, arc_challenge, piqa, winogrande, lambada_openai, mmlu (or mmlu_stem,
        /// mmlu_<subject>, ...), boolq, copa, openbookqa, sciq, race, ceval-valid (or
        /// ceval-valid_<subject>); generated answers: gsm8k, gsm8k_cot, triviaqa; mc, loglik or gen
        /// for your own JSONL. Repeat --task and --data for several tasks
        #[arg(long = "task", required = true)]
        tasks: Vec<String>,
        /// Each task's documents, in --task order: JSONL, JSON, Parquet, Arrow, or a
        /// `datasets.save_to_disk` directory (a split, or a dataset with splits)
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// Few-shot examples per document [default: the task's own (gsm8k 5, gsm8k_cot 8), else 0]
        #[arg(long)]
        fewshot: Option<usize>,
        /// Most tokens generated per answer by generative tasks [default: the task's, else 256]
        #[arg(long)]
        max_gen_toks: Option<usize>,
        /// Where each task's few-shot examples come from, in --task order [default: the harness's
        /// few-shot split of --data when it has splits, else --data itself minus the evaluated document]
        #[arg(long)]
        fewshot_data: Vec<PathBuf>,
        /// Evaluate only the first N documents of each task
        #[arg(long)]
        limit: Option<usize>,
        /// Longest model input in tokens; longer requests lose context on the left [default: model positions]
        #[arg(long)]
        ctx: Option<usize>,
        /// Requests scored together in one GPU pass, or auto: as many as the device takes
        #[arg(long, default_value = "auto")]
        batch: Batch,
        /// Write results in the shape of lm-evaluation-harness's results file
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write every request (context, continuation, ll, is_greedy, tokens) as JSON Lines
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Keep answered requests in this file as their passes finish; rerunning the same command
        /// continues a killed or interrupted run without rescoring them
        #[arg(long)]
        resume: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Validation loss and task metrics of many checkpoints (several sizes, every step), each
    /// finished unit appended to a results file that reruns resume; `merge` combines shards,
    /// `report` relates task performance to loss and finds where abilities emerge
    Sweep(Box<SweepArgs>),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SweepArgs {
    #[command(subcommand)]
    action: Option<SweepAction>,
    #[command(flatten)]
    units: SweepUnits,
    /// Results file (JSON Lines): finished units are appended as they finish and skipped on reruns
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Run one share of the checkpoints: K/N (0 <= K < N), or auto (Slurm array / Kubernetes Indexed Job)
    #[arg(long)]
    shard: Option<String>,
    /// Number of shards for --shard auto where the scheduler does not say it [env: PERPLEX_SHARD_COUNT]
    #[arg(long)]
    shard_count: Option<usize>,
    /// Windows scored together in one GPU pass, or auto: as many as the device takes
    #[arg(long, default_value = "auto")]
    batch: Batch,
    #[command(flatten)]
    device: DeviceArgs,
}

/// What a sweep measures: its checkpoints and measurements, with the settings that change numbers.
#[derive(clap::Args)]
struct SweepUnits {
    /// Checkpoints: directories, quoted glob patterns ('out/step*'), text files listing them (one a
    /// line), or hub ids in the local Hugging Face cache (org/name, or org/name@revision)
    #[arg(long, num_args = 1.., required = true)]
    models: Vec<String>,
    /// Revisions of the hub ids: names or glob patterns (step*) over the cached branches [default: all]
    #[arg(long, num_args = 1..)]
    revisions: Vec<String>,
    /// Validation text: text files (one document each), or data files and directories as `eval`
    /// reads them (one document per record)
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Tasks as NAME=PATH (a task of `perplex eval`, e.g. hellaswag=DIR; mc=FILE.jsonl or
    /// loglik=FILE.jsonl for your own), or a multiple-choice .jsonl file alone
    #[arg(long = "task", num_args = 1..)]
    tasks: Vec<String>,
    /// Record field holding the text of --data data files
    #[arg(long, default_value = "text")]
    field: String,
    /// Window length for text and longest input for tasks [default: each model's positions, at most 2048]
    #[arg(long)]
    ctx: Option<usize>,
    /// Few-shot examples per task document [default: the task's own (gsm8k 5, gsm8k_cot 8), else 0]
    #[arg(long)]
    fewshot: Option<usize>,
    /// Most tokens generated per answer by generative tasks [default: the task's, else 256]
    #[arg(long)]
    max_gen_toks: Option<usize>,
    /// Evaluate only the first N documents of each task
    #[arg(long)]
    limit: Option<usize>,
    /// A reference model (directory, .gguf file or hub id) every checkpoint is compared with on
    /// each --data text: KL divergence, same top token, Δp and perplexity ratio, as `perplex
    /// compare` computes them over rolling windows
    #[arg(long)]
    base: Option<String>,
}

#[derive(Subcommand)]
enum SweepAction {
    /// Combine the results files of shards into one
    Merge {
        /// The combined results file (may be one of the shards)
        out: PathBuf,
        /// Results files of the shards
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
    /// Task performance against loss: Spearman correlations, chance levels, emergence thresholds,
    /// as a table, JSON and plots
    Report {
        /// Results file of a sweep
        results: PathBuf,
        /// Write the report as JSON
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write loss.svg/png and step.svg/png into this directory
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Metrics to plot, a row of panels each
        #[arg(long, num_args = 1.., default_values = ["acc", "prob_correct"])]
        plot_metrics: Vec<String>,
        /// Loss axis: nats per token (one tokenizer) or bits per byte (across tokenizers)
        #[arg(long, value_enum, default_value = "loss")]
        against: LossAxisArg,
        /// Bootstrap resamples (and permutations) for the threshold's interval and p-value
        #[arg(long, default_value_t = perplex::sweep::analysis::BOOTSTRAP)]
        resamples: usize,
        /// Seed of the resampling
        #[arg(long, default_value_t = perplex::sweep::analysis::SEED)]
        seed: u64,
    },
    /// Per checkpoint and measurement: done, missing, failed or stale (files changed since), and
    /// the shard each belongs to: what a rerun or a requeued shard still has to do
    Status {
        /// Results files of the sweep (one, or the shards' files)
        #[arg(required = true)]
        results: Vec<PathBuf>,
        #[command(flatten)]
        units: SweepUnits,
        /// Number of shards the sweep runs in (--shard K/N, or the tasks of an array)
        #[arg(long, default_value_t = 1)]
        shard_count: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LossAxisArg {
    Loss,
    BitsPerByte,
}

fn main() {
    let cli = Cli::parse();
    // Ctrl-C stops long runs cleanly after the passes in flight (a second one kills at once).
    let _ = ctrlc::set_handler(|| {
        if score::STOP_REQUESTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the passes in flight (Ctrl-C again to quit now)");
    });
    if let Err(error) = run(cli) {
        eprintln!("error: {error}");
        std::process::exit(error.exit_code());
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices { dump_shaders: Some(dir), .. } => {
            println!("wrote {} shader variants to {}", gpu::dump_shaders(&dir)?, dir.display());
            Ok(())
        }
        Command::Devices { json, dump_shaders: None } => devices(json),
        Command::Eval { model, tasks, data, fewshot, max_gen_toks, fewshot_data, limit, ctx, batch, json, samples, resume, device } => {
            eval(model, tasks, data, fewshot, max_gen_toks, fewshot_data, limit, ctx, batch, json, samples, resume, device)
        }
        Command::Generate { model, revision, prompt, data, field, max_tokens, until, max_length, batch, json, device } => {
            let mut prompts: Vec<(String, String)> = prompt.into_iter().enumerate().map(|(i, p)| (format!("prompt {}", i + 1), p)).collect();
            for path in &data {
                prompts.extend(perplex::data::read_documents(path, &field)?.into_iter().map(|d| (d.name, d.text)));
            }
            let gpu = device.open()?;
            let model = Model::open_revision(&model, revision.as_deref(), gpu)?;
            let requests: Vec<perplex::generate::GenRequest> = prompts
                .iter()
                .map(|(_, context)| perplex::generate::GenRequest { context: context.clone(), until: until.clone(), max_gen_toks: max_tokens })
                .collect();
            let options = perplex::generate::GenOptions { max_length, batch, progress: Some(Arc::new(report::ProgressBar::new())) };
            let output = perplex::generate::generate(&model, &requests, &options)?;
            for ((name, _), answer) in prompts.iter().zip(&output.results) {
                println!("== {name} ({} tokens, {})", answer.tokens.len(), report::stop_reason(answer.stop));
                println!("{}", answer.text);
            }
            eprintln!(
                "{} answers, {} tokens generated in {:.2} s ({:.1} tokens/s, {} sequences at once) on {}",
                output.results.len(),
                output.generated_tokens,
                output.seconds,
                output.generated_tokens as f64 / output.seconds.max(1e-9),
                output.slots,
                model.adapter()
            );
            if let Some(path) = json {
                let lines: Vec<serde_json::Value> = prompts
                    .iter()
                    .zip(&output.results)
                    .map(|((name, context), answer)| serde_json::json!({ "name": name, "context": context, "answer": answer }))
                    .collect();
                report::write_jsonl(&path, &lines)?;
            }
            Ok(())
        }
        Command::Bench { model, revision, ctx, generate: true, new_tokens, json, device, .. } => bench_generation(&model, revision.as_deref(), ctx, new_tokens, json, &device),
        Command::Bench { model, revision, ctx, batch, repeats, json, device, .. } => {
            bench(&model, revision.as_deref(), perplex::bench::BenchOptions { ctx, batch, repeats }, json, &device)
        }
        Command::Ppl { model, revision, text, output, resume, device } => {
            let mode = text.mode()?;
            let documents = text.documents()?;
            let TextArgs { ctx, stride, batch, .. } = text;
            let gpu = device.open()?;
            let model = Model::open_revision(&model, revision.as_deref(), gpu)?;
            let mut options = PplOptions { mode, ctx, batch, per_token: output.per_token.is_some(), progress: Some(Arc::new(report::ProgressBar::new())) };
            options.set_stride(&model, stride)?;
            let result = score::perplexity_resumable(&model, &documents, &options, resume.as_deref())?;
            print!("{}", report::ppl_table(&result, &model.name, &model.adapter()));
            for doc in result.documents.iter().filter(|d| d.tokens == 0) {
                eprintln!("warning: {}: no token scored (shorter than one --ctx {} chunk)", doc.name, result.ctx);
            }
            if mode == WindowMode::Chunks {
                eprintln!(
                    "note: chunks scores the second half of each chunk only; word/byte perplexity and bits per byte \
                     divide by the whole text, so compare them only with other chunks runs (use --window rolling)"
                );
            }
            output.write(|| report::ppl_json(&result, &model.name, &model.adapter()), &result.tokens)
        }
        Command::Compare { base, model, swap, text, output, resume, device } => {
            let mode = text.mode()?;
            let documents = text.documents()?;
            let TextArgs { ctx, stride, batch, .. } = text;
            let gpu = device.open()?;
            let residency = swap.then_some(perplex::compare::Residency::Swapped);
            let pair = perplex::compare::Pair::open_revision(&base, &model, None, residency, gpu)?;
            let options = perplex::compare::CompareOptions {
                mode: perplex::compare::CompareOptions::windows(mode, stride)?,
                ctx,
                batch,
                per_token: output.per_token.is_some(),
                progress: Some(Arc::new(report::ProgressBar::new())),
                resume,
            };
            let result = perplex::compare::compare(&pair, &documents, &options)?;
            let adapter = pair.base.adapter();
            print!("{}", report::compare_table(&result, &pair.base.name, &pair.model.name, &adapter));
            // Below this mean KL the f32 sums' rounding shows in the figures (measured on an f32
            // checkpoint against its f16 export, 2.7e-6 nats: 1e-4 relative on the mean KLD,
            // 0.4% on the mean Δp; BENCHMARKS.md).
            const SUMS_SHOW_BELOW_KLD: f64 = 1e-4;
            if pair.base.gpu_model.gpu.sums == gpu::Sums::Plain && result.stats.kld_mean.value < SUMS_SHOW_BELOW_KLD {
                eprintln!(
                    "note: the models differ by a mean KL divergence of {:.1e} nats, close to what plain f32 sums resolve; \
                     --sums compensated brings these figures about 5x closer to float64, for about twice the time",
                    result.stats.kld_mean.value
                );
            }
            output.write(|| report::compare_json(&result, &pair.base.name, &pair.model.name, &adapter), &result.tokens)
        }
        Command::Sweep(args) => sweep(*args),
    }
}

/// The checkpoints and measurements that `units` names.
fn sweep_units(
    units: &SweepUnits,
    options: &perplex::sweep::SweepOptions,
) -> Result<(Vec<perplex::sweep::CheckpointRef>, Vec<perplex::sweep::Measurement>)> {
    use perplex::sweep::{self, TaskArg};
    if units.max_gen_toks == Some(0) {
        return Err(Error::bad_input("--max-gen-toks 0: at least one token must be generated"));
    }
    let tasks: Vec<TaskArg> = units.tasks.iter().map(|t| TaskArg::parse(t, units.fewshot, units.limit, units.max_gen_toks)).collect::<Result<_>>()?;
    let measurements = sweep::measurements(&units.data, &tasks, units.base.as_deref(), options)?;
    Ok((sweep::discover(&units.models, &units.revisions)?, measurements))
}

fn sweep(args: SweepArgs) -> Result<()> {
    use perplex::sweep::{self, Event, ResultsFile, Shard, SweepOptions};
    match args.action {
        Some(SweepAction::Merge { out, shards }) => {
            let merged = sweep::merge(&out, &shards)?;
            println!("{}: {} units from {} files ({} found in more than one)", out.display(), merged.records, shards.len(), merged.duplicates);
            return Ok(());
        }
        Some(SweepAction::Report { results, json, plots, plot_metrics, against, resamples, seed }) => {
            let axis = match against {
                LossAxisArg::Loss => sweep::report::LossAxis::Loss,
                LossAxisArg::BitsPerByte => sweep::report::LossAxis::BitsPerByte,
            };
            let records = sweep::read_results(&results)?;
            let report = sweep::analyse(&records, &sweep::ReportOptions { axis, resamples, seed })?;
            print!("{}", sweep::report::table(&report, &plot_metrics[0]));
            if let Some(path) = json {
                report::write_json(&path, &serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?)?;
            }
            if let Some(dir) = plots {
                for file in sweep::plot::write_plots(&report, &plot_metrics, &dir)? {
                    eprintln!("wrote {}", file.display());
                }
            }
            return Ok(());
        }
        Some(SweepAction::Status { results, units, shard_count }) => {
            if shard_count == 0 {
                return Err(Error::bad_input("--shard-count must be at least 1"));
            }
            // Batch sizes do not change numbers, so they are no part of a fingerprint.
            let options = SweepOptions { ctx: units.ctx, batch: Batch::Auto, field: units.field.clone(), sums: args.device.sums() };
            let (checkpoints, measurements) = sweep_units(&units, &options)?;
            let all = sweep::read_all_units(&results)?;
            let units = sweep::status::status(&checkpoints, &measurements, &all, shard_count);
            print!("{}", sweep::status::table(&units));
            let unmatched = sweep::status::unmatched(&all, &units);
            if unmatched > 0 {
                eprintln!(
                    "note: {unmatched} results in these files are of checkpoints or measurements not named here; \
                     give --models, --data and --task as the sweep was given them (the same paths, spelled the same way)"
                );
            }
            return Ok(());
        }
        None => {}
    }
    let shard = match &args.shard {
        Some(text) => Shard::parse(text, args.shard_count, |name| std::env::var(name).ok())?,
        None if args.shard_count.is_some() => return Err(Error::bad_input("--shard-count applies to --shard auto only")),
        None => Shard::WHOLE,
    };
    let out = args.out.expect("clap requires --out");
    let options = SweepOptions { ctx: args.units.ctx, batch: args.batch, field: args.units.field.clone(), sums: args.device.sums() };
    let (checkpoints, measurements) = sweep_units(&args.units, &options)?;
    let mut results = ResultsFile::open(&out)?;
    let total = checkpoints.iter().enumerate().filter(|(i, _)| shard.takes(*i)).count() * measurements.len();
    eprintln!(
        "{} checkpoints x {} measurements{}: {total} units; results in {}",
        checkpoints.len(),
        measurements.len(),
        if shard == Shard::WHOLE { String::new() } else { format!(", shard {shard} of the checkpoints") },
        out.display()
    );
    let mut done = 0;
    let summary = sweep::run(&checkpoints, &measurements, &options, shard, &mut results, &mut || args.device.open(), &mut |event| {
        done += 1;
        match event {
            Event::Skipped { .. } => {}
            Event::Finished(record) => {
                let mut shown: Vec<String> = ["loss", "bits_per_byte", "acc", "prob_correct", "kld", "same_top"]
                    .iter()
                    .filter_map(|m| record.metrics.get(*m).map(|v| format!("{m} {:.4}", v.value)))
                    .collect();
                // Generative tasks: exact match per filter.
                shown.extend(record.metrics.iter().filter(|(k, _)| k.starts_with("exact_match,")).map(|(k, v)| format!("{k} {:.4}", v.value)));
                eprintln!("[{done}/{total}] {} {}: {} ({:.1} s)", record.checkpoint, record.measurement, shown.join(", "), record.seconds);
            }
            Event::Failed { checkpoint, measurement, error } => eprintln!("[{done}/{total}] {checkpoint} {measurement}: failed: {error}"),
        }
    })?;
    results.compact()?;
    println!(
        "{} units measured, {} already in {}, {} failed",
        summary.finished,
        summary.skipped,
        out.display(),
        summary.failed.len()
    );
    if !summary.failed.is_empty() {
        return Err(Error::bad_input(format!(
            "{} units failed (listed above); the others are kept in {}, and a rerun retries only the failed ones",
            summary.failed.len(),
            out.display()
        )));
    }
    Ok(())
}

fn bench(model: &str, revision: Option<&str>, options: perplex::bench::BenchOptions, json: Option<PathBuf>, device: &DeviceArgs) -> Result<()> {
    let model = Model::open_revision(model, revision, device.open()?)?;
    if options.ctx > model.spec.max_positions {
        return Err(Error::bad_input(format!("--ctx {} is longer than the model's {} positions", options.ctx, model.spec.max_positions)));
    }
    let r = perplex::bench::run(&model, &options)?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    print!(
        "{}",
        report::key_values(&[
            ("model", format!("{} ({}, {:.1}M parameters, {})", r.model, r.model_type, r.parameters as f64 / 1e6, r.weight_dtype)),
            ("adapter", format!("{} ({}, {}; driver {} {})", r.adapter.name, r.adapter.backend, r.adapter.device_type, r.adapter.driver, r.adapter.driver_info)),
            ("reads", r.reads.clone()),
            ("sums", r.sums.to_string()),
            ("shape", format!("{} x {} tokens", r.batch, r.ctx)),
            ("time per pass", format!("{:.3} s", r.seconds_per_pass)),
            ("tokens/s", format!("{:.1}", r.tokens_per_second)),
            ("achieved", format!("{:.2} GFLOP/s ({:.2} GFLOP per pass)", r.achieved_gflops, r.gflop_per_pass)),
            ("matmul peak", format!("{:.2} GFLOP/s (best {} product of {}, same adapter)", r.peak_matmul_gflops, r.weight_dtype, perplex::bench::PEAK_SHAPES.map(|(m, n, k)| format!("{m}x{n}x{k}")).join(", "))),
            ("fraction of peak", format!("{:.0}%", 100.0 * r.fraction_of_peak)),
            ("memory", format!("{} weights + {} activations (planned)", mib(r.weight_bytes), mib(r.activation_bytes))),
            (
                "device memory",
                match r.device_reserved_bytes {
                    Some(bytes) => format!("{} reserved ({:.2}x planned)", mib(bytes), bytes as f64 / (r.weight_bytes + r.activation_bytes) as f64),
                    None => "not reported by this backend".into(),
                },
            ),
        ])
    );
    if !r.kernels.is_empty() {
        let kernel_rows: Vec<Vec<String>> = r
            .kernels
            .iter()
            .map(|k| vec![k.kernel.clone(), k.dispatches.to_string(), format!("{:.2} ms", k.seconds * 1e3), format!("{:.1}%", 100.0 * k.share)])
            .collect();
        println!();
        print!("{}", report::table(&["kernel", "dispatches", "time", "share"], &kernel_rows));
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    if let Some(path) = json {
        report::write_json(&path, &serde_json::to_value(&r).map_err(|e| Error::internal(e.to_string()))?)?;
    }
    Ok(())
}

fn bench_generation(model: &str, revision: Option<&str>, prompt: usize, new_tokens: usize, json: Option<PathBuf>, device: &DeviceArgs) -> Result<()> {
    let model = Model::open_revision(model, revision, device.open()?)?;
    if new_tokens == 0 || prompt == 0 || prompt + new_tokens > model.spec.max_positions {
        return Err(Error::bad_input(format!(
            "--ctx {prompt} and --new-tokens {new_tokens} must be positive and fit in the model's {} positions together",
            model.spec.max_positions
        )));
    }
    let r = perplex::bench::generation(&model, prompt, new_tokens)?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    print!(
        "{}",
        report::key_values(&[
            ("model", format!("{} ({}, {})", r.model, r.model_type, r.weight_dtype)),
            ("adapter", format!("{} ({}, {}; driver {} {})", r.adapter.name, r.adapter.backend, r.adapter.device_type, r.adapter.driver, r.adapter.driver_info)),
            ("reads", r.reads.clone()),
            ("sums", r.sums.to_string()),
            ("shape", format!("prompts of {} tokens, {} tokens generated each", r.prompt, r.new_tokens)),
        ])
    );
    let rows: Vec<Vec<String>> = r
        .rates
        .iter()
        .map(|g| {
            vec![
                g.sequences.to_string(),
                format!("{:.1}", g.prefill_tokens_per_second),
                format!("{:.1}", g.decode_tokens_per_second),
                format!("{:.1} ms", g.seconds_per_step * 1e3),
                mib(g.kv_cache_bytes),
                match g.device_reserved_bytes {
                    Some(bytes) => format!("{} ({:.2}x weights + KV)", mib(bytes), bytes as f64 / (r.weight_bytes + g.kv_cache_bytes) as f64),
                    None => "not reported".into(),
                },
            ]
        })
        .collect();
    println!();
    print!("{}", report::table(&["sequences", "prefill tok/s", "decode tok/s", "per step", "KV cache (plan)", "device memory"], &rows));
    for rate in r.rates.iter().filter(|g| !g.decode_kernels.is_empty()) {
        let kernel_rows: Vec<Vec<String>> = rate
            .decode_kernels
            .iter()
            .map(|k| vec![k.kernel.clone(), k.dispatches.to_string(), format!("{:.2} ms", k.seconds * 1e3), format!("{:.1}%", 100.0 * k.share)])
            .collect();
        println!("\none decoding step of {} sequences:", rate.sequences);
        print!("{}", report::table(&["kernel", "dispatches", "time", "share"], &kernel_rows));
    }
    if let Some(path) = json {
        report::write_json(&path, &serde_json::to_value(&r).map_err(|e| Error::internal(e.to_string()))?)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval(
    model: String,
    names: Vec<String>,
    data: Vec<PathBuf>,
    fewshot: Option<usize>,
    max_gen_toks: Option<usize>,
    fewshot_data: Vec<PathBuf>,
    limit: Option<usize>,
    ctx: Option<usize>,
    batch: Batch,
    json: Option<PathBuf>,
    samples: Option<PathBuf>,
    resume: Option<PathBuf>,
    device: DeviceArgs,
) -> Result<()> {
    if names.len() != data.len() {
        return Err(Error::bad_input(format!(
            "{} --task but {} --data: give one --data per --task, in the same order",
            names.len(),
            data.len()
        )));
    }
    if !fewshot_data.is_empty() && fewshot_data.len() != names.len() {
        return Err(Error::bad_input(format!(
            "{} --task but {} --fewshot-data: give none or one per --task, in the same order",
            names.len(),
            fewshot_data.len()
        )));
    }
    let specs: Vec<TaskSpec> = names
        .iter()
        .zip(&data)
        .enumerate()
        .map(|(i, (name, data))| TaskSpec {
            name: name.clone(),
            data: data.clone(),
            fewshot_data: fewshot_data.get(i).cloned(),
            num_fewshot: fewshot.unwrap_or_else(|| tasks::default_fewshot(name)),
            limit,
            max_gen_toks,
        })
        .collect();
    if max_gen_toks == Some(0) {
        return Err(Error::bad_input("--max-gen-toks 0: at least one token must be generated"));
    }
    let suite = tasks::load(&specs)?;
    for note in &suite.notes {
        eprintln!("note: {note}");
    }
    suite.check()?;
    let gpu = device.open()?;
    let model = Model::open(&model, gpu)?;
    let options = EvalOptions { max_length: ctx, batch, progress: Some(Arc::new(report::ProgressBar::new())) };
    let result = tasks::evaluate_resumable(&model, &suite, &options, resume.as_deref())?;
    print!("{}", report::eval_table(&result, &model.name, &model.adapter()));
    if result.truncated > 0 {
        eprintln!(
            "warning: {} of {} requests were longer than {} tokens and lost context on the left (as lm-evaluation-harness \
             truncates them)",
            result.truncated, result.requests, result.max_length
        );
    }
    if let Some(path) = json {
        report::write_json(&path, &report::eval_json(&result, &suite, &model.name, &model.adapter(), limit, batch))?;
    }
    if let Some(path) = samples {
        let mut lines: Vec<serde_json::Value> = Vec::with_capacity(result.samples.len() + result.generations.len());
        for sample in &result.samples {
            lines.push(serde_json::to_value(sample).map_err(|e| Error::internal(e.to_string()))?);
        }
        for sample in &result.generations {
            lines.push(serde_json::to_value(sample).map_err(|e| Error::internal(e.to_string()))?);
        }
        report::write_jsonl(&path, &lines)?;
    }
    Ok(())
}

fn devices(json: Option<PathBuf>) -> Result<()> {
    let adapters = gpu::list_adapters();
    if adapters.is_empty() {
        return Err(Error::bad_input(gpu::NO_ADAPTER_HELP));
    }
    for a in &adapters {
        println!("{}: {} ({}, {})", a.index, a.name, a.backend, a.device_type);
        println!("   driver: {} {}", a.driver, a.driver_info);
        println!(
            "   max buffer {} MiB, max storage binding {} MiB, workgroup memory {} KiB, {} invocations/workgroup",
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup
        );
        println!(
            "   shader-f16: {}, subgroups: {} (size {}..{}), timestamps: {}",
            yes(a.shader_f16),
            yes(a.subgroups),
            a.subgroup_size.0,
            a.subgroup_size.1,
            yes(a.timestamp_query)
        );
        if !a.cooperative_matrix.is_empty() {
            println!("   cooperative matrices: {}", a.cooperative_matrix.join(", "));
        }
        for note in &a.notes {
            println!("   note: {note}");
        }
    }
    if let Some(path) = json {
        report::write_json(&path, &serde_json::to_value(&adapters).map_err(|e| Error::internal(e.to_string()))?)?;
    }
    Ok(())
}

fn yes(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}
