//! Kernel-level bit-exactness suites shared by the SIMD backends' own tests
//! (`tests/avx512_kernels.rs`, `tests/neon_kernels.rs`): each runs a family of awkward cases
//! on a candidate backend and on scalar and compares the outputs bit for bit inside guard
//! sentinels ([`OpCase::run`]). They go where kernels differ from one another: I2_S rows
//! with an odd number of groups, K with one and two lane-wrap chunks, activations that wrap
//! i16 lanes, that cannot, and steps that mix both; F16 tails; Q8_0 extreme values;
//! attention steps across the 32-position boundary.

use backend_scalar::ScalarBackend;
use graph::backend::q8tok_row_bytes;
use graph::{Backend, DType, Op};

use crate::cases::{CaseResult, OpCase, Tensor};
use crate::Rng;

/// Runs `case` on `b`, which must plan it.
pub fn run(case: &OpCase, b: &dyn Backend) -> CaseResult {
    case.run(b).unwrap_or_else(|| panic!("{}: {} does not plan it", case.id, b.name())).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `case` on `b` and on scalar and compares the outputs bit for bit.
pub fn check(case: &OpCase, b: &dyn Backend, label: &str) {
    let want = run(case, &ScalarBackend::new());
    let got = run(case, b);
    for (i, (w, g)) in want.out.f.iter().zip(&got.out.f).enumerate() {
        assert!(
            w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()),
            "{} on {}: element {i}: scalar {w:e} ({:#010x}), {} {g:e} ({:#010x})",
            case.id,
            label,
            w.to_bits(),
            label,
            g.to_bits()
        );
    }
    assert_eq!((want.out.f.len(), &want.out.b), (got.out.f.len(), &got.out.b), "{} on {}", case.id, label);
}

/// [`check`] where `b` plans the case; `false` (nothing compared) where it leaves the op
/// to the next backend.
pub fn check_if_planned(case: &OpCase, b: &dyn Backend, label: &str) -> bool {
    match case.run(b) {
        None => false,
        Some(_) => {
            check(case, b, label);
            true
        }
    }
}

/// Activations of an I2_S case.
#[derive(Clone, Copy, Debug)]
pub enum Acts {
    /// Random i8 over the whole range (i16 lanes may wrap: the exact kernel).
    Random,
    /// All 127 against codes 2: every i16 lane of every chunk wraps.
    Max,
    /// All −128 against codes 2.
    Min,
    /// All 127 against codes 1: each chunk fits i16, two chunks together would not.
    Chunked,
    /// All zero.
    Zero,
    /// Random in −40..=40: no lane can wrap, whatever the codes (VNNI and AMX).
    Small,
    /// Odd tokens all 127, even ones small: steps and tiles that mix both kinds.
    Mixed,
}

/// `t` q8_tok rows of `k` activations of the kind `acts`, with random scales.
pub fn q8tok_rows(rng: &mut Rng, t: usize, k: usize, acts: Acts) -> Vec<u8> {
    let mut out = Vec::with_capacity(t * q8tok_row_bytes(k));
    for tok in 0..t {
        let q: Vec<i8> = (0..k)
            .map(|_| match acts {
                Acts::Random => rng.next_u64() as u8 as i8,
                Acts::Max | Acts::Chunked => 127,
                Acts::Mixed if tok % 2 == 1 => 127,
                Acts::Min => -128,
                Acts::Zero => 0,
                Acts::Small | Acts::Mixed => (rng.below(81) as i32 - 40) as i8,
            })
            .collect();
        let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
        out.extend(q.iter().map(|&v| v as u8));
        out.extend_from_slice(&rng.f32(0.5, 400.0).to_le_bytes());
        out.extend_from_slice(&sum.to_le_bytes());
    }
    out
}

/// An I2_S product `[m, k]` × `t` tokens with codes and activations of the kind `acts`.
pub fn i2s_case(rng: &mut Rng, m: usize, k: usize, t: usize, acts: Acts) -> OpCase {
    let codes: Vec<u8> = (0..m * k)
        .map(|_| match acts {
            Acts::Max | Acts::Min => 2,
            Acts::Chunked => 1,
            // Mostly ternary codes; code 3 (never written by a quantizer) now and then.
            _ if rng.below(97) == 0 => 3,
            _ => rng.below(3) as u8,
        })
        .collect();
    let mut trailer = [0u8; 28];
    trailer.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    let w = gguf::quantize::pack_i2s(&codes, rng.f32(0.1, 3.0), &trailer);
    OpCase {
        id: format!("MatMulI2S(w=[{m},{k}],t={t},acts={acts:?})"),
        op: Op::MatMulI2S,
        inputs: vec![Tensor::bytes(DType::I2S, &[m, k], w), Tensor::bytes(DType::Q8Tok, &[t, k], q8tok_rows(rng, t, k, acts))],
        out: (DType::F32, vec![t, m]),
        kv: None,
    }
}

