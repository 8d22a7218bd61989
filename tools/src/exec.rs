//! `bitnet-graph exec`: prompt processing and generation.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gguf::tokenizer::{Detokenizer, Tokenizer};
use serde::Serialize;

use backend_scalar::ScalarBackend;

use crate::cli::ExecArgs;
use crate::runtime;
use crate::sampler::{Sampler, SamplerConfig};

#[derive(Serialize)]
struct Timings {
    load_ms: f64,
    prompt_ms: f64,
    prompt_tok_s: f64,
    gen_ms: f64,
    gen_tok_s: f64,
}

#[derive(Serialize)]
struct Report {
    prompt_tokens: Vec<u32>,
    generated_tokens: Vec<u32>,
    n_prompt_tokens: usize,
    n_generated_tokens: usize,
    text: String,
    stop_reason: &'static str,
    timings: Timings,
    backend: &'static str,
    threads: usize,
}

/// Builds the prompt's token ids, applying the chat format when asked.
pub fn prompt_tokens(tok: &Tokenizer, a: &ExecArgs, template: Option<&str>, arch: &str) -> Result<Vec<u32>> {
    let add_bos = !a.no_bos;
    if !a.chat && a.chat_template.is_none() {
        return Ok(tok.tokenize(&a.prompt, add_bos, a.special));
    }
    let format = match a.chat_template.as_deref() {
        Some(name) => crate::chat::ChatFormat::by_name(name).ok_or_else(|| {
            let names: Vec<&str> = crate::chat::FORMATS.iter().map(|f| f.0).collect();
            anyhow::anyhow!("--chat-template {name}: unknown (known: {})", names.join(", "))
        })?,
        None => crate::chat::ChatFormat::detect(template, arch, tok.token_id("<|start_header_id|>").is_some()),
    };
    // Each part is tokenized on its own, with special-token parsing, as bitnet.cpp does.
    let mut ids = Vec::new();
    if add_bos && tok.add_bos() {
        ids.push(tok.bos());
    }
    for part in format.render(a.system.as_deref(), &a.prompt) {
        ids.extend(tok.tokenize(&part, false, true));
    }
    Ok(ids)
}

/// One forward pass, checked against the scalar reference node by node when `checker` is
/// set (the plan's outputs propagate; scalar sees the same inputs).
fn step<'e>(
    ex: &'e mut graph::Executor<'_>,
    checker: &mut Option<graph::check::Checker>,
    tokens: &[u32],
    pos: usize,
    n_out: usize,
) -> Result<&'e [f32]> {
    Ok(match checker {
        Some(c) => {
            c.next_pass();
            let mut cb = |id, node: &graph::Node, ours: graph::TensorRef<'_>, reference: graph::TensorRef<'_>| {
                c.record(id, node, ours, reference)
            };
            ex.forward_checked(tokens, pos, n_out, &ScalarBackend::new(), &mut cb)?
        }
        None => ex.forward(tokens, pos, n_out)?,
    })
}

