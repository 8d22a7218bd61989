//! `bitnet-graph bench`: prefill (pp) and decode (tg) speed like llama-bench, peak RSS, and
//! the decode rate as a fraction of this machine's measured read-bandwidth roofline.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use graph::{ExecConfig, Executor};
use runtime::{Batch, Event, Model, Request, SamplingParams};

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
    /// Tokens in the KV cache before each measurement (`-d`).
    n_depth: usize,
    reps: usize,
    pp_tok_s: f64,
    pp_stddev: f64,
    tg_tok_s: f64,
    tg_stddev: f64,
    /// `-pg PP,TG`: prompt and generated tokens of the combined measurement (0 when not asked).
    pg_prompt: usize,
    pg_gen: usize,
    /// (PP + TG) / time of the combined measurement.
    pg_tok_s: f64,
    pg_stddev: f64,
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

/// A single sequence driven straight through an executor, as llama-bench drives
/// `llama_decode`: prompts in chunks of `ubatch` tokens with the last row's logits, decode
/// one token per step fed back greedily.
struct Solo<'m> {
    model: &'m Model,
    ex: Executor,
    ubatch: usize,
}

impl Solo<'_> {
    /// Processes `tokens` at positions `pos0..`; returns the greedy next token.
    fn prompt(&mut self, tokens: &[u32], pos0: usize) -> Result<u32> {
        let mut next = 0;
        for (c, chunk) in tokens.chunks(self.ubatch).enumerate() {
            let (ex, p) = (&mut self.ex, pos0 + c * self.ubatch);
            next = self.model.install(|| ex.forward(chunk, p, 1).map(|l| runtime::sampler::argmax(l) as u32))?;
        }
        Ok(next)
    }

    /// `n` one-token steps from `first` at positions `pos0..`, each token the previous
    /// step's greedy choice.
    fn decode(&mut self, first: u32, pos0: usize, n: usize) -> Result<()> {
        let mut tok = first;
        for k in 0..n {
            let ex = &mut self.ex;
            tok = self.model.install(|| ex.forward(&[tok], pos0 + k, 1).map(|l| runtime::sampler::argmax(l) as u32))?;
        }
        Ok(())
    }

    /// Runs `f`, profiling it when `profile` (then prints the profile of `n` tokens).
    fn timed(&mut self, what: &str, profile: bool, n: usize, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<f64> {
        self.ex.set_profiling(profile);
        let t = Instant::now();
        f(self)?;
        let secs = t.elapsed().as_secs_f64();
        if profile {
            print_profile(what, secs, n, &self.ex.profile());
            self.ex.set_profiling(false);
        }
        Ok(secs)
    }
}

/// The `-pg PP,TG` pair, checked.
fn pg_pair(pg: &[usize]) -> Result<Option<(usize, usize)>> {
    match pg {
        [] => Ok(None),
        [pp, tg] if *pp > 0 && *tg > 0 => Ok(Some((*pp, *tg))),
        _ => bail!("--pg takes two positive counts, PP,TG (got {pg:?})"),
    }
}