/// I2_S products: group counts around the chunk, tile edges, every activation kind.
pub fn matmul_i2s_bit_exact(b: &dyn Backend, label: &str) {
    {
        let mut rng = Rng::new(20);
        let mut n = 0;
        // Groups: one, a half pair after whole ones, one chunk + a bit, the 2B widths
        // (20 and 54 groups: two chunks at 6912).
        for groups in [1usize, 3, 33, 20, 54] {
            let k = 128 * groups;
            for (m, t) in [(1usize, 1usize), (7, 1), (33, 1), (12, 2), (7, 5), (33, 16), (70, 17), (33, 33), (40, 48), (64, 70)] {
                if groups > 3 && m * t > 33 * 33 && groups != 54 {
                    continue; // keep the largest shapes to one width
                }
                for acts in [Acts::Random, Acts::Max, Acts::Min, Acts::Chunked, Acts::Zero, Acts::Small, Acts::Mixed] {
                    if m * t * k > 40 * 48 * 2560 && !matches!(acts, Acts::Small | Acts::Mixed) {
                        continue;
                    }
                    check(&i2s_case(&mut rng, m, k, t, acts), b, label);
                    n += 1;
                }
            }
        }
        println!("MatMulI2S on {}: {n} cases bit-exact", label);
    }
}

/// The i16 lane wrap of I2_S products: the scalar kernel's documented values.
pub fn matmul_i2s_lane_wrap_matters(b: &dyn Backend, label: &str) {
    // The scalar kernel's documented values (its unit tests), with s = 1, Σq = 0 and scale 1
    // so that the output is the integer dot product, for one token and for a prompt-sized
    // step (every token fails the no-wrap gate: the AMX path must hand them all to the exact
    // kernel):
    // - codes 2 × q 127, K = 33 groups: the first chunk's lanes wrap → 24320 (exact 1072896);
    // - codes 1 × q 127, K = 54 groups: no chunk wraps, one chunk of 54 would → 877824.
    {
        for (code, groups, want) in [(2u8, 33usize, 24320.0f32), (1, 54, 877824.0)] {
            let k = groups * 128;
            for t in [1usize, 20] {
                let w = gguf::quantize::pack_i2s(&vec![code; 35 * k], 1.0, &[0; 28]);
                let mut x = Vec::new();
                for _ in 0..t {
                    x.extend(std::iter::repeat_n(127u8, k));
                    x.extend_from_slice(&1.0f32.to_le_bytes());
                    x.extend_from_slice(&0i32.to_le_bytes());
                }
                let case = OpCase {
                    id: format!("wrap(code={code},groups={groups},t={t})"),
                    op: Op::MatMulI2S,
                    inputs: vec![Tensor::bytes(DType::I2S, &[35, k], w), Tensor::bytes(DType::Q8Tok, &[t, k], x)],
                    out: (DType::F32, vec![t, 35]),
                    kv: None,
                };
                assert_eq!(run(&case, b).out.f, vec![want; 35 * t], "{} on {}", case.id, label);
            }
        }
    }
}

/// f32 values of a kind: uniform, wide exponents, or special values (±0, subnormals, ±huge,
/// ±inf, .5 ties) with NaN now and then when `nan`.
pub fn values(rng: &mut Rng, n: usize, kind: u8, nan: bool) -> Vec<f32> {
    const SPECIAL: [f32; 12] = [0.0, -0.0, 1e-38, -1e-38, 1e-45, 3e38, -3e38, 0.5, -2.5, 126.5, 1.0, f32::INFINITY];
    (0..n)
        .map(|_| match kind {
            0 => rng.f32(-2.0, 2.0),
            1 => rng.f32(1.0, 2.0) * rng.f32(-40.0, 40.0).exp2() * if rng.below(2) == 0 { 1.0 } else { -1.0 },
            _ => match rng.below(24) {
                0..=11 => rng.pick(&SPECIAL) * if rng.below(2) == 0 { 1.0 } else { -1.0 },
                23 if nan => f32::NAN,
                _ => rng.f32(-4.0, 4.0),
            },
        })
        .collect()
}

