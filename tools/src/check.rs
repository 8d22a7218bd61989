//! `bitnet-graph check`: the op-by-op cross-check of a candidate backend against a reference
//! backend on the real model graph.

use std::process::ExitCode;

use anyhow::{bail, Result};
use graph::check::{cross_check, Mode, Pass, Status};

use crate::cli::{CheckArgs, DumpFormat};
use crate::runtime;

/// Runs `check`.
pub fn run(a: &CheckArgs) -> Result<ExitCode> {
    let threads = runtime::set_threads(a.threads)?;
    let candidate = runtime::backend_by_name(a.candidate)?;
    let reference = runtime::backend_by_name(a.reference)?;
    let quiet = a.format != DumpFormat::Table;
    let loaded = runtime::load(&a.model, quiet)?;
    let tokens = loaded.tokenizer.tokenize(&a.prompt, true, false);
    if tokens.is_empty() {
        bail!("the prompt gives no tokens");
    }
    let n_ctx = tokens.len() + a.steps + 1;
    if n_ctx > loaded.model.hparams.n_ctx_train {
        bail!("the prompt ({} tokens) plus {} steps exceeds the model's context of {}", tokens.len(), a.steps, loaded.model.hparams.n_ctx_train);
    }
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
            reference.name(),
            tokens.len(),
            a.steps
        );
    }
    let report = cross_check(&loaded.model.graph, &loaded.file, reference, candidate, &passes, mode, n_ctx)?;
    match a.format {
        DumpFormat::Table => print!("{}", report.table()),
        DumpFormat::Json => {
            let doc = serde_json::json!({
                "report": report,
                "passed": report.passed(),
                "failed": report.failed(),
                "skipped": report.skipped(),
                "summary": report.summary(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        DumpFormat::Dot => {
            let g = &loaded.model.graph;
            let colors = report.colors(g.nodes().len());
            print!("{}", graph::dump::dot(g, None, Some(&colors)));
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
