//! `bitnet-graph bench`: prefill (pp) and decode (tg) speed like llama-bench, peak RSS, and
//! the decode rate as a fraction of this machine's measured read-bandwidth roofline.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::runtime;

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
    bandwidth_gb_s: f64,
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
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Read bandwidth of this machine in GB/s: all worker threads sum disjoint parts of a
/// 1 GiB buffer (far larger than any cache), allocated like the weights (anonymous memory
/// advised for transparent huge pages); the best of several passes.
pub fn read_bandwidth_gb_s() -> f64 {
    let bytes = 1usize << 30;
    let mut map = match memmap2::MmapMut::map_anon(bytes) {
        Ok(m) => m,
        Err(_) => return 0.0,
    };
    let _ = map.advise(memmap2::Advice::HugePage);
    for (i, chunk) in map.chunks_mut(4096).enumerate() {
        chunk[0] = i as u8; // fault every page in before timing
        chunk[1] = 1;
    }
    let words: &[u64] = bytemuck::cast_slice(&map[..]);
    let threads = rayon::current_num_threads().max(1);
    let chunk = words.len().div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..6 {
        let t = Instant::now();
        let s: u64 = words
            .par_chunks(chunk)
            .map(|c| {
                // 8 independent sums so the loop is bound by loads, not by one add chain
                let mut acc = [0u64; 8];
                for q in c.chunks_exact(8) {
                    for i in 0..8 {
                        acc[i] = acc[i].wrapping_add(q[i]);
                    }
                }
                acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
            })
            .reduce(|| 0, u64::wrapping_add);
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max(bytes as f64 / dt / 1e9);
    }
    best
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

/// Runs `bench`.
pub fn run(a: &BenchArgs) -> Result<ExitCode> {
    if a.n_prompt == 0 && a.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    let threads = runtime::set_threads(a.threads)?;
    let (preferred, backend) = runtime::pick_backend(a.backend)?;
    let loaded = runtime::load_with(&a.model, a.json, a.lm_head)?;
    let hp = &loaded.model.hparams;
    let n_ctx = a.n_prompt.max(a.n_gen).max(1);
    if n_ctx > hp.n_ctx_train {
        bail!("-p/-n of {n_ctx} exceed the model's context of {}", hp.n_ctx_train);
    }
    let mut ex = runtime::executor(&loaded, preferred, n_ctx)?;
    // Deterministic pseudo-random prompt tokens (bench measures speed, not text).
    let vocab = hp.n_vocab as u64;
    let tokens: Vec<u32> = (0..a.n_prompt as u64).map(|i| ((i * 2_654_435_761 + 12345) % vocab) as u32).collect();
    if !a.json {
        eprintln!("bench: {backend}, {threads} threads, pp{} tg{} × {} reps (+1 warm-up)", a.n_prompt, a.n_gen, a.reps);
    }
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for rep in 0..=a.reps {
        if a.n_prompt > 0 {
            ex.clear_kv();
            ex.set_profiling(a.profile && rep == a.reps);
            let t = Instant::now();
            for (i, chunk) in tokens.chunks(a.ubatch.max(1)).enumerate() {
                let last = (i + 1) * a.ubatch.max(1) >= tokens.len();
                ex.forward(chunk, i * a.ubatch.max(1), usize::from(last))?;
            }
            if rep > 0 {
                pp.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
            }
            if a.profile && rep == a.reps {
                print_profile("prefill", t.elapsed().as_secs_f64(), a.n_prompt, &ex.profile());
                ex.set_profiling(false);
            }
        }
        if a.n_gen > 0 {
            ex.clear_kv();
            ex.set_profiling(a.profile && rep == a.reps);
            let t = Instant::now();
            let mut tok = 1u32;
            for pos in 0..a.n_gen {
                let logits = ex.forward(&[tok], pos, 1)?;
                tok = crate::sampler::argmax(logits) as u32;
            }
            if rep > 0 {
                tg.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
            }
            if a.profile && rep == a.reps {
                print_profile("decode", t.elapsed().as_secs_f64(), a.n_gen, &ex.profile());
                ex.set_profiling(false);
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
    let bw = read_bandwidth_gb_s();
    // Every weight is read once per decoded token (the tied embedding in full, as the LM head).
    // Bytes of weights read per decoded token: every weight in full (the tied embedding as
    // the LM head), except a table read only by the embedding lookup (one row per token).
    let g = &loaded.model.graph;
    let bytes_per_token: u64 = g
        .weights()
        .map(|(id, name)| {
            let len = graph::WeightSource::weight_bytes(&loaded, name).map_or(0, |b| b.len() as u64);
            let only_lookup = g.nodes().iter().filter(|n| n.inputs.contains(&id)).all(|n| matches!(n.op, graph::Op::Embedding));
            let rows = g.node(id).fact.shape.dims().first().and_then(|d| if let graph::Dim::Fixed(r) = d { Some(*r as u64) } else { None });
            if only_lookup { len / rows.unwrap_or(1).max(1) } else { len }
        })
        .sum();
    let roofline = bw * 1e9 / bytes_per_token as f64;
    let r = BenchReport {
        model: a.model.display().to_string(),
        backend,
        lm_head: format!("{:?}", a.lm_head).to_lowercase(),
        threads,
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        reps: a.reps,
        pp_tok_s: pp_m,
        pp_stddev: pp_sd,
        tg_tok_s: tg_m,
        tg_stddev: tg_sd,
        bandwidth_gb_s: bw,
        bytes_per_token,
        roofline_tok_s: roofline,
        roofline_fraction: if roofline > 0.0 { tg_m / roofline } else { 0.0 },
        peak_rss_bytes: peak_rss,
        load_ms: loaded.load_ms,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("model        {}", r.model);
        println!("backend      {} ({} threads)", r.backend, r.threads);
        if a.n_prompt > 0 {
            println!("pp{:<10} {:.2} ± {:.2} tok/s", a.n_prompt, r.pp_tok_s, r.pp_stddev);
        }
        if a.n_gen > 0 {
            println!("tg{:<10} {:.2} ± {:.2} tok/s", a.n_gen, r.tg_tok_s, r.tg_stddev);
        }
        println!("bandwidth    {:.2} GB/s (read, measured now)", r.bandwidth_gb_s);
        println!("per token    {:.3} GB of weights → roofline {:.2} tok/s", r.bytes_per_token as f64 / 1e9, r.roofline_tok_s);
        println!("decode       {:.1}% of the roofline", 100.0 * r.roofline_fraction);
        println!("peak RSS     {:.1} MB", r.peak_rss_bytes as f64 / 1e6);
    }
    Ok(ExitCode::SUCCESS)
}