/// Runs `exec`.
pub fn run(a: &ExecArgs) -> Result<ExitCode> {
    let threads = runtime::set_threads(a.threads)?;
    let (preferred, backend_name) = runtime::pick_backend(a.backend)?;
    let preferred_name = backend_name;
    if a.ubatch == 0 {
        bail!("--ubatch must be at least 1");
    }
    let quiet = a.json;
    let loaded = runtime::load_with(&a.model, quiet, a.lm_head)?;
    let hp = &loaded.model.hparams;
    let n_ctx = a.ctx_size.unwrap_or(hp.n_ctx_train);
    if n_ctx == 0 || n_ctx > 1 << 20 {
        bail!("--ctx-size {n_ctx} is out of range 1..=1048576");
    }
    let tok = &loaded.tokenizer;
    let template = loaded.file.get("tokenizer.chat_template").and_then(|v| v.as_str());
    let prompt = prompt_tokens(tok, a, template, &hp.arch)?;
    if prompt.is_empty() {
        bail!("the prompt is empty (no tokens and no BOS); give a prompt or drop --no-bos");
    }
    if prompt.len() > n_ctx {
        bail!("the prompt has {} tokens but the context holds {n_ctx} (raise --ctx-size up to the model's {})", prompt.len(), hp.n_ctx_train);
    }
    let mut ex = runtime::executor(&loaded, preferred, n_ctx)?;
    if !quiet {
        eprintln!("backend: {backend_name} ({}), {threads} threads, ctx {n_ctx}, prompt {} tokens", ex.plan_summary(), prompt.len());
    }

    let mut checker = if a.crosscheck {
        if preferred_name == "scalar" {
            bail!("--crosscheck compares the AVX2 backend with the scalar reference; it needs --backend avx2 (or auto on an AVX2 CPU)");
        }
        Some(graph::check::Checker::new(ex.graph().nodes().len(), graph::check::Mode::Isolated))
    } else {
        None
    };

    // Prompt processing in micro-batches.
    let t_prompt = Instant::now();
    let want_all = a.logits_out.is_some();
    let mut all_logits: Vec<f32> = Vec::new();
    let mut last_logits: Vec<f32> = Vec::new();
    let n_vocab = hp.n_vocab;
    let mut pos = 0;
    for chunk in prompt.chunks(a.ubatch) {
        let last = pos + chunk.len() == prompt.len();
        let n_out = if want_all { chunk.len() } else { usize::from(last) };
        let logits = step(&mut ex, &mut checker, chunk, pos, n_out)?;
        if want_all {
            all_logits.extend_from_slice(logits);
        }
        if last {
            last_logits = logits[logits.len() - n_vocab..].to_vec();
        }
        pos += chunk.len();
        if !quiet && prompt.len() > a.ubatch {
            eprint!("\rprompt: {pos}/{} tokens", prompt.len());
        }
    }
    if !quiet && prompt.len() > a.ubatch {
        eprintln!();
    }
    let prompt_ms = t_prompt.elapsed().as_secs_f64() * 1e3;
    if let Some(path) = &a.logits_out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
        gguf::npy::write_f32(&mut f, &[prompt.len(), n_vocab], &all_logits)?;
        f.flush()?;
    }

    // Generation.
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: 64,
        seed: a.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)),
    });
    let mut history = prompt.clone();
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut detok = Detokenizer::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let t_gen = Instant::now();
    let mut n_eval = 0usize;
    let mut stop_reason = "max_tokens";
    let mut logits = last_logits;
    for k in 0..a.max_new_tokens {
        let id = sampler.sample(&logits, &history);
        if tok.is_eog(id) && !a.ignore_eos {
            stop_reason = "eog";
            break;
        }
        generated.push(id);
        history.push(id);
        let piece = detok.push(&tok.token_to_piece(id, false));
        text.push_str(&piece);
        if !a.json {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        if k + 1 == a.max_new_tokens {
            break;
        }
        if pos >= n_ctx {
            stop_reason = "context_full";
            break;
        }
        logits = step(&mut ex, &mut checker, &[id], pos, 1)?.to_vec();
        n_eval += 1;
        pos += 1;
    }
    let rest = detok.finish();
    text.push_str(&rest);
    let gen_ms = t_gen.elapsed().as_secs_f64() * 1e3;
    if !a.json {
        out.write_all(rest.as_bytes())?;
        writeln!(out)?;
    }
    if let Some(c) = checker {
        let report = c.report(ex.graph(), &ScalarBackend::new(), runtime::backend_by_name(a.backend)?.as_ref());
        eprintln!("crosscheck over {} steps: {}", report.passes, report.summary());
        if let Some(f) = report.first_failure() {
            eprint!("{}", report.table());
            eprintln!("crosscheck failed: first failing node `{}` ({})", f.name, f.op);
            return Ok(ExitCode::from(1));
        }
    }
    let timings = Timings {
        load_ms: loaded.load_ms,
        prompt_ms,
        prompt_tok_s: prompt.len() as f64 / (prompt_ms / 1e3),
        gen_ms,
        gen_tok_s: if n_eval > 0 { n_eval as f64 / (gen_ms / 1e3) } else { 0.0 },
    };
    if a.json {
        let r = Report {
            n_prompt_tokens: prompt.len(),
            n_generated_tokens: generated.len(),
            prompt_tokens: prompt,
            generated_tokens: generated,
            text,
            stop_reason,
            timings,
            backend: backend_name,
            threads,
        };
        println!("{}", serde_json::to_string(&r)?);
    } else {
        eprintln!(
            "timings: load {:.0} ms | prompt {} tokens in {:.1} ms ({:.1} tok/s) | generation {} tokens, {} evaluated in {:.1} ms ({:.2} tok/s) | stop: {stop_reason}",
            timings.load_ms,
            prompt.len(),
            timings.prompt_ms,
            timings.prompt_tok_s,
            generated.len(),
            n_eval,
            timings.gen_ms,
            timings.gen_tok_s
        );
    }
    Ok(ExitCode::SUCCESS)
}
