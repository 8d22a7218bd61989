//! bitnet-graph's scalar reference backend. Its kernels ([`kernels`]) *define* the
//! numerics every other backend is checked against: plain loops, one documented summation
//! order and rounding rule per kernel, bitnet.cpp's arithmetic (docs/format.md §4).
//! Parallelism (rayon) only splits output rows, so results never depend on the thread count.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod kernels;

use graph::backend::{q8tok_row_bytes, Backend, KvLayer, TensorMut, TensorRef};
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

fn fail(op: &Op, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{}: {msg}", op.name()))
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

impl Backend for ScalarBackend {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn supports(&self, op: &Op, inputs: &[&TensorFact]) -> bool {
        match op {
            Op::Embedding => matches!(inputs.first().map(|f| f.dtype), Some(DType::F32 | DType::F16 | DType::BF16 | DType::Q8_0 | DType::Q4_0)),
            _ => true,
        }
    }

    fn kernel_name(&self, op: &Op, inputs: &[&TensorFact]) -> String {
        let wty = inputs.first().map(|f| f.dtype.name()).unwrap_or("");
        match op {
            Op::Embedding => format!("get_rows_{wty}_ref"),
            Op::RmsNorm { .. } => "rms_norm_f32_ref".into(),
            Op::QuantizeI8 => "quantize_row_i8_ref".into(),
            Op::MatMulI2S => "vec_dot_i2s_i8_ref".into(),
            Op::MatMulF16 => "vec_dot_f16_ref (T=1) | vec_dot_f16_f32_ref".into(),
            Op::MatMulQ8_0 => format!("vec_dot_{wty}_q8_0_ref"),
            Op::QuantizeQ8K => "quantize_row_q8_k_ref".into(),
            Op::MatMulTQ => format!("vec_dot_{wty}_q8_k_ref"),
            Op::Rope { style: RopeStyle::Neox, .. } => "rope_neox_f32_ref".into(),
            Op::Rope { style: RopeStyle::Norm, .. } => "rope_norm_f32_ref".into(),
            Op::Attention { .. } => "attn_f16kv_ref".into(),
            other => format!("{}_f32_ref", other.name().to_lowercase()),
        }
    }

    fn eval(&self, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, kv: Option<&mut KvLayer<'_>>) -> Result<()> {
        match op {
            Op::InputTokens | Op::InputPositions | Op::Weight { .. } => Err(fail(op, "source nodes are not evaluated")),
            Op::Embedding => embedding(op, inputs, out),
            Op::RmsNorm { eps } => {
                let (x, w) = (inputs[0].f32()?, inputs[1].f32()?);
                let d = w.len();
                let o = out.f32()?;
                // x, o: [rows, d]
                o.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, x)| k::rms_norm_f32(x, w, *eps, o));
                Ok(())
            }
            Op::QuantizeI8 => {
                let x = inputs[0].f32()?;
                let kk = *inputs[0].dims.last().unwrap_or(&1);
                let o = out.bytes()?;
                // x: [T, K] f32 → o: [T] rows of (K i8, f32 s, i32 sum)
                for (row, x) in o.chunks_mut(q8tok_row_bytes(kk)).zip(x.chunks(kk)) {
                    let mut q = vec![0i8; kk];
                    let (s, sum) = k::quantize_row_i8(x, &mut q);
                    row[..kk].copy_from_slice(bytemuck::cast_slice(&q));
                    row[kk..kk + 4].copy_from_slice(&s.to_le_bytes());
                    row[kk + 4..kk + 8].copy_from_slice(&sum.to_le_bytes());
                }
                Ok(())
            }
            Op::MatMulI2S => {
                let w = inputs[0].bytes()?;
                let (m, kk) = (inputs[0].dims[0], inputs[0].dims[1]);
                let xq = inputs[1].bytes()?;
                let scale = graph::quant::i2s_scale(w, m * kk).ok_or_else(|| fail(op, "I2_S tensor too short"))?;
                let o = out.f32()?;
                // w: [M, K/4] codes; xq: [T] q8 rows; o: [T, M]
                for (orow, xrow) in o.chunks_mut(m).zip(xq.chunks(q8tok_row_bytes(kk))) {
                    let (q, s, sum) = q8tok_row(xrow, kk);
                    orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                        let codes = &w[r * kk / 4..(r + 1) * kk / 4];
                        *y = k::i2s_output(k::vec_dot_i2s_i8(codes, q), sum, s, scale);
                    });
                }
                Ok(())
            }
            Op::MatMulF16 => {
                let w = f16_slice(inputs[0].bytes()?);
                let (m, kk) = (inputs[0].dims[0], inputs[0].dims[1]);
                let x = inputs[1].f32()?;
                let t = inputs[1].dims[0];
                let o = out.f32()?;
                // w: [M, K] f16; x: [T, K]; o: [T, M]. One column: x → f16, dot16; else dotblas.
                for (orow, xrow) in o.chunks_mut(m).zip(x.chunks(kk)) {
                    if t == 1 {
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
            }
            Op::MatMulQ8_0 => {
                let w = inputs[0].bytes()?;
                let (m, kk) = (inputs[0].dims[0], inputs[0].dims[1]);
                let wty = inputs[0].dtype;
                let x = inputs[1].f32()?;
                let o = out.f32()?;
                let w_row = wty.nbytes(kk, 1).ok_or_else(|| fail(op, "bad row size"))?;
                let a_row = kk / 32 * 34;
                let dot = if wty == DType::Q4_0 { k::vec_dot_q4_0_q8_0 } else { k::vec_dot_q8_0_q8_0 };
                // w: [M] rows of K/32 blocks; x: [T, K] → Q8_0 activation blocks; o: [T, M]
                for (orow, xrow) in o.chunks_mut(m).zip(x.chunks(kk)) {
                    let mut a = vec![0u8; a_row];
                    k::quantize_row_q8_0_act(xrow, &mut a);
                    orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                        *y = dot(&w[r * w_row..(r + 1) * w_row], &a);
                    });
                }
                Ok(())
            }
            Op::QuantizeQ8K => {
                let x = inputs[0].f32()?;
                let kk = inputs[0].dims[1];
                let o = out.bytes()?;
                let row = kk / 256 * k::Q8K_BLOCK_BYTES;
                // x: [T, K] → o: [T] rows of K/256 blocks (f32 d, 256 i8)
                for (orow, xrow) in o.chunks_mut(row).zip(x.chunks(kk)) {
                    k::quantize_row_q8_k(xrow, orow);
                }
                Ok(())
            }
            Op::MatMulTQ => {
                let w = inputs[0].bytes()?;
                let (m, kk) = (inputs[0].dims[0], inputs[0].dims[1]);
                let wty = inputs[0].dtype;
                let xq = inputs[1].bytes()?;
                let o = out.f32()?;
                let w_row = wty.nbytes(kk, 1).ok_or_else(|| fail(op, "bad row size"))?;
                let a_row = kk / 256 * k::Q8K_BLOCK_BYTES;
                let dot = if wty == DType::TQ1_0 { k::vec_dot_tq1_0_q8_k } else { k::vec_dot_tq2_0_q8_k };
                // w: [M] rows of K/256 blocks; xq: [T] q8_k rows; o: [T, M]
                for (orow, a) in o.chunks_mut(m).zip(xq.chunks(a_row)) {
                    orow.par_iter_mut().with_min_len(ROWS_PER_TASK).enumerate().for_each(|(r, y)| {
                        *y = dot(&w[r * w_row..(r + 1) * w_row], a);
                    });
                }
                Ok(())
            }
            Op::Reshape { .. } => {
                out.f32()?.copy_from_slice(inputs[0].f32()?);
                Ok(())
            }
            Op::Rope { n_rot, freq_base, style } => {
                let (x, pos) = (inputs[0].f32()?, inputs[1].i32()?);
                let (h, hd) = (inputs[0].dims[1], inputs[0].dims[2]);
                let o = out.f32()?;
                o.copy_from_slice(x);
                if h * hd == 0 {
                    return Ok(()); // nothing to rotate (and no zero-sized chunks)
                }
                // o: [T, H, hd]; tokens are independent (parallel over tokens, same bits).
                o.par_chunks_mut(h * hd).zip(pos.par_iter()).for_each(|(row, &p)| {
                    k::rope_f32(row, h, hd, *n_rot, p, *freq_base, *style);
                });
                Ok(())
            }
            Op::Attention { n_head, n_head_kv, head_dim, scale, .. } => {
                let kv = kv.ok_or_else(|| fail(op, "no KV cache"))?;
                attention(op, inputs, out, kv, *n_head, *n_head_kv, *head_dim, *scale)
            }
            Op::Scale => {
                let (x, sc) = (inputs[0].f32()?, inputs[1].f32()?[0]);
                for (o, &x) in out.f32()?.iter_mut().zip(x) {
                    *o = x * sc;
                }
                Ok(())
            }
            Op::Add | Op::Mul => {
                let (a, b) = (inputs[0].f32()?, inputs[1].f32()?);
                let o = out.f32()?;
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = if matches!(op, Op::Add) { a + b } else { a * b };
                }
                Ok(())
            }
            Op::Relu | Op::Sqr | Op::Silu => {
                let x = inputs[0].f32()?;
                let o = out.f32()?;
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = match op {
                        Op::Relu => {
                            if x > 0.0 {
                                x
                            } else {
                                0.0
                            }
                        }
                        Op::Sqr => x * x,
                        _ => silu_f32(x),
                    };
                }
                Ok(())
            }
            Op::SelectOutputs => {
                let x = inputs[0].f32()?;
                let o = out.f32()?;
                o.copy_from_slice(&x[x.len() - o.len()..]);
                Ok(())
            }
        }
    }
}

