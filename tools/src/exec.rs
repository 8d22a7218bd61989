//! `bitnet-graph exec`: prompt processing and generation, for one prompt (streamed) or for a
//! file of prompts run together (`--prompts-file`, `--parallel`).

use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use graph::check::{Checker, IsolatedCheck, Mode};
use runtime::{Batch, ChatFormat, ChatMessage, Completion, Event, FinishReason, LogitsMode, Model, Request, Role};
use serde::Serialize;

use crate::cli::ExecArgs;
use crate::load;
use crate::out;

#[derive(Serialize)]
struct Timings {
    load_ms: f64,
    prompt_ms: f64,
    prompt_tok_s: f64,
    gen_ms: f64,
    gen_tok_s: f64,
    /// Generated tokens that were evaluated (fed back): the tokens `gen_ms` covers.
    n_eval: usize,
}

/// What `exec --json` prints, and each line of a `--prompts-file` run.
#[derive(Serialize)]
struct Report {
    prompt_tokens: Vec<u32>,
    generated_tokens: Vec<u32>,
    n_prompt_tokens: usize,
    n_generated_tokens: usize,
    text: String,
    stop_reason: &'static str,
    timings: Timings,
    backend: String,
    threads: usize,
}

fn stop_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Eog => "eog",
        FinishReason::StopString => "stop",
        FinishReason::MaxTokens => "max_tokens",
        FinishReason::ContextFull => "context_full",
        FinishReason::Cancelled => "cancelled",
    }
}

fn report(model: &Model, c: Completion) -> Report {
    let t = c.timings;
    Report {
        n_prompt_tokens: c.prompt.len(),
        n_generated_tokens: c.tokens.len(),
        timings: Timings {
            load_ms: model.load_ms(),
            prompt_ms: t.prompt_ms,
            prompt_tok_s: c.prompt.len() as f64 / (t.prompt_ms / 1e3),
            gen_ms: t.gen_ms,
            gen_tok_s: if t.n_eval > 0 { t.n_eval as f64 / (t.gen_ms / 1e3) } else { 0.0 },
            n_eval: t.n_eval,
        },
        prompt_tokens: c.prompt,
        generated_tokens: c.tokens,
        text: c.text,
        stop_reason: stop_reason(c.finish),
        backend: model.program().backends()[0].name().to_string(),
        threads: model.threads(),
    }
}

/// The prompt text: `-p`, or the file of `-f` (`-` = standard input).
fn prompt_text(a: &ExecArgs) -> Result<String> {
    match (&a.prompt, &a.file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the prompt from standard input")?;
            Ok(s)
        }
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading the prompt from {}", f.display())),
        (None, None) => bail!("give a prompt with -p or -f"),
    }
}

/// The chat format when `--chat`, `--system` or `--chat-template` asks for one, and whether
/// it was named or detected.
fn chat_format(a: &ExecArgs, model: &Model) -> Option<(ChatFormat, &'static str)> {
    match &a.chat_template {
        Some(name) => ChatFormat::by_name(name).map(|f| (f, "--chat-template")),
        None if a.chat || a.system.is_some() => Some((model.chat_format(), "detected from the model")),
        None => None,
    }
}

/// Builds the prompt's token ids, applying the chat format when asked.
fn prompt_tokens(a: &ExecArgs, model: &Model, text: &str, quiet: bool) -> Vec<u32> {
    let add_bos = !a.no_bos;
    match chat_format(a, model) {
        None => model.tokenize(text, add_bos, a.special),
        Some((format, how)) => {
            if !quiet {
                let name = runtime::chat::FORMATS.iter().find(|f| f.1 == format).map_or("?", |f| f.0);
                eprintln!("chat format: {name} ({how})");
            }
            let mut msgs: Vec<ChatMessage> = a.system.iter().map(|s| ChatMessage::new(Role::System, s.clone())).collect();
            msgs.push(ChatMessage::new(Role::User, text));
            model.apply_chat_template(&msgs, Some(format), add_bos)
        }
    }
}

