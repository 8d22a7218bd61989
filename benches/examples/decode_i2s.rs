//! The I2_S matmuls of one 2B-4T decode step, alone: 30 layers × 7 matrices (0.52 GB of
//! random codes) in one huge-page-advised arena, as the executor holds them, each run
//! through its planned kernel with one token on the global thread pool, workers kept awake as
//! the executor keeps them. Variants, measured alternately in one process (the machine is
//! noisy, so compare within a run):
//!
//! - `avx2`: the AVX2 backend without its AVX-VNNI kernels;
//! - `vnni`: the AVX2 backend as detected (AVX-VNNI where the CPU has it);
//! - `avx512`: the AVX-512 backend (512-bit VNNI), where the CPU has it;
//! - `read`: no arithmetic, the same bytes summed as u64 in the same number of tasks: what
//!   reading 210 separate matrices costs on this machine.
//!
//! Run: `cargo run --release -p benches --example decode_i2s [-- VARIANT…] [--threads N]`
//! (default: all four, the machine's thread count). Prints the median time per step and
//! the weight bytes per second.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use backend_avx2::Avx2Backend;
use graph::backend::{q8tok_row_bytes, Data, DataMut, TensorMut, TensorRef};
use graph::rng::Rng;
use graph::{Backend, DType, Dim, Op, Shape, TensorFact};

/// The 2B-4T layer: (rows, columns) of attn_q, attn_k, attn_v, attn_output, ffn_gate,
/// ffn_up, ffn_down.
const LAYER: [(usize, usize); 7] =
    [(2560, 2560), (640, 2560), (640, 2560), (2560, 2560), (6912, 2560), (6912, 2560), (2560, 6912)];
const LAYERS: usize = 30;
const REPS: usize = 12;