/// `x / (1 + vexp(−x))`: ggml's vectorised SiLU, with the same `vexp` as the softmax.
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + k::vexp_f32(-x))
}

fn embedding(op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let table = inputs[0].bytes().or_else(|_| inputs[0].f32().map(bytemuck::cast_slice))?;
    let (v, d) = (inputs[0].dims[0], inputs[0].dims[1]);
    let ids = inputs[1].i32()?;
    let dtype = inputs[0].dtype;
    let row_bytes = dtype.nbytes(d, 1).ok_or_else(|| fail(op, "bad row size"))?;
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
            other => return Err(fail(op, format!("no embedding lookup for {other}"))),
        }
    }
    Ok(())
}

/// Causal attention for a step of T tokens over the f16 KV cache (docs/format.md §4.2–4.4).
///
/// Per query head `hq` (KV head `g = hq / (H/Hkv)`) and token at position `p`:
/// `kq[j] = dot16(K16[g][j], f16(q))` for cached positions `j ≤ p`; scores
/// `f32(kq·scale)` masked to −inf beyond `p`; ggml's softmax; then
/// `o[d] = Σ_j P[j]·V16[g][d][j]`, with P rounded to f16 and `dot16` when T = 1, or P kept
/// f32 and `dotblas` when T ≥ 2. The position axis is padded to a multiple of 32 with exact
/// zeros, as ggml pads `n_kv`, which changes no sum.
#[allow(clippy::too_many_arguments)]
fn attention(
    op: &Op,
    inputs: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
    kv: &mut KvLayer<'_>,
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
    scale: f32,
) -> Result<()> {
    let (q, kn, vn, pos) = (inputs[0].f32()?, inputs[1].f32()?, inputs[2].f32()?, inputs[3].i32()?);
    let t = pos.len();
    let stride = kv.n_ctx; // positions per KV row (a multiple of 32)
    // 1. Store f16(k), f16(v) at the step's positions. k: [Hkv][stride][hd], v: [Hkv][hd][stride].
    for (i, &p) in pos.iter().enumerate() {
        let p = usize::try_from(p).ok().filter(|&p| p < stride).ok_or_else(|| fail(op, format!("position {p} outside the KV cache")))?;
        for g in 0..n_head_kv {
            for d in 0..hd {
                let src = (i * n_head_kv + g) * hd + d;
                kv.k[(g * stride + p) * hd + d] = f16::from_f32(kn[src]);
                kv.v[(g * hd + d) * stride + p] = f16::from_f32(vn[src]);
            }
        }
    }
    let group = n_head / n_head_kv;
    let o = out.f32()?;
    // 2. Attend. o: [T, H·hd]; work is split over (token, head) pairs.
    o.par_chunks_mut(hd).enumerate().for_each(|(th, orow)| {
        let (i, hq) = (th / n_head, th % n_head);
        let g = hq / group;
        let p = pos[i] as usize;
        let n_kv = (p + 1).div_ceil(32) * 32;
        let q16: Vec<f16> = q[(i * n_head + hq) * hd..(i * n_head + hq + 1) * hd].iter().map(|&x| f16::from_f32(x)).collect();
        let mut w = vec![f32::NEG_INFINITY; n_kv];
        for (j, wj) in w.iter_mut().enumerate().take(p + 1) {
            let krow = &kv.k[(g * stride + j) * hd..(g * stride + j + 1) * hd];
            *wj = k::vec_dot_f16(krow, &q16) * scale;
        }
        k::softmax_f32(&mut w);
        let p16: Vec<f16> = if t == 1 { w.iter().map(|&x| f16::from_f32(x)).collect() } else { Vec::new() };
        for (d, od) in orow.iter_mut().enumerate() {
            let vrow = &kv.v[(g * hd + d) * stride..(g * hd + d) * stride + n_kv];
            *od = if t == 1 {
                k::vec_dot_f16(vrow, &p16)
            } else {
                k::vec_dot_f16_f32(vrow, &w)
            };
        }
    });
    Ok(())
}