/// Checks a single prompt against the context, with the numbers and what to do.
fn check_prompt(model: &Model, ids: &[u32], what: &str) -> Result<()> {
    model.check_prompt(ids).map_err(|e| match e.kind() {
        runtime::ErrorKind::PromptTooLong { tokens, n_ctx } => {
            anyhow::anyhow!(
                "{what} has {tokens} tokens but the context holds {n_ctx} (raise --ctx-size; the model was trained with {})",
                model.hparams().n_ctx_train
            )
        }
        runtime::ErrorKind::Invalid(m) if m.contains("empty") => {
            anyhow::anyhow!("{what} is empty (no tokens and no BOS); give a prompt or drop --no-bos")
        }
        _ => anyhow::anyhow!("{what}: {e}"),
    })
}

/// Runs `exec`.
pub fn run(a: &ExecArgs) -> Result<ExitCode> {
    if let Some(file) = &a.prompts_file {
        return run_file(a, file);
    }
    let params = a.sample.params()?;
    let text = prompt_text(a)?;
    let quiet = a.json;
    let model = load::load(&a.model, &load::options(&a.run, 1), quiet)?;
    let prompt = prompt_tokens(a, &model, &text, quiet);
    check_prompt(&model, &prompt, "the prompt")?;
    if a.verbose_prompt {
        eprintln!("prompt: {} tokens", prompt.len());
        for &id in &prompt {
            eprintln!("{id:>8} -> '{}'", String::from_utf8_lossy(&model.tokenizer().token_to_piece(id, true)));
        }
    }
    let backend_name = model.program().backends()[0].name();
    if !quiet {
        eprintln!(
            "backend: {backend_name} ({}), {} threads, ctx {}, prompt {} tokens",
            model.program().plan_summary(),
            model.threads(),
            model.n_ctx(),
            prompt.len()
        );
    }
    let mut checker = if a.run.backend == "scalar" && a.crosscheck {
        bail!(
            "--crosscheck compares the planned backend with the scalar reference; it needs another backend than --backend scalar"
        );
    } else {
        a.crosscheck.then(|| Checker::new(model.program().graph().len(), Mode::Isolated))
    };
    let reference = runtime::backends::reference();
    let mut batch = Batch::new(model.clone())?;
    let logits_mode = if a.logits_out.is_some() { LogitsMode::Prompt } else { LogitsMode::None };
    batch.add(Request { prompt: prompt.clone(), params, logits: logits_mode })?;
    let mut stdout = out::stdout();
    let mut all_logits: Vec<f32> = Vec::new();
    let mut done: Option<Completion> = None;
    let mut steps = 0usize;
    while !batch.is_idle() {
        let events = match checker.as_mut() {
            Some(c) => {
                c.next_pass();
                let mut hook = IsolatedCheck::new(model.program().graph(), reference.as_ref(), c).reference_is_other();
                batch.step_hooked(Some(&mut hook))?
            }
            None => batch.step()?,
        };
        steps += 1;
        if !quiet && prompt.len() > a.run.ubatch && steps * a.run.ubatch < prompt.len() {
            eprint!("\rprompt: {}/{} tokens", steps * a.run.ubatch, prompt.len());
        }
        for e in events {
            match e {
                Event::Token { text, .. } | Event::Text { text, .. } if !a.json => stdout.put(&text)?,
                Event::Logits { rows, .. } => all_logits.extend_from_slice(&rows),
                Event::Done(c) => done = Some(c),
                _ => {}
            }
        }
    }
    let c = done.context("the sequence did not finish")?;
    if !a.json {
        stdout.line("")?;
    }
    if let Some(path) = &a.logits_out {
        let n_vocab = model.n_vocab();
        out::write_file(path, |mut w| gguf::npy::write_f32(&mut w, &[prompt.len(), n_vocab], &all_logits))?;
    }
    if let Some(c) = checker {
        let report = c.report(model.program().graph(), reference.as_ref(), model.program().backends()[0].as_ref());
        eprintln!("crosscheck over {} steps: {}", report.passes, report.summary());
        if let Some(f) = report.first_failure() {
            eprint!("{}", report.table());
            eprintln!("crosscheck failed: first failing node `{}` ({})", f.name, f.op);
            return Ok(ExitCode::from(1));
        }
    }
    let r = report(&model, c);
    if a.json {
        stdout.line(&serde_json::to_string(&r)?)?;
    } else {
        let t = &r.timings;
        eprintln!(
            "timings: load {:.0} ms | prompt {} tokens in {:.1} ms ({:.1} tok/s) | generation {} tokens, {} evaluated in {:.1} ms ({:.2} tok/s) | stop: {}",
            t.load_ms,
            r.n_prompt_tokens,
            t.prompt_ms,
            t.prompt_tok_s,
            r.n_generated_tokens,
            t.n_eval,
            t.gen_ms,
            t.gen_tok_s,
            r.stop_reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of a prompts file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: String,
    max_tokens: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    chat: Option<bool>,
    system: Option<String>,
}

/// The request of one line: the command line's settings, overridden by the line's fields.
fn line_request(a: &ExecArgs, model: &Model, raw: &str) -> Result<Request> {
    let trimmed = raw.trim_start();
    let (text, mut params, chat, system) = if trimmed.starts_with('{') {
        let l: Line = serde_json::from_str(raw).context("invalid JSON")?;
        let mut p = a.sample.params()?;
        if let Some(n) = l.max_tokens {
            p.max_tokens = match n {
                -1 => None,
                n if n >= 0 => Some(n as usize),
                n => bail!("max_tokens {n}: expected -1 or a count ≥ 0"),
            };
        }
        p.temperature = l.temperature.unwrap_or(p.temperature);
        p.top_k = l.top_k.unwrap_or(p.top_k);
        p.top_p = l.top_p.unwrap_or(p.top_p);
        p.min_p = l.min_p.unwrap_or(p.min_p);
        p.repeat_penalty = l.repeat_penalty.unwrap_or(p.repeat_penalty);
        p.seed = l.seed.or(p.seed);
        p.stop = l.stop.unwrap_or_default();
        let chat = l.chat.unwrap_or(a.chat) || l.system.is_some();
        (l.prompt, p, chat, l.system.or_else(|| a.system.clone()))
    } else {
        (raw.to_string(), a.sample.params()?, a.chat || a.system.is_some() || a.chat_template.is_some(), a.system.clone())
    };
    params.validate()?;
    let prompt = if chat {
        let format = a.chat_template.as_deref().and_then(ChatFormat::by_name);
        let mut msgs: Vec<ChatMessage> = system.map(|s| ChatMessage::new(Role::System, s)).into_iter().collect();
        msgs.push(ChatMessage::new(Role::User, text));
        model.apply_chat_template(&msgs, format, !a.no_bos)
    } else {
        model.tokenize(&text, !a.no_bos, a.special)
    };
    check_prompt(model, &prompt, "the prompt")?;
    params.stop.retain(|s| !s.is_empty());
    Ok(Request::new(prompt, params))
}

/// `exec --prompts-file FILE --parallel N`: every valid line runs through one batch; one
/// JSON result per line on stdout in input order (`{"line": N, "error": …}` for a bad line).
fn run_file(a: &ExecArgs, file: &std::path::Path) -> Result<ExitCode> {
    let raw = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading prompts from standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let lines: Vec<(usize, &str)> =
        raw.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        bail!("{}: no prompts (the file is empty)", file.display());
    }
    if a.parallel == 0 {
        bail!("--parallel 0: at least one sequence must run");
    }
    let model = load::load(&a.model, &load::options(&a.run, a.parallel), a.json)?;
    let mut batch = Batch::new(model.clone())?;
    // Per line: the sequence it became, or why it could not.
    let mut slots: Vec<(usize, std::result::Result<runtime::SeqId, String>)> = Vec::new();
    for (no, l) in &lines {
        let r = line_request(a, &model, l).and_then(|req| batch.add(req).map_err(anyhow::Error::from));
        match r {
            Ok(id) => slots.push((*no, Ok(id))),
            Err(e) => {
                eprintln!("{}:{no}: {e:#}", file.display());
                slots.push((*no, Err(format!("{e:#}"))));
            }
        }
    }
    let n_bad = slots.iter().filter(|s| s.1.is_err()).count();
    eprintln!("running {} prompts, {} at a time ({} lines refused)", lines.len() - n_bad, a.parallel, n_bad);
    let mut done: Vec<Completion> = batch.run_to_end()?;
    let mut stdout = out::stdout();
    for (no, r) in slots {
        let v = match r {
            Ok(id) => {
                let i = done.iter().position(|c| c.id == id).context("a sequence did not finish")?;
                let mut v = serde_json::to_value(report(&model, done.swap_remove(i)))?;
                v["line"] = no.into();
                v
            }
            Err(e) => serde_json::json!({ "line": no, "error": e }),
        };
        stdout.line(&serde_json::to_string(&v)?)?;
    }
    Ok(if n_bad > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
