//! The hot kernels at 2B-4T shapes, every backend of [`benches::backends`] side by side,
//! measured alternately in one process (a noisy machine slows every variant alike): per
//! call the median of the timed rounds and its spread (min–max), with GB/s of weights or
//! G MAC/s. Quicker than the criterion benches and meant for A/B decisions.
//!
//! Run: `cargo run --release -p benches --example kernels_ab [-- GROUP…] [--threads N]
//! [--rounds R]`; groups: `gemv`, `gemm`, `head`, `attn` (default: all).
use std::time::Instant;

use benches::{attention, backends, f16_matmul, i2s, Call};

/// A bench case: its group name, how to make its call, and whether it counts MACs (else
/// weight bytes).
type Case = (&'static str, Box<dyn Fn() -> Call>, bool);

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<usize> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
        let Some(v) = v else {
            eprintln!("kernels_ab: {flag} needs a positive number");
            std::process::exit(2);
        };
        args.drain(i..i + 2);
        Some(v)
    };
    let threads = take("--threads");
    let rounds = take("--rounds").unwrap_or(7);
    if let Some(n) = threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
            eprintln!("kernels_ab: thread pool: {e}");
            std::process::exit(2);
        }
    }
    let all = ["gemv", "gemm", "head", "attn"];
    if let Some(bad) = args.iter().find(|a| !all.contains(&a.as_str())) {
        eprintln!("kernels_ab: unknown group `{bad}` (groups: {})", all.join(", "));
        std::process::exit(2);
    }
    let want = |g: &str| args.is_empty() || args.iter().any(|a| a == g);
    let mut calls: Vec<Case> = Vec::new();
    if want("gemv") {
        calls.push(("vec_dot_i2s_i8/2560x2560", Box::new(|| i2s(2560, 2560, 1)), false));
        calls.push(("vec_dot_i2s_i8/6912x2560", Box::new(|| i2s(6912, 2560, 1)), false));
        calls.push(("vec_dot_i2s_i8/2560x6912", Box::new(|| i2s(2560, 6912, 1)), false));
    }
    if want("gemm") {
        calls.push(("gemm_i2s_i8/6912x2560x128", Box::new(|| i2s(6912, 2560, 128)), true));
        calls.push(("gemm_i2s_i8/2560x6912x128", Box::new(|| i2s(2560, 6912, 128)), true));
        calls.push(("gemm_i2s_i8/640x2560x128", Box::new(|| i2s(640, 2560, 128)), true));
        calls.push(("gemm_i2s_i8/2560x2560x512", Box::new(|| i2s(2560, 2560, 512)), true));
    }
    if want("head") {
        calls.push(("vec_dot_f16/128256x2560", Box::new(|| f16_matmul(128256, 2560, 1, true)), false));
    }
    if want("attn") {
        calls.push(("attention/ctx1024", Box::new(|| attention(1024, 1)), false));
    }
    let list = backends();
    println!("{} threads, {rounds} rounds (median, min–max)", rayon::current_num_threads());
    for (group, make, by_macs) in &calls {
        let mut call = make();
        let mut out = vec![0f32; call.out_len()];
        let kernels: Vec<_> =
            list.iter().filter(|(l, _)| l != "scalar").filter_map(|(l, b)| call.kernel(b.as_ref()).map(|k| (l, k))).collect();
        let mut times = vec![Vec::new(); kernels.len()];
        for round in 0..=rounds {
            for (i, (_, k)) in kernels.iter().enumerate() {
                let t = Instant::now();
                call.run(k, &mut out);
                if round > 0 {
                    times[i].push(t.elapsed().as_secs_f64());
                }
            }
        }
        println!("{group}");
        for ((label, _), t) in kernels.iter().zip(&mut times) {
            t.sort_by(f64::total_cmp);
            let med = t[t.len() / 2];
            let rate = if *by_macs {
                format!("{:7.1} G MAC/s", call.macs as f64 / med / 1e9)
            } else {
                format!("{:7.1} GB/s", call.weight_bytes as f64 / med / 1e9)
            };
            println!("  {label:<14} {:9.3} ms ({:.3}–{:.3})  {rate}", med * 1e3, t[0] * 1e3, t[t.len() - 1] * 1e3);
        }
    }
}
