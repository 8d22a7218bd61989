//! bitnet-graph's scalar reference backend. Its kernels ([`kernels`]) *define* the
//! numerics every other backend is checked against: plain loops, one documented summation
//! order and rounding rule per kernel, bitnet.cpp's arithmetic (../shared/docs/format.md §4).
//! Parallelism (rayon) only splits output rows, so results never depend on the thread count.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod kernels;

use graph::backend::{q8tok_row_bytes, Backend, Kernel, KvLayer, TensorMut, TensorRef};
use graph::{DType, Error, Op, Result, RopeStyle, TensorFact};
use half::f16;
use rayon::prelude::*;

use kernels as k;

/// Output rows per rayon task in the matmuls (keeps task overhead small on decode).
const ROWS_PER_TASK: usize = 32;

/// The scalar reference backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScalarBackend;

impl ScalarBackend {
    /// The backend (always available).
    pub fn new() -> ScalarBackend {
        ScalarBackend
    }
}

fn fail(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{op}: {msg}"))
}

/// Views little-endian f16 bytes as `&[f16]`, copying only if the bytes are unaligned.
fn f16_slice(bytes: &[u8]) -> std::borrow::Cow<'_, [f16]> {
    match bytemuck::try_cast_slice::<u8, f16>(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
    }
}

/// Splits one q8_tok row into its int8 values, scale and sum.
pub fn q8tok_row(row: &[u8], k: usize) -> (&[i8], f32, i32) {
    let q: &[i8] = bytemuck::cast_slice(&row[..k]);
    let s = f32::from_le_bytes([row[k], row[k + 1], row[k + 2], row[k + 3]]);
    let sum = i32::from_le_bytes([row[k + 4], row[k + 5], row[k + 6], row[k + 7]]);
    (q, s, sum)
}