/// f16 little-endian bytes of `v`.
pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect()
}

/// F16 products in both forms.
pub fn matmul_f16_bit_exact(b: &dyn Backend, label: &str) {
    // Both forms (a sequence's only row: dot16 with its f64 tail; rows sharing a sequence:
    // dotblas with its masked tail), K with and without tails of 8 and 32, odd row counts
    // (a lone row in the last register pair), the long-row tiles (K ≥ 1024).
    let mut rng = Rng::new(21);
    let mut n = 0;
    for k in [1usize, 7, 8, 9, 31, 32, 33, 64, 255, 257, 1024, 2560] {
        for m in [1usize, 3, 4, 5, 37] {
            for t in [1usize, 2, 3, 5, 9] {
                let kind = (n % 3) as u8;
                let w = values(&mut rng, m * k, if kind == 1 { 0 } else { kind }, false);
                let x = values(&mut rng, t * k, kind, false);
                for seqs in [vec![0i32; t], (0..t as i32).collect(), (0..t as i32).map(|i| i / 2).collect::<Vec<_>>()] {
                    let case = OpCase {
                        id: format!("MatMulF16(w=[{m},{k}],t={t},seqs={seqs:?},kind={kind})"),
                        op: Op::MatMulF16,
                        inputs: vec![
                            Tensor::bytes(DType::F16, &[m, k], f16_bytes(&w)),
                            Tensor::f32(&[t, k], x.clone()),
                            Tensor::i32(&[t], seqs),
                        ],
                        out: (DType::F32, vec![t, m]),
                        kv: None,
                    };
                    check(&case, b, label);
                    n += 1;
                }
            }
        }
    }
    println!("MatMulF16 on {}: {n} cases bit-exact", label);
}

/// Q8_0 heads: the activation quantizer on extreme values and the dot products.
pub fn matmul_q8_0_bit_exact(b: &dyn Backend, label: &str) {
    // The activation quantizer on extreme values (NaN blocks, ±inf, all-zero blocks, .5
    // ties), weights with −128 quants (the sign-transfer quirk), the 8-block scale groups
    // and the blocks after them, odd row counts.
    let mut rng = Rng::new(22);
    let mut n = 0;
    for k in [32usize, 64, 96, 256, 288, 2560] {
        for m in [1usize, 2, 3, 4, 5, 13] {
            for t in [1usize, 2, 3, 5] {
                for kind in 0..3u8 {
                    let mut w = Vec::with_capacity(m * DType::Q8_0.row_bytes(k).unwrap());
                    for _ in 0..m * k / 32 {
                        w.extend_from_slice(&half::f16::from_f32(rng.f32(-0.05, 0.05)).to_le_bytes());
                        let extreme = rng.below(4) == 0;
                        w.extend(
                            (0..32).map(|_| if extreme { rng.pick(&[0x80u8, 0x7F, 0x81, 0]) } else { rng.next_u64() as u8 }),
                        );
                    }
                    let mut x = values(&mut rng, t * k, kind, kind == 2);
                    if kind == 0 {
                        x[..32].fill(0.0);
                    }
                    let case = OpCase {
                        id: format!("MatMulQ8_0(w=[{m},{k}],t={t},kind={kind})"),
                        op: Op::MatMulQ8_0,
                        inputs: vec![Tensor::bytes(DType::Q8_0, &[m, k], w), Tensor::f32(&[t, k], x)],
                        out: (DType::F32, vec![t, m]),
                        kv: None,
                    };
                    check(&case, b, label);
                    n += 1;
                }
            }
        }
    }
    println!("MatMulQ8_0 on {}: {n} cases bit-exact", label);
}

