//! `bitnet-graph bench`: prefill (pp) and decode (tg) speed like llama-bench, peak RSS, and
//! the decode rate as a fraction of this machine's measured read-bandwidth roofline.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use runtime::{Batch, Event, Request, SamplingParams};

use crate::cli::BenchArgs;
use crate::{load, out};

#[derive(Serialize)]
struct BenchReport {
    model: String,
    backend: &'static str,
    lm_head: String,
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    pp_tok_s: f64,
    pp_stddev: f64,
    tg_tok_s: f64,
    tg_stddev: f64,
    /// The probe's best pass (the roofline's bandwidth).
    bandwidth_gb_s: f64,
    /// The probe's median pass and `(best − worst) / median` over its passes.
    bandwidth_median_gb_s: f64,
    bandwidth_spread: f64,
    bandwidth_passes: usize,
    bandwidth_buffer_bytes: usize,
    bytes_per_token: u64,
    roofline_tok_s: f64,
    roofline_fraction: f64,
    peak_rss_bytes: u64,
    load_ms: f64,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unavailable.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Prints a step profile (time per op kind, per token) of `n` tokens that took `wall`
/// seconds; what the ops do not account for is "(outside ops)".
fn print_profile(what: &str, wall: f64, n: usize, prof: &[(String, f64, u64)]) {
    let in_ops: f64 = prof.iter().map(|p| p.1).sum();
    let per_tok = |secs: f64| secs * 1e3 / n as f64;
    eprintln!("{what} profile (last rep, {n} tokens, {:.2} ms/token):", per_tok(wall));
    for (op, secs, calls) in prof {
        eprintln!("  {op:<24} {:>8.2} ms/token {:>5.1}%  ({calls} calls)", per_tok(*secs), 100.0 * secs / wall);
    }
    eprintln!("  {:<24} {:>8.2} ms/token {:>5.1}%", "(outside ops)", per_tok(wall - in_ops), 100.0 * (wall - in_ops) / wall);
}

/// Bytes of weights read per decoded token: every weight in full (the tied embedding as the
/// LM head), except a table read only by the embedding lookup (one row per token).
fn bytes_per_token(g: &graph::Graph) -> u64 {
    g.weights()
        .map(|(id, _)| {
            let fact = &g.node(id).fact;
            let dims: Vec<usize> = fact.shape.resolve(graph::Bindings { tokens: 0, outputs: 0 });
            let len = fact.dtype.tensor_bytes(&dims).unwrap_or(0) as u64;
            let only_lookup = g.consumers(id).iter().all(|&c| matches!(g.node(c).op, graph::Op::Embedding));
            if only_lookup {
                len / (dims.first().copied().unwrap_or(1).max(1) as u64)
            } else {
                len
            }
        })
        .sum()
}

/// Deterministic pseudo-random prompt tokens (bench measures speed, not text).
fn bench_tokens(n: usize, vocab: usize, salt: u64) -> Vec<u32> {
    let mut rng = graph::rng::Rng::new(12345 ^ salt);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// One level of `bench --parallel`: `npl` sequences of `pp` prompt tokens each, then `tg`
/// decode steps each, in one batch.
#[derive(Serialize)]
struct Level {
    npl: usize,
    /// Seconds until every sequence had its prompt processed.
    t_pp: f64,
    /// Prompt tokens per second, all sequences.
    pp_tok_s: f64,
    /// Seconds of the decode phase.
    t_tg: f64,
    /// Generated tokens per second, all sequences (aggregate decode).
    tg_tok_s: f64,
    /// All tokens over all time.
    total_tok_s: f64,
}

/// Runs `npl` sequences together; the prefill phase ends when every sequence has sampled its
/// first token, the decode phase evaluates `tg` more tokens per sequence.
fn run_level(batch: &mut Batch, npl: usize, pp: usize, tg: usize, vocab: usize) -> Result<Level> {
    for s in 0..npl {
        let mut params = SamplingParams::greedy(tg + 1);
        params.ignore_eos = true;
        batch.add(Request::new(bench_tokens(pp.max(1), vocab, s as u64), params))?;
    }
    let t0 = Instant::now();
    let mut first = std::collections::HashSet::new();
    let mut t_pp = None;
    while !batch.is_idle() {
        for e in batch.step()? {
            if let Event::Token { seq, .. } = e {
                first.insert(seq);
            }
        }
        if t_pp.is_none() && first.len() == npl {
            t_pp = Some(t0.elapsed().as_secs_f64());
        }
    }
    let total = t0.elapsed().as_secs_f64();
    let t_pp = t_pp.unwrap_or(total);
    let t_tg = total - t_pp;
    Ok(Level {
        npl,
        t_pp,
        pp_tok_s: (npl * pp) as f64 / t_pp,
        t_tg,
        tg_tok_s: if t_tg > 0.0 { (npl * tg) as f64 / t_tg } else { 0.0 },
        total_tok_s: (npl * (pp + tg)) as f64 / total,
    })
}

/// `bench --parallel 1,2,4,8`, like llama-batched-bench.
fn run_parallel(a: &BenchArgs) -> Result<ExitCode> {
    let max_npl = a.parallel.iter().copied().max().unwrap_or(1);
    if a.parallel.contains(&0) {
        bail!("--parallel 0: every level needs at least one sequence");
    }
    let model = load::load(&a.model, &load::options(&a.run, max_npl), a.json)?;
    let vocab = model.n_vocab();
    if a.n_prompt + a.n_gen + 1 > model.n_ctx() {
        bail!("-p {} + -n {} exceed the context of {} (raise --ctx-size)", a.n_prompt, a.n_gen, model.n_ctx());
    }
    let mut stdout = out::stdout();
    if !a.json {
        eprintln!(
            "bench: {}, {} threads, pp {} tg {} per sequence, levels {:?} (+1 warm-up)",
            model.program().backends()[0].name(),
            model.threads(),
            a.n_prompt,
            a.n_gen,
            a.parallel
        );
        stdout.line(&format!(
            "{:>5} {:>10} {:>12} {:>10} {:>14} {:>12}",
            "npl", "t_pp s", "pp tok/s", "t_tg s", "tg tok/s (agg)", "total tok/s"
        ))?;
    }
    let mut batch = Batch::new(model.clone())?;
    run_level(&mut batch, 1, a.n_prompt.min(16), 4.min(a.n_gen), vocab)?;
    let mut levels = Vec::new();
    for &npl in &a.parallel {
        let l = run_level(&mut batch, npl, a.n_prompt, a.n_gen, vocab)?;
        if !a.json {
            stdout.line(&format!(
                "{:>5} {:>10.3} {:>12.2} {:>10.3} {:>14.2} {:>12.2}",
                l.npl, l.t_pp, l.pp_tok_s, l.t_tg, l.tg_tok_s, l.total_tok_s
            ))?;
        }
        levels.push(l);
    }
    let peak = peak_rss_bytes();
    if a.json {
        let doc = serde_json::json!({
            "model": model.info().path,
            "backend": model.program().backends()[0].name(),
            "threads": model.threads(),
            "n_prompt": a.n_prompt,
            "n_gen": a.n_gen,
            "n_ctx": model.n_ctx(),
            "levels": levels,
            "peak_rss_bytes": peak,
        });
        stdout.line(&serde_json::to_string_pretty(&doc)?)?;
    } else {
        stdout.line(&format!(
            "peak RSS     {:.1} MB (ctx {} per sequence, {} sequences at most)",
            peak as f64 / 1e6,
            model.n_ctx(),
            max_npl
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `bench`.
pub fn run(a: &BenchArgs) -> Result<ExitCode> {
    if a.n_prompt == 0 && a.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    if a.run.ubatch == 0 {
        bail!("--ubatch must be at least 1");
    }
    if !a.parallel.is_empty() {
        return run_parallel(a);
    }
    let mut opts = load::options(&a.run, 1);
    let n_ctx = a.n_prompt.max(a.n_gen).max(1);
    opts.n_ctx = Some(a.run.ctx_size.unwrap_or(n_ctx));
    let model = load::load(&a.model, &opts, a.json)?;
    let hp = model.hparams();
    if n_ctx > hp.n_ctx_train {
        bail!("-p/-n of {n_ctx} exceed the model's context of {}", hp.n_ctx_train);
    }
    if n_ctx > model.n_ctx() {
        bail!("-p/-n of {n_ctx} exceed --ctx-size {}", model.n_ctx());
    }
    let backend = model.program().backends()[0].name();
    let threads = model.threads();
    let tokens = bench_tokens(a.n_prompt, hp.n_vocab, 0);
    if !a.json {
        eprintln!("bench: {backend}, {threads} threads, pp{} tg{} × {} reps (+1 warm-up)", a.n_prompt, a.n_gen, a.reps);
    }
    let mut batch = Batch::new(model.clone())?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for rep in 0..=a.reps {
        let profile = a.profile && rep == a.reps;
        if a.n_prompt > 0 {
            batch.executor_mut().set_profiling(profile);
            batch.add(Request::new(tokens.clone(), SamplingParams::greedy(0)))?;
            let t = Instant::now();
            batch.run_to_end()?;
            if rep > 0 {
                pp.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
            }
            if profile {
                print_profile("prefill", t.elapsed().as_secs_f64(), a.n_prompt, &batch.executor_mut().profile());
                batch.executor_mut().set_profiling(false);
            }
        }
        if a.n_gen > 0 {
            // n_gen forward passes of one token each from an empty cache: a one-token
            // prompt, then n_gen − 1 generated tokens fed back (greedy).
            batch.executor_mut().set_profiling(profile);
            let mut params = SamplingParams::greedy(a.n_gen);
            params.ignore_eos = true;
            batch.add(Request::new(vec![1], params))?;
            let t = Instant::now();
            batch.run_to_end()?;
            if rep > 0 {
                tg.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
            }
            if profile {
                print_profile("decode", t.elapsed().as_secs_f64(), a.n_gen, &batch.executor_mut().profile());
                batch.executor_mut().set_profiling(false);
            }
        }
        if !a.json && rep > 0 {
            eprintln!(
                "  rep {rep}: pp {:.2} tok/s, tg {:.2} tok/s",
                pp.last().copied().unwrap_or(0.0),
                tg.last().copied().unwrap_or(0.0)
            );
        }
    }
    let (pp_m, pp_sd) = if pp.is_empty() { (0.0, 0.0) } else { mean_sd(&pp) };
    let (tg_m, tg_sd) = if tg.is_empty() { (0.0, 0.0) } else { mean_sd(&tg) };
    // RSS first: the bandwidth probe's own buffer must not count as the model's.
    let peak_rss = peak_rss_bytes();
    let probe = model.install(runtime::probe::read_bandwidth);
    let bw = probe.as_ref().map_or(0.0, |p| p.best_gb_s);
    let bytes_per_token = bytes_per_token(model.program().graph());
    let roofline = bw * 1e9 / bytes_per_token as f64;
    let r = BenchReport {
        model: model.info().path,
        backend,
        lm_head: model.info().lm_head,
        threads,
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        reps: a.reps,
        pp_tok_s: pp_m,
        pp_stddev: pp_sd,
        tg_tok_s: tg_m,
        tg_stddev: tg_sd,
        bandwidth_gb_s: bw,
        bandwidth_median_gb_s: probe.as_ref().map_or(0.0, |p| p.median_gb_s),
        bandwidth_spread: probe.as_ref().map_or(0.0, |p| p.spread),
        bandwidth_passes: probe.as_ref().map_or(0, |p| p.passes),
        bandwidth_buffer_bytes: probe.as_ref().map_or(0, |p| p.buffer_bytes),
        bytes_per_token,
        roofline_tok_s: roofline,
        roofline_fraction: if roofline > 0.0 { tg_m / roofline } else { 0.0 },
        peak_rss_bytes: peak_rss,
        load_ms: model.load_ms(),
    };
    let mut o = out::stdout();
    if a.json {
        o.line(&serde_json::to_string_pretty(&r)?)?;
    } else {
        o.line(&format!("model        {}", r.model))?;
        o.line(&format!("backend      {} ({} threads)", r.backend, r.threads))?;
        if a.n_prompt > 0 {
            o.line(&format!("pp{:<10} {:.2} ± {:.2} tok/s", a.n_prompt, r.pp_tok_s, r.pp_stddev))?;
        }
        if a.n_gen > 0 {
            o.line(&format!("tg{:<10} {:.2} ± {:.2} tok/s", a.n_gen, r.tg_tok_s, r.tg_stddev))?;
        }
        o.line(&format!(
            "bandwidth    {:.2} GB/s (read, best of {} passes over {:.2} GB; median {:.2}, spread {:.1}%)",
            r.bandwidth_gb_s,
            r.bandwidth_passes,
            r.bandwidth_buffer_bytes as f64 / 1e9,
            r.bandwidth_median_gb_s,
            100.0 * r.bandwidth_spread
        ))?;
        o.line(&format!(
            "per token    {:.3} GB of weights → roofline {:.2} tok/s",
            r.bytes_per_token as f64 / 1e9,
            r.roofline_tok_s
        ))?;
        o.line(&format!("decode       {:.1}% of the roofline", 100.0 * r.roofline_fraction))?;
        o.line(&format!("peak RSS     {:.1} MB", r.peak_rss_bytes as f64 / 1e6))?;
    }
    Ok(ExitCode::SUCCESS)
}