/// Runs `bench`.
pub fn run(a: &BenchArgs) -> Result<ExitCode> {
    let pg = pg_pair(&a.pg)?;
    if a.n_prompt == 0 && a.n_gen == 0 && pg.is_none() {
        bail!("nothing to measure: -p and -n are both 0");
    }
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    if a.run.ubatch == 0 {
        bail!("--ubatch must be at least 1");
    }
    if !a.parallel.is_empty() {
        if a.n_depth > 0 || pg.is_some() {
            bail!("--parallel measures from an empty cache: -d and --pg cannot be used with it");
        }
        return run_parallel(a);
    }
    let (pg_pp, pg_tg) = pg.unwrap_or((0, 0));
    let mut opts = load::options(&a.run, 1);
    // Positions the longest measurement reaches: the depth, then the test's own tokens.
    let Some(n_ctx) = a.n_prompt.max(a.n_gen).max(pg_pp.saturating_add(pg_tg)).max(1).checked_add(a.n_depth) else {
        bail!("-d {} is too large", a.n_depth);
    };
    opts.n_ctx = Some(a.run.ctx_size.unwrap_or(n_ctx));
    let model = load::load(&a.model, &opts, a.json)?;
    let hp = model.hparams();
    if n_ctx > hp.n_ctx_train {
        bail!("-d + -p/-n/--pg reach {n_ctx} positions, beyond the model's context of {}", hp.n_ctx_train);
    }
    if n_ctx > model.n_ctx() {
        bail!("-d + -p/-n/--pg reach {n_ctx} positions, beyond --ctx-size {}", model.n_ctx());
    }
    let backend = model.program().backends()[0].name();
    let threads = model.threads();
    let tokens = bench_tokens(a.n_prompt, hp.n_vocab, 0);
    let pg_tokens = bench_tokens(pg_pp, hp.n_vocab, 2);
    if !a.json {
        let pg_txt = pg.map_or(String::new(), |(p, t)| format!(" pg{p},{t}"));
        let d_txt = if a.n_depth > 0 { format!(" at depth {}", a.n_depth) } else { String::new() };
        eprintln!(
            "bench: {backend}, {threads} threads, pp{} tg{}{pg_txt}{d_txt} × {} reps (+1 warm-up)",
            a.n_prompt, a.n_gen, a.reps
        );
    }
    let ubatch = model.options().ubatch.min(model.n_ctx());
    let ex = Executor::new(model.program().clone(), ExecConfig::solo(model.n_ctx(), ubatch))?;
    let mut solo = Solo { model: &model, ex, ubatch };
    // The depth is filled once: every measurement then writes positions from `depth` on,
    // over what the one before wrote there (attention reads positions up to its own only).
    let depth = a.n_depth;
    if depth > 0 {
        let t = Instant::now();
        solo.prompt(&bench_tokens(depth, hp.n_vocab, 1), 0)?;
        if !a.json {
            eprintln!("  depth {depth}: {:.2} tok/s (untimed fill)", depth as f64 / t.elapsed().as_secs_f64());
        }
    }
    let (mut pp, mut tg, mut pgv) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=a.reps {
        let profile = a.profile && rep == a.reps;
        if a.n_prompt > 0 {
            let secs = solo.timed("prefill", profile, a.n_prompt, |s| s.prompt(&tokens, depth).map(drop))?;
            if rep > 0 {
                pp.push(a.n_prompt as f64 / secs);
            }
        }
        if a.n_gen > 0 {
            // n_gen forward passes of one token each after the depth: token 1, then
            // n_gen − 1 generated tokens fed back (greedy).
            let secs = solo.timed("decode", profile, a.n_gen, |s| s.decode(1, depth, a.n_gen))?;
            if rep > 0 {
                tg.push(a.n_gen as f64 / secs);
            }
        }
        if let Some((p, t)) = pg {
            let secs = solo.timed("prompt+generation", profile, p + t, |s| {
                let first = s.prompt(&pg_tokens, depth)?;
                s.decode(first, depth + p, t)
            })?;
            if rep > 0 {
                pgv.push((p + t) as f64 / secs);
            }
        }
        if !a.json && rep > 0 {
            let mut line = format!("  rep {rep}:");
            if a.n_prompt > 0 {
                line += &format!(" pp {:.2} tok/s", pp.last().copied().unwrap_or(0.0));
            }
            if a.n_gen > 0 {
                line += &format!(" tg {:.2} tok/s", tg.last().copied().unwrap_or(0.0));
            }
            if pg.is_some() {
                line += &format!(" pg {:.2} tok/s", pgv.last().copied().unwrap_or(0.0));
            }
            eprintln!("{line}");
        }
    }
    let stats = |v: &[f64]| if v.is_empty() { (0.0, 0.0) } else { mean_sd(v) };
    let ((pp_m, pp_sd), (tg_m, tg_sd), (pg_m, pg_sd)) = (stats(&pp), stats(&tg), stats(&pgv));
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
        n_depth: depth,
        reps: a.reps,
        pp_tok_s: pp_m,
        pp_stddev: pp_sd,
        tg_tok_s: tg_m,
        tg_stddev: tg_sd,
        pg_prompt: pg_pp,
        pg_gen: pg_tg,
        pg_tok_s: pg_m,
        pg_stddev: pg_sd,
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
        // llama-bench's test names: `pp512`, `tg128`, `pp512+tg128`, with ` @ d2048` at depth.
        let at = if depth > 0 { format!(" @ d{depth}") } else { String::new() };
        if a.n_prompt > 0 {
            o.line(&format!("{:<12} {:.2} ± {:.2} tok/s", format!("pp{}{at}", a.n_prompt), r.pp_tok_s, r.pp_stddev))?;
        }
        if a.n_gen > 0 {
            o.line(&format!("{:<12} {:.2} ± {:.2} tok/s", format!("tg{}{at}", a.n_gen), r.tg_tok_s, r.tg_stddev))?;
        }
        if pg.is_some() {
            o.line(&format!("{:<12} {:.2} ± {:.2} tok/s", format!("pp{pg_pp}+tg{pg_tg}{at}"), r.pg_tok_s, r.pg_stddev))?;
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