/// RMSNorm and the per-token int8 quantizer.
pub fn rms_norm_and_quantize_bit_exact(b: &dyn Backend, label: &str) {
    // Row counts around the eight rows whose sums run side by side (1, 7, 8, 9, 17), widths
    // with and without tails of 8 and 16, special values (inf and NaN rows, subnormals,
    // huge squares that overflow f32, .5 ties for the quantizer), all-zero rows.
    let mut rng = Rng::new(23);
    let (mut n, mut norm_planned) = (0, false);
    for d in [1usize, 7, 8, 15, 16, 17, 33, 256, 2560, 6912] {
        for rows in [1usize, 2, 7, 8, 9, 17] {
            for kind in 0..4u8 {
                let x = if kind == 3 { vec![0.0; rows * d] } else { values(&mut rng, rows * d, kind, kind == 2) };
                let w = values(&mut rng, d, 0, false);
                for eps in [1e-5f32, 1e-6] {
                    let case = OpCase {
                        id: format!("RmsNorm(rows={rows},d={d},kind={kind},eps={eps:e})"),
                        op: Op::RmsNorm { eps },
                        inputs: vec![Tensor::f32(&[rows, d], x.clone()), Tensor::f32(&[d], w.clone())],
                        out: (DType::F32, vec![rows, d]),
                        kv: None,
                    };
                    norm_planned = check_if_planned(&case, b, label);
                }
                let mut xq = x.clone();
                if kind == 0 && d > 4 {
                    // Row maximum 127 gives s = 1 exactly: every .5 is a tie.
                    for row in xq.chunks_mut(d) {
                        row[0] = 127.0;
                        for (i, v) in row.iter_mut().enumerate().skip(1) {
                            *v = (i as f32 % 200.0) - 99.5;
                        }
                    }
                }
                let case = OpCase {
                    id: format!("QuantizeI8(rows={rows},d={d},kind={kind})"),
                    op: Op::QuantizeI8,
                    inputs: vec![Tensor::f32(&[rows, d], xq)],
                    out: (DType::Q8Tok, vec![rows, d]),
                    kv: None,
                };
                check(&case, b, label);
                n += 1;
            }
        }
    }
    let norm = if norm_planned { "RmsNorm and QuantizeI8" } else { "QuantizeI8 (RmsNorm not planned: runs on the next backend)" };
    println!("{norm} on {}: {n} cases each bit-exact", label);
}

/// Attention over the f16 KV cache: outputs and caches.
pub fn attention_bit_exact(b: &dyn Backend, label: &str) {
    // GQA groups of 1, 2, 3 and 4 query heads, head dims with and without tails of 16 and
    // 32, contexts not a multiple of 32; a prompt, single steps across the 32-position
    // boundary, then batches, for one sequence and for two sequences sharing a step (both
    // value forms); special values in the queries and keys. Output and KV cache bit for bit.
    let scalar = ScalarBackend::new();
    let mut rng = Rng::new(24);
    let mut n = 0;
    for (h, hkv, hd, n_ctx) in
        [(4usize, 2usize, 32usize, 64usize), (2, 1, 64, 100), (4, 4, 128, 96), (3, 1, 40, 70), (8, 2, 16, 64), (20, 5, 128, 80)]
    {
        for slots in [1usize, 2] {
            let stride = graph::exec::kv_stride(n_ctx);
            let mut kv = (vec![half::f16::ZERO; slots * hkv * hd * stride], vec![half::f16::ZERO; slots * hkv * hd * stride]);
            let op = Op::Attention { layer: 0, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
            let mut next = vec![0usize; slots];
            for (step, t) in [5usize, 1, 1, 17, 1, 8, 2, 3, 1].into_iter().enumerate() {
                // Tokens of the step: slot 0 only, or both slots in turn.
                let seqs: Vec<i32> = (0..t).map(|i| if slots == 2 { (i % 2) as i32 } else { 0 }).collect();
                let mut pos = Vec::with_capacity(t);
                for &s in &seqs {
                    pos.push(next[s as usize] as i32);
                    next[s as usize] += 1;
                }
                if next.iter().any(|&p| p > n_ctx) {
                    break;
                }
                let kind = if step % 3 == 2 { 1 } else { 0 };
                let case = OpCase {
                    id: format!("Attention(H={h},Hkv={hkv},hd={hd},n_ctx={n_ctx},slots={slots},step={step},t={t})"),
                    op: op.clone(),
                    inputs: vec![
                        Tensor::f32(&[t, h, hd], values(&mut rng, t * h * hd, kind, false)),
                        Tensor::f32(&[t, hkv, hd], values(&mut rng, t * hkv * hd, kind, false)),
                        Tensor::f32(&[t, hkv, hd], values(&mut rng, t * hkv * hd, 0, false)),
                        Tensor::i32(&[t], pos),
                        Tensor::i32(&[t], seqs),
                    ],
                    out: (DType::F32, vec![t, h * hd]),
                    kv: Some((kv.0.clone(), kv.1.clone(), stride, slots)),
                };
                let want = run(&case, &scalar);
                check(&case, b, label);
                let got = run(&case, b);
                assert!(got.kv == want.kv, "{}: KV caches differ", case.id);
                kv = want.kv.expect("attention has a cache");
                n += 1;
            }
        }
    }
    println!("Attention on {}: {n} steps bit-exact (outputs and caches)", label);
}