/// A kernel from a plain function.
fn kernel(
    name: impl Into<String>,
    f: impl Fn(&[TensorRef<'_>], &mut TensorMut<'_>, Option<&mut KvLayer<'_>>) -> Result<()> + Send + Sync + 'static,
) -> Option<Kernel> {
    Some(Kernel::new(name, f))
}

impl Backend for ScalarBackend {
    fn name(&self) -> &'static str {
        "scalar"
    }

    /// Every op, on every input type the op admits (the embedding table: F32, F16, BF16,
    /// Q8_0, Q4_0, Q6_K). One arm per kernel: its name and the function that runs.
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel> {
        if inputs.len() != op.arity() {
            return None;
        }
        let wty = inputs.first().map(|f| f.dtype)?;
        match op {
            Op::InputTokens
            | Op::InputPositions
            | Op::InputSeqs
            | Op::InputOutputRows
            | Op::Weight { .. }
            | Op::Reshape { .. } => None,
            Op::Embedding if matches!(wty, DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0 | DType::Q4_0 | DType::Q6K) => {
                kernel(format!("get_rows_{wty}_ref"), |i, o, _| embedding(i, o))
            }
            Op::Embedding => None,
            &Op::RmsNorm { eps } => kernel("rms_norm_f32_ref", move |i, o, _| {
                let (x, w) = (i[0].f32()?, i[1].f32()?);
                let d = w.len();
                // x, o: [rows, d]
                if d > 0 {
                    o.f32()?.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, x)| k::rms_norm_f32(x, w, eps, o));
                }
                Ok(())
            }),
            Op::QuantizeI8 => kernel("quantize_row_i8_ref", |i, o, _| {
                let x = i[0].f32()?;
                let kk = *i[0].dims.last().unwrap_or(&1);
                // x: [T, K] f32 → o: [T] rows of (K i8, f32 s, i32 sum)
                for (row, x) in o.bytes()?.chunks_mut(q8tok_row_bytes(kk)).zip(x.chunks(kk)) {
                    let mut q = vec![0i8; kk];
                    let (s, sum) = k::quantize_row_i8(x, &mut q);
                    row[..kk].copy_from_slice(bytemuck::cast_slice(&q));
                    row[kk..kk + 4].copy_from_slice(&s.to_le_bytes());
                    row[kk + 4..kk + 8].copy_from_slice(&sum.to_le_bytes());
                }
                Ok(())
            }),
            Op::MatMulI2S => kernel("vec_dot_i2s_i8_ref", |i, o, _| {
                let w = i[0].bytes()?;
                let (m, kk) = (i[0].dims[0], i[0].dims[1]);
                let xq = i[1].bytes()?;
                let scale = graph::quant::i2s_scale(w, m * kk).ok_or_else(|| fail("MatMulI2S", "I2_S tensor too short"))?;
                // w: [M, K/4] codes; xq: [T] q8 rows; o: [T, M]
                for (orow, xrow) in o.f32()?.chunks_mut(m.max(1)).zip(xq.chunks(q8tok_row_bytes(kk))) {
                    let (q, s, sum) = q8tok_row(xrow, kk);
                    orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                        let codes = &w[r * kk / 4..(r + 1) * kk / 4];
                        *y = k::i2s_output(k::vec_dot_i2s_i8(codes, q), sum, s, scale);
                    });
                }
                Ok(())
            }),
            Op::MatMulF16 => kernel("vec_dot_f16_ref (1 row per sequence) | vec_dot_f16_f32_ref", |i, o, _| {
                let w = f16_slice(i[0].bytes()?);
                let (m, kk) = (i[0].dims[0], i[0].dims[1]);
                let (x, seqs) = (i[1].f32()?, i[2].i32()?);
                let rows = graph::rows_per_seq(seqs);
                // w: [M, K] f16; x: [R, K]; o: [R, M]. The only row of its sequence: x → f16,
                // dot16; else dotblas.
                for ((orow, xrow), &n) in o.f32()?.chunks_mut(m.max(1)).zip(x.chunks(kk.max(1))).zip(&rows) {
                    if n == 1 {
                        let x16: Vec<f16> = xrow.iter().map(|&v| f16::from_f32(v)).collect();
                        orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                            *y = k::vec_dot_f16(&w[r * kk..(r + 1) * kk], &x16);
                        });
                    } else {
                        orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                            *y = k::vec_dot_f16_f32(&w[r * kk..(r + 1) * kk], xrow);
                        });
                    }
                }
                Ok(())
            }),
            Op::MatMulQ8_0 => {
                let dot = match wty {
                    DType::Q4_0 => k::vec_dot_q4_0_q8_0,
                    DType::Q8_0 => k::vec_dot_q8_0_q8_0,
                    _ => return None,
                };
                kernel(format!("vec_dot_{wty}_q8_0_ref"), move |i, o, _| {
                    let w = i[0].bytes()?;
                    let (m, kk) = (i[0].dims[0], i[0].dims[1]);
                    let x = i[1].f32()?;
                    let w_row = wty.row_bytes(kk).ok_or_else(|| fail("MatMulQ8_0", "bad row size"))?;
                    let a_row = DType::Q8_0.row_bytes(kk).ok_or_else(|| fail("MatMulQ8_0", "bad row size"))?;
                    // w: [M] rows of K/32 blocks; x: [T, K] → Q8_0 activation blocks; o: [T, M]
                    for (orow, xrow) in o.f32()?.chunks_mut(m.max(1)).zip(x.chunks(kk.max(1))) {
                        let mut a = vec![0u8; a_row];
                        k::quantize_row_q8_0_act(xrow, &mut a);
                        orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                            *y = dot(&w[r * w_row..(r + 1) * w_row], &a);
                        });
                    }
                    Ok(())
                })
            }
            Op::QuantizeQ8K => kernel("quantize_row_q8_k_ref", |i, o, _| {
                let x = i[0].f32()?;
                let kk = i[0].dims[1];
                let row = DType::Q8K.row_bytes(kk).ok_or_else(|| fail("QuantizeQ8K", "bad row size"))?;
                // x: [T, K] → o: [T] rows of K/256 blocks (f32 d, 256 i8)
                for (orow, xrow) in o.bytes()?.chunks_mut(row.max(1)).zip(x.chunks(kk.max(1))) {
                    k::quantize_row_q8_k(xrow, orow);
                }
                Ok(())
            }),
            Op::MatMulTQ => {
                let dot = match wty {
                    DType::TQ1_0 => k::vec_dot_tq1_0_q8_k,
                    DType::TQ2_0 => k::vec_dot_tq2_0_q8_k,
                    DType::Q6K => k::vec_dot_q6_k_q8_k,
                    _ => return None,
                };
                kernel(format!("vec_dot_{wty}_q8_k_ref"), move |i, o, _| {
                    let w = i[0].bytes()?;
                    let (m, kk) = (i[0].dims[0], i[0].dims[1]);
                    let xq = i[1].bytes()?;
                    let w_row = wty.row_bytes(kk).ok_or_else(|| fail("MatMulTQ", "bad row size"))?;
                    let a_row = DType::Q8K.row_bytes(kk).ok_or_else(|| fail("MatMulTQ", "bad row size"))?;
                    // w: [M] rows of K/256 blocks; xq: [T] q8_k rows; o: [T, M]
                    for (orow, a) in o.f32()?.chunks_mut(m.max(1)).zip(xq.chunks(a_row.max(1))) {
                        orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                            *y = dot(&w[r * w_row..(r + 1) * w_row], a);
                        });
                    }
                    Ok(())
                })
            }
            &Op::Rope { n_rot, freq_base, style } => {
                let name = match style {
                    RopeStyle::Neox => "rope_neox_f32_ref",
                    RopeStyle::Norm => "rope_norm_f32_ref",
                };
                kernel(name, move |i, o, _| {
                    let (x, pos) = (i[0].f32()?, i[1].i32()?);
                    let (h, hd) = (i[0].dims[1], i[0].dims[2]);
                    let o = o.f32()?;
                    o.copy_from_slice(x);
                    if h * hd == 0 {
                        return Ok(()); // nothing to rotate (and no zero-sized chunks)
                    }
                    // o: [T, H, hd]; tokens are independent (parallel over tokens, same bits).
                    o.par_chunks_mut(h * hd).zip(pos.par_iter()).for_each(|(row, &p)| {
                        k::rope_f32(row, h, hd, n_rot, p, freq_base, style);
                    });
                    Ok(())
                })
            }
            &Op::Attention { n_head, n_head_kv, head_dim, scale, .. } => kernel("attn_f16kv_ref", move |i, o, kv| {
                let kv = kv.ok_or_else(|| fail("Attention", "no KV cache"))?;
                attention(i, o, kv, n_head, n_head_kv, head_dim, scale)
            }),
            Op::Scale => kernel("scale_f32_ref", |i, o, _| {
                let (x, sc) = (i[0].f32()?, i[1].f32()?[0]);
                for (o, &x) in o.f32()?.iter_mut().zip(x) {
                    *o = x * sc;
                }
                Ok(())
            }),
            Op::Add => kernel("add_f32_ref", |i, o, _| binary(i, o, |a, b| a + b)),
            Op::Mul => kernel("mul_f32_ref", |i, o, _| binary(i, o, |a, b| a * b)),
            Op::Relu => kernel("relu_f32_ref", |i, o, _| unary(i, o, |x| if x > 0.0 { x } else { 0.0 })),
            Op::Sqr => kernel("sqr_f32_ref", |i, o, _| unary(i, o, |x| x * x)),
            Op::Silu => kernel("silu_f32_ref", |i, o, _| unary(i, o, silu_f32)),
            Op::SelectOutputs => kernel(format!("get_rows_{wty}_ref"), |i, o, _| {
                let rows = i[1].i32()?;
                let t = i[0].dims.first().copied().unwrap_or(0);
                let row_dims = &i[0].dims[1.min(i[0].dims.len())..];
                let row = i[0].dtype.tensor_bytes(row_dims).ok_or_else(|| fail("SelectOutputs", "bad row size"))?;
                let (x, o): (&[u8], &mut [u8]) = match (i[0].data, &mut o.data) {
                    (graph::Data::F32(x), graph::DataMut::F32(o)) => (bytemuck::cast_slice(x), bytemuck::cast_slice_mut(o)),
                    (graph::Data::I32(x), graph::DataMut::I32(o)) => (bytemuck::cast_slice(x), bytemuck::cast_slice_mut(o)),
                    (graph::Data::Bytes(x), graph::DataMut::Bytes(o)) => (x, &mut **o),
                    _ => return Err(fail("SelectOutputs", "input and output types differ")),
                };
                // x: [T] rows of `row` bytes; rows: [O]; o: [O] rows
                for (orow, &r) in o.chunks_mut(row.max(1)).zip(rows) {
                    let r0 = usize::try_from(r)
                        .ok()
                        .filter(|&r| r < t)
                        .ok_or_else(|| fail("SelectOutputs", format!("row {r} outside the {t} rows of the step")))?;
                    orow.copy_from_slice(&x[r0 * row..(r0 + 1) * row]);
                }
                Ok(())
            }),
        }
    }
}