/// A q8_tok row as QuantizeI8 writes it, from bell-shaped values (see `benches::i2s`).
fn q8_row(k: usize, rng: &mut Rng) -> Vec<u8> {
    let h: Vec<f32> = (0..k).map(|_| (0..4).map(|_| rng.f32(0.0, 1.0)).sum::<f32>() - 2.0).collect();
    let amax = h.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let q: Vec<i8> = h.iter().map(|&v| (v * 127.0 / amax).round() as i8).collect();
    let mut x: Vec<u8> = q.iter().map(|&v| v as u8).collect();
    x.extend((amax / 127.0).recip().to_le_bytes());
    x.extend(q.iter().map(|&v| i32::from(v)).sum::<i32>().to_le_bytes());
    assert_eq!(x.len(), q8tok_row_bytes(k));
    x
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        let Some(n) = args.get(i + 1).and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0) else {
            eprintln!("decode_i2s: --threads needs a positive number");
            std::process::exit(2);
        };
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
            eprintln!("decode_i2s: thread pool: {e}");
            std::process::exit(2);
        }
        args.drain(i..i + 2);
    }
    if args.is_empty() {
        args = vec!["avx2".into(), "vnni".into(), "avx512".into(), "read".into()];
    }
    if let Some(bad) = args.iter().find(|a| !["avx2", "vnni", "avx512", "read"].contains(&a.as_str())) {
        eprintln!("decode_i2s: unknown variant `{bad}` (variants: avx2, vnni, avx512, read; option: --threads N)");
        std::process::exit(2);
    }
    let Some(vnni) = Avx2Backend::new() else {
        eprintln!("no AVX2 + FMA + F16C on this CPU");
        return;
    };
    if !vnni.uses_vnni() {
        eprintln!("note: no AVX-VNNI here (or BITNET_DISABLE_VNNI is set): `vnni` runs the AVX2 kernels");
    }
    let avx2 = vnni.without_vnni();

    // Weights: one anonymous arena, each matrix (codes, then its f32 scale) 4 KiB-aligned.
    let mut offs = vec![];
    let mut total = 0usize;
    for _ in 0..LAYERS {
        for &(m, k) in &LAYER {
            offs.push((total, m, k));
            total += (m * k / 4 + 32).div_ceil(4096) * 4096;
        }
    }
    let mut arena = memmap2::MmapMut::map_anon(total).expect("anonymous mapping");
    let _ = arena.advise(memmap2::Advice::HugePage);
    let mut rng = Rng::new(1);
    for &(o, m, k) in &offs {
        let n = m * k / 4;
        for b in &mut arena[o..o + n] {
            let r = rng.below(81) as u32;
            *b = ((r % 3) | ((r / 3 % 3) << 2) | ((r / 9 % 3) << 4) | ((r / 27 % 3) << 6)) as u8;
        }
        arena[o + n..o + n + 4].copy_from_slice(&0.02f32.to_le_bytes());
    }
    let x2560 = q8_row(2560, &mut rng);
    let x6912 = q8_row(6912, &mut rng);
    // The kernel each backend plans for the two activation widths.
    let fact = |d: DType, dims: [usize; 2]| TensorFact::new(d, Shape::new(dims.map(Dim::Fixed)));
    let plan = |b: &dyn Backend, k: usize| {
        b.plan(&Op::MatMulI2S, &[&fact(DType::I2S, [8, k]), &fact(DType::Q8Tok, [1, k])]).expect("I2_S kernel")
    };
    let kernels = |b: &dyn Backend| (plan(b, 2560), plan(b, 6912));
    let (avx2_k, vnni_k) = (kernels(&avx2), kernels(&vnni));
    let avx512_k = backend_avx512::Avx512Backend::new().map(|b| kernels(&b));
    if avx512_k.is_none() && args.iter().any(|a| a == "avx512") {
        eprintln!("note: no AVX-512 F/BW/VL/VNNI here (or BITNET_DISABLE_AVX512 is set): `avx512` is left out");
        args.retain(|a| a != "avx512");
    }
    // The avx512 kernels read their own weight layout: a second arena holds every matrix
    // prepared (once, as the executor binds weights), same alignment.
    let prep = avx512_k.as_ref().and_then(|k| k.0.weight_prep().cloned());
    let mut offs512 = vec![];
    let mut arena512 = None;
    if let Some(prep) = &prep {
        let mut total = 0usize;
        for &(_, m, k) in &offs {
            let len = (prep.len)(&[m, k]).expect("preparable I2_S shape");
            offs512.push((total, len));
            total += len.div_ceil(4096) * 4096;
        }
        let mut a = memmap2::MmapMut::map_anon(total).expect("anonymous mapping");
        let _ = a.advise(memmap2::Advice::HugePage);
        for (&(o, m, k), &(o2, len)) in offs.iter().zip(&offs512) {
            (prep.prepare)(&arena[o..o + m * k / 4 + 32], &[m, k], &mut a[o2..o2 + len]).expect("prepare");
        }
        arena512 = Some(a);
    }
    let bytes: usize = offs.iter().map(|&(_, m, k)| m * k / 4).sum();
    println!(
        "{} I2_S matrices, {:.3} GB, {} threads, {REPS} reps (median of the last {})",
        offs.len(),
        bytes as f64 / 1e9,
        rayon::current_num_threads(),
        REPS - 2
    );

    let mut out = vec![0f32; 6912];
    let mut times = vec![vec![]; args.len()];
    let mut sums = vec![0f64; args.len()];
    for rep in 0..REPS {
        for (vi, variant) in args.iter().enumerate() {
            let kernels = match variant.as_str() {
                "vnni" => &vnni_k,
                "avx512" => avx512_k.as_ref().expect("checked above"),
                _ => &avx2_k, // "avx2", "read" (checked above)
            };
            let read_only = variant == "read";
            let t0 = Instant::now();
            let done = AtomicBool::new(false);
            let done = &done;
            rayon::scope(|s| {
                let main = rayon::current_thread_index();
                for _ in 1..rayon::current_num_threads() {
                    s.spawn(move |_| {
                        if rayon::current_thread_index() == main {
                            return;
                        }
                        while !done.load(Ordering::Acquire) {
                            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                for (mi, &(o, m, k)) in offs.iter().enumerate() {
                    if read_only {
                        let words: &[u64] = bytemuck::cast_slice(&arena[o..o + m * k / 4]);
                        // The bandwidth probe's read, in as many tasks as the I2_S kernels use.
                        let s = runtime::probe::par_sum(words, 2 * rayon::current_num_threads());
                        std::hint::black_box(s);
                        continue;
                    }
                    let x = if k == 2560 { &x2560 } else { &x6912 };
                    let (wd, xd, od) = ([m, k], [1, k], [1, m]);
                    // The weight as this variant's kernel reads it.
                    let w: &[u8] = match (variant.as_str(), &arena512) {
                        ("avx512", Some(a)) => &a[offs512[mi].0..offs512[mi].0 + offs512[mi].1],
                        _ => &arena[o..o + m * k / 4 + 32],
                    };
                    let inputs = [
                        TensorRef { dtype: DType::I2S, dims: &wd, data: Data::Bytes(w) },
                        TensorRef { dtype: DType::Q8Tok, dims: &xd, data: Data::Bytes(x) },
                    ];
                    let mut o = TensorMut { dtype: DType::F32, dims: &od, data: DataMut::F32(&mut out[..m]) };
                    let kernel = if k == 2560 { &kernels.0 } else { &kernels.1 };
                    kernel.run_prepared(&inputs, &mut o, None).expect("I2_S matmul");
                    if rep == 0 {
                        sums[vi] += out[..m].iter().map(|&f| f64::from(f)).sum::<f64>();
                    }
                }
                done.store(true, Ordering::Release);
            });
            times[vi].push(t0.elapsed().as_secs_f64());
        }
    }
    for (vi, variant) in args.iter().enumerate() {
        let mut t = times[vi][2..].to_vec();
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        let check = if variant == "read" { String::new() } else { format!(" (checksum {:.4})", sums[vi]) };
        println!("{variant:5} {:7.2} ms per step, {:5.1} GB/s{check}", med * 1e3, bytes as f64 / med / 1e9);
    }
}
