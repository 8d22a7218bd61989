//! `bitnet-graph check`: the op-by-op cross-check of a candidate backend against a reference
//! backend on the real model graph.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use gguf::lower::ModelWeights;
use gguf::tokenizer::Tokenizer;
use gguf::GgufFile;
use graph::check::{cross_check, Mode, Pass, Status};
use graph::ExecConfig;

use crate::cli::{CheckArgs, DumpFormat};
use crate::{load, out};

/// Runs `check`.
pub fn run(a: &CheckArgs) -> Result<ExitCode> {
    let candidate = match a.candidate.as_str() {
        "auto" => runtime::backends::available().into_iter().next().context("no backend is available")?,
        name => runtime::backends::by_name(name).map_err(|e| anyhow!("--candidate: {e}"))?,
    };
    let reference = runtime::backends::resolve(&a.reference).map_err(|e| anyhow!("--reference: {e}"))?;
    let quiet = a.format != DumpFormat::Table;
    let path = load::model_path(&a.model)?;
    if !quiet {
        eprintln!("loading {} …", path.display());
    }
    let file = GgufFile::open(&path)?;
    if a.check_tensors {
        runtime::model::check_weights(&file, &path.display().to_string())?;
        if !quiet {
            eprintln!("check-tensors: every weight is finite, every scale non-zero, every ternary code valid");
        }
    }
    let model = gguf::lower(&file).with_context(|| format!("lowering {}", path.display()))?;
    let tokens = Tokenizer::from_gguf(&file).context("building the tokenizer")?.tokenize(&a.prompt, true, false);
    let weights: Arc<dyn graph::WeightSource> = Arc::new(ModelWeights::new(file));
    if tokens.is_empty() {
        bail!("the prompt gives no tokens");
    }
    let n_ctx = tokens.len() + a.steps + 1;
    if n_ctx > model.hparams.n_ctx_train {
        bail!(
            "the prompt ({} tokens) plus {} steps exceeds the model's context of {}",
            tokens.len(),
            a.steps,
            model.hparams.n_ctx_train
        );
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(a.threads).build().context("setting up the thread pool")?;
    let threads = pool.current_num_threads();
    // One batched pass over the prompt with every row's logits (the ≥2-column numerics),
    // then single-token passes (the 1-column numerics).
    let mut passes = vec![Pass { tokens: tokens.clone(), pos0: 0, n_outputs: tokens.len() }];
    for i in 0..a.steps {
        passes.push(Pass { tokens: vec![tokens[i % tokens.len()]], pos0: tokens.len() + i, n_outputs: 1 });
    }
    let mode = if a.cumulative { Mode::Cumulative } else { a.mode.into() };
    if !quiet {
        eprintln!(
            "checking {} against {} ({mode:?}) on {} prompt tokens + {} decode steps, {threads} threads",
            candidate.name(),
            reference[0].name(),
            tokens.len(),
            a.steps
        );
    }
    let config = ExecConfig::solo(n_ctx, tokens.len());
    let g = &model.graph;
    let report = pool.install(|| cross_check(g, weights, &reference, candidate, &passes, mode, config))?;
    let mut stdout = out::stdout();
    match a.format {
        DumpFormat::Table => stdout.put(&report.table())?,
        DumpFormat::Json => {
            let doc = serde_json::json!({
                "report": report,
                "passed": report.passed(),
                "failed": report.failed(),
                "skipped": report.skipped(),
                "summary": report.summary(),
            });
            stdout.line(&serde_json::to_string_pretty(&doc)?)?;
        }
        DumpFormat::Dot => {
            let colors = report.colors(g.len());
            stdout.put(&graph::dump::dot(g, None, Some(&colors)))?;
        }
    }
    if let Some(f) = report.first_failure() {
        let why = match &f.status {
            Status::Failed(w) => w.as_str(),
            _ => "",
        };
        eprintln!("check failed: first failing node `{}` ({}): {why}", f.name, f.op);
        eprintln!("{}", report.summary());
        return Ok(ExitCode::from(1));
    }
    if quiet {
        eprintln!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}