fn unary(i: &[TensorRef<'_>], o: &mut TensorMut<'_>, f: impl Fn(f32) -> f32) -> Result<()> {
    for (o, &x) in o.f32()?.iter_mut().zip(i[0].f32()?) {
        *o = f(x);
    }
    Ok(())
}

fn binary(i: &[TensorRef<'_>], o: &mut TensorMut<'_>, f: impl Fn(f32, f32) -> f32) -> Result<()> {
    let (a, b) = (i[0].f32()?, i[1].f32()?);
    for ((o, &a), &b) in o.f32()?.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
    Ok(())
}

/// `x / (1 + vexp(−x))`: ggml's vectorised SiLU, with the same `vexp` as the softmax.
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + k::vexp_f32(-x))
}

fn embedding(inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "Embedding";
    let table = inputs[0].bytes().or_else(|_| inputs[0].f32().map(bytemuck::cast_slice))?;
    let (v, d) = (inputs[0].dims[0], inputs[0].dims[1]);
    let ids = inputs[1].i32()?;
    let dtype = inputs[0].dtype;
    let row_bytes = dtype.row_bytes(d).ok_or_else(|| fail(op, "bad row size"))?;
    let o = out.f32()?;
    // table: [V, D]; ids: [T]; o: [T, D]
    for (orow, &id) in o.chunks_mut(d).zip(ids) {
        if id < 0 || id as usize >= v {
            return Err(fail(op, format!("token id {id} is outside the vocabulary of {v}")));
        }
        let row = &table[id as usize * row_bytes..(id as usize + 1) * row_bytes];
        match dtype {
            DType::F32 => graph::quant::decode_f32(row, orow),
            DType::F16 => graph::quant::decode_f16(row, orow),
            DType::BF16 => graph::quant::decode_bf16(row, orow),
            DType::Q8_0 => graph::quant::decode_q8_0(row, orow),
            DType::Q4_0 => graph::quant::decode_q4_0(row, orow),
            DType::Q6K => graph::quant::decode_q6_k(row, orow),
            other => return Err(fail(op, format!("no embedding lookup for {other}"))),
        }
    }
    Ok(())
}

/// Causal attention for a step of T tokens over the f16 KV cache (../shared/docs/format.md §4.2–4.4).
///
/// Each token `i` belongs to sequence `seqs[i]`, whose cache is slot `seqs[i]`. Per query
/// head `hq` (KV head `g = hq / (H/Hkv)`) and token at position `p`:
/// `kq[j] = dot16(K16[g][j], f16(q))` for cached positions `j ≤ p` of its slot; scores
/// `f32(kq·scale)` masked to −inf beyond `p`; ggml's softmax; then
/// `o[d] = Σ_j P[j]·V16[g][d][j]`, with P rounded to f16 and `dot16` when the token is its
/// sequence's only token in the step, or P kept f32 and `dotblas` otherwise
/// ([`graph::rows_per_seq`]). The position axis is padded to a multiple of 32 with exact
/// zeros, as ggml pads `n_kv`, which changes no sum.
fn attention(
    inputs: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
    kv: &mut KvLayer<'_>,
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
    scale: f32,
) -> Result<()> {
    let op = "Attention";
    let (q, kn, vn, pos, seqs) = (inputs[0].f32()?, inputs[1].f32()?, inputs[2].f32()?, inputs[3].i32()?, inputs[4].i32()?);
    let stride = kv.n_ctx; // positions per KV row (a multiple of 32)
    let slot_len = kv.slot_len(n_head_kv, hd);
    let slot_of = |s: i32| {
        usize::try_from(s).ok().filter(|&s| s < kv.n_slots).ok_or_else(|| fail(op, format!("sequence {s} outside the KV cache")))
    };
    // 1. Store f16(k), f16(v) at each token's (slot, position).
    //    k: [slot][Hkv][stride][hd], v: [slot][Hkv][hd][stride].
    for (i, (&p, &s)) in pos.iter().zip(seqs).enumerate() {
        let p = usize::try_from(p)
            .ok()
            .filter(|&p| p < stride)
            .ok_or_else(|| fail(op, format!("position {p} outside the KV cache")))?;
        let base = slot_of(s)? * slot_len;
        for g in 0..n_head_kv {
            for d in 0..hd {
                let src = (i * n_head_kv + g) * hd + d;
                kv.k[base + (g * stride + p) * hd + d] = f16::from_f32(kn[src]);
                kv.v[base + (g * hd + d) * stride + p] = f16::from_f32(vn[src]);
            }
        }
    }
    let group = n_head / n_head_kv;
    let one_row = graph::rows_per_seq(seqs);
    let (kc, vc) = (&*kv.k, &*kv.v);
    // 2. Attend. o: [T, H·hd]; work is split over (token, head) pairs.
    out.f32()?.par_chunks_mut(hd).enumerate().for_each(|(th, orow)| {
        let (i, hq) = (th / n_head, th % n_head);
        let g = hq / group;
        let p = pos[i] as usize;
        let base = seqs[i] as usize * slot_len;
        let n_kv = (p + 1).div_ceil(32) * 32;
        let q16: Vec<f16> = q[(i * n_head + hq) * hd..(i * n_head + hq + 1) * hd].iter().map(|&x| f16::from_f32(x)).collect();
        let mut w = vec![f32::NEG_INFINITY; n_kv];
        for (j, wj) in w.iter_mut().enumerate().take(p + 1) {
            let krow = &kc[base + (g * stride + j) * hd..base + (g * stride + j + 1) * hd];
            *wj = k::vec_dot_f16(krow, &q16) * scale;
        }
        k::softmax_f32(&mut w);
        let single = one_row[i] == 1;
        let p16: Vec<f16> = if single { w.iter().map(|&x| f16::from_f32(x)).collect() } else { Vec::new() };
        for (d, od) in orow.iter_mut().enumerate() {
            let vrow = &vc[base + (g * hd + d) * stride..base + (g * hd + d) * stride + n_kv];
            *od = if single { k::vec_dot_f16(vrow, &p16) } else { k::vec_dot_f16_f32(vrow, &w) };
        }
    });
    Ok(())
}
