//! The AVX2 backend's kernels as the executor calls them: input checks, the split of work
//! over output rows (rayon) and the token tiles of every matmul (the shared driver of
//! [`graph::tiling`]), and the calls into the SIMD code of [`crate::x86_64`]. No `unsafe` here.
//!
//! Conventions are the scalar backend's (`backend-scalar/src/lib.rs`): q8_tok rows are
//! `K` i8, the f32 scale, the i32 sum; q8_k rows are `K/256` blocks of (f32 `d`, 256 i8);
//! weights arrive in their file layout; MatMulF16 rounds a row that is its sequence's only
//! row to f16 and uses dot16, else dotblas on the f32 activation; SelectOutputs gathers
//! rows. Bad sizes are errors, never panics.

use graph::backend::{q8tok_row_bytes, TensorMut, TensorRef};
use graph::tiles;
pub(crate) use graph::tiling::{copy_block, drive, par_tasks, rows_per_task, store, TileJob};
use graph::{DType, Error, Result};
use half::f16;
use rayon::prelude::*;

use crate::tiles::*;
use crate::x86_64::elementwise::Elementwise;
use crate::x86_64::q8_k::{BLOCK as Q8K_BLOCK, BLOCK_BYTES as Q8K_BLOCK_BYTES};
use crate::x86_64::tq::TqKind;
use crate::x86_64::{Isa, Vnni};

/// Elementwise ops: elements per rayon task.
const ELEMENTS_PER_TASK: usize = 1 << 15;

pub(crate) fn fail(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{op}: {msg}"))
}

/// `[M, K]` of a weight input, which must have dtype `want`.
fn weight_dims(op: &str, w: &TensorRef<'_>, want: DType) -> Result<(usize, usize)> {
    if w.dtype != want {
        return Err(fail(op, format!("weight dtype {}, this backend's kernel takes {want}", w.dtype)));
    }
    match *w.dims {
        [m, k] => Ok((m, k)),
        _ => Err(fail(op, format!("weight dims {:?}, expected [M, K]", w.dims))),
    }
}

/// Tasks per thread of most kernels (small, so a late or slowed thread costs little).
pub(crate) const TASKS_PER_THREAD: usize = 8;
/// Tasks per thread of the I2_S matmul: a task is a run of consecutive rows streamed from
/// memory, so fewer, longer runs stream better (the workers are kept awake, see
/// `graph::Executor`). 2-vCPU Xeon VM, 2 threads, 2B shape: the 210 GEMVs of a decode
/// step alone (`decode_i2s` example), median ms, 8 → 2 tasks per thread: 22.6 → 20.7 and
/// 22.4 → 21.5; whole decode (`bench -p 128 -n 32 --profile`, A/B twice): I2_S 23.8 →
/// 22.1 and 24.2 → 23.1 ms per token, pp128 unchanged within the noise.
const I2S_TASKS_PER_THREAD: usize = 2;

/// RoPE over `[T, H, hd]`: tokens in parallel, one position each.
pub(crate) fn rope(
    isa: Isa,
    op: &str,
    inputs: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
    n_rot: usize,
    freq_base: f32,
    style: graph::RopeStyle,
) -> Result<()> {
    let (x, pos) = (inputs[0].f32()?, inputs[1].i32()?);
    let o = out.f32()?;
    let [t, h, hd] = *inputs[0].dims else {
        return Err(fail(op, format!("input dims {:?}, expected [T, H, head_dim]", inputs[0].dims)));
    };
    if pos.len() != t || x.len() != t * h * hd || o.len() != x.len() || n_rot > hd || !n_rot.is_multiple_of(2) || hd == 0 {
        return Err(fail(op, format!("x {:?}, {} positions, output of {}, n_rot {n_rot}", inputs[0].dims, pos.len(), o.len())));
    }
    o.copy_from_slice(x);
    if h == 0 {
        return Ok(()); // no heads: nothing to rotate (and no zero-sized chunks)
    }
    let neox = style == graph::RopeStyle::Neox;
    o.par_chunks_mut(h * hd).zip(pos.par_iter()).for_each(|(row, &p)| isa.rope_token(row, hd, n_rot, p, freq_base, neox));
    Ok(())
}

pub(crate) fn rms_norm(isa: Isa, op: &str, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, eps: f32) -> Result<()> {
    let (x, w) = (inputs[0].f32()?, inputs[1].f32()?);
    let d = w.len();
    let o = out.f32()?;
    if o.len() != x.len() || (d == 0 && !x.is_empty()) || (d > 0 && x.len() % d != 0) {
        return Err(fail(op, format!("x of {} elements, weight of {d}, output of {}", x.len(), o.len())));
    }
    if x.is_empty() {
        return Ok(());
    }
    // x, o: [rows, d]
    o.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, x)| isa.rms_norm(x, w, eps, o));
    Ok(())
}

pub(crate) fn quantize_i8(isa: Isa, op: &str, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let x = inputs[0].f32()?;
    let k = *inputs[0].dims.last().unwrap_or(&1);
    let o = out.bytes()?;
    let rows = x.len().checked_div(k).unwrap_or(0);
    if rows * k != x.len() || o.len() != rows * q8tok_row_bytes(k) {
        return Err(fail(op, format!("x of {} elements in rows of {k}, output of {} bytes", x.len(), o.len())));
    }
    if rows == 0 {
        return Ok(());
    }
    // x: [T, K] f32 → o: [T] rows of (K i8, f32 s, i32 sum)
    o.par_chunks_mut(q8tok_row_bytes(k)).zip(x.par_chunks(k)).for_each(|(row, x)| {
        let (q, tail) = row.split_at_mut(k);
        let (s, sum) = isa.quantize_i8(x, bytemuck::cast_slice_mut(q));
        tail[..4].copy_from_slice(&s.to_le_bytes());
        tail[4..].copy_from_slice(&sum.to_le_bytes());
    });
    Ok(())
}

/// One I2_S product: weight codes of the task's rows, activations, per-token epilogue data.
struct I2sJob<'a> {
    isa: Isa,
    /// The task's rows of codes, `row_bytes = K/4` apart.
    codes: &'a [u8],
    row_bytes: usize,
    k: usize,
    /// All q8_tok rows, `stride = K + 8` apart.
    xq: &'a [u8],
    stride: usize,
    /// Per token: (s, Σq).
    toks: &'a [(f32, i32)],
    /// The VNNI kernels, if the CPU has them.
    vnni: Option<Vnni>,
    /// Per token: whether its i16 lanes provably cannot wrap ([`Isa::i2s_cannot_wrap`]), so
    /// that the VNNI kernels give the exact result.
    no_wrap: &'a [bool],
    scale: f32,
}

impl TileJob for I2sJob<'_> {
    type Acc = i32;

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [i32], block: usize) {
        let (codes, xq) = (&self.codes[r * self.row_bytes..], &self.xq[n0 * self.stride..]);
        let vnni = self.vnni.filter(|_| self.no_wrap[n0..n0 + nn].iter().all(|&ok| ok));
        tiles!(nn; 1, 2, 3, 4 => |N| {
            let res = match vnni {
                Some(v) => v.i2s_dots::<R, N>(codes, self.row_bytes, xq, self.stride, self.k),
                None => self.isa.i2s_dots::<R, N>(codes, self.row_bytes, xq, self.stride, self.k),
            };
            store(res, r_local, n0, acc, block)
        })
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[i32], block: usize, outs: &mut [&mut [f32]]) {
        for ((out, acc), &(s, sum)) in outs.iter_mut().zip(acc.chunks_exact(block)).zip(self.toks) {
            graph::quant::i2s_outputs(&acc[..nb], sum, s, self.scale, &mut out[b0..b0 + nb]);
        }
    }
}

pub(crate) fn matmul_i2s(isa: Isa, vnni: Option<Vnni>, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "MatMulI2S";
    let w = inputs[0].bytes()?;
    let (m, k) = weight_dims(op, &inputs[0], DType::I2S)?;
    let xq = inputs[1].bytes()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let stride = q8tok_row_bytes(k);
    let o = out.f32()?;
    if k % 128 != 0 || inputs[1].dims != [t, k] || xq.len() != t * stride || o.len() != t * m {
        return Err(fail(
            op,
            format!("weight [{m}, {k}], activations {:?} ({} bytes), output of {}", inputs[1].dims, xq.len(), o.len()),
        ));
    }
    let scale = graph::quant::i2s_scale(w, m * k).ok_or_else(|| fail(op, "I2_S tensor too short"))?;
    if m == 0 || t == 0 {
        return Ok(());
    }
    let toks: Vec<(f32, i32)> = xq
        .chunks_exact(stride)
        .map(|r| {
            let s = f32::from_le_bytes([r[k], r[k + 1], r[k + 2], r[k + 3]]);
            let sum = i32::from_le_bytes([r[k + 4], r[k + 5], r[k + 6], r[k + 7]]);
            (s, sum)
        })
        .collect();
    let no_wrap: Vec<bool> = match vnni {
        Some(_) => xq.chunks_exact(stride).map(|r| isa.i2s_cannot_wrap(r, k)).collect(),
        None => vec![false; t],
    };
    let row_bytes = k / 4;
    let rows = rows_per_task(m, row_bytes, 4, I2S_TASKS_PER_THREAD);
    // w: [M, K/4] codes; xq: [T] q8 rows; o: [T, M]. Tasks own disjoint output columns.
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let job = I2sJob {
            isa,
            codes: &w[r0 * row_bytes..(r0 + n_rows) * row_bytes],
            row_bytes,
            k,
            xq,
            stride,
            toks: &toks,
            vnni,
            no_wrap: &no_wrap,
            scale,
        };
        if t == 1 {
            drive::<_, I2S_ROWS_1>(&job, 1, outs);
        } else {
            drive::<_, I2S_ROWS>(&job, I2S_TOKENS, outs);
        }
    });
    Ok(())
}

/// The scalar `vec_dot_f16`'s ending: `f32(f64(r) + Σ_tail f64(f32(w[i]·x[i])))` for the
/// elements past the last multiple of 32 (`w` f16 bytes of the whole row, `x` the f16
/// values widened to f32).
fn dot16_finish(r: f32, w: &[u8], x: &[f32]) -> f32 {
    let mut sum = f64::from(r);
    for i in x.len() - x.len() % 32..x.len() {
        let p: f32 = f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() * x[i];
        sum += f64::from(p);
    }
    sum as f32
}

/// `dot16` of the task's weight rows with tokens of f16-rounded activations (f32 values).
pub(crate) struct Dot16Job<'a> {
    pub isa: Isa,
    /// The task's weight rows (f16), `row_stride` bytes apart.
    pub w: &'a [u8],
    pub row_stride: usize,
    /// Token rows, `x_stride` f32 apart, `k` used.
    pub x: &'a [f32],
    pub x_stride: usize,
    pub k: usize,
}

impl TileJob for Dot16Job<'_> {
    type Acc = f32;

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let w = &self.w[r * self.row_stride..];
        let x = &self.x[n0 * self.x_stride..];
        tiles!(nn; 1, 2 => |N| {
            let mut res = self.isa.dot16_tile::<R, N>(w, self.row_stride, x, self.x_stride, self.k);
            for (dr, res_r) in res.iter_mut().enumerate() {
                for (dn, v) in res_r.iter_mut().enumerate() {
                    *v = dot16_finish(*v, &w[dr * self.row_stride..], &x[dn * self.x_stride..dn * self.x_stride + self.k]);
                }
            }
            store(res, r_local, n0, acc, block)
        })
    }
}

/// `dotblas` of the task's weight rows with f32 token rows.
pub(crate) struct BlasJob<'a> {
    pub isa: Isa,
    pub w: &'a [u8],
    pub row_stride: usize,
    /// Token rows, `x_stride` f32 apart, `k` used.
    pub x: &'a [f32],
    pub x_stride: usize,
    pub k: usize,
}

impl TileJob for BlasJob<'_> {
    type Acc = f32;

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let (w, x) = (&self.w[r * self.row_stride..], &self.x[n0 * self.x_stride..]);
        tiles!(nn; 1, 2, 3, 4 => |N| store(self.isa.dotblas_tile::<R, N>(w, self.row_stride, x, self.x_stride, self.k), r_local, n0, acc, block))
    }
}

/// F16 weights × f32 rows `x [R, K]`: each row in the form its sequence's row count calls
/// for (`dot16` on f16(x) for a sequence's only row, else `dotblas`), rows of one form
/// batched so the weights stream once per form.
pub(crate) fn matmul_f16(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "MatMulF16";
    let w = inputs[0].bytes()?;
    let (m, k) = weight_dims(op, &inputs[0], DType::F16)?;
    let (x, seqs) = (inputs[1].f32()?, inputs[2].i32()?);
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    if w.len() < m * k * 2 || inputs[1].dims != [t, k] || x.len() != t * k || o.len() != t * m || seqs.len() != t {
        return Err(fail(
            op,
            format!(
                "weight [{m}, {k}] of {} bytes, x {:?}, {} sequence ids, output of {}",
                w.len(),
                inputs[1].dims,
                seqs.len(),
                o.len()
            ),
        ));
    }
    if m == 0 || t == 0 {
        return Ok(());
    }
    let single: Vec<bool> = graph::rows_per_seq(seqs).iter().map(|&n| n == 1).collect();
    // The rows of each form; when all rows share one form the output is written in place.
    let (ones, many): (Vec<usize>, Vec<usize>) = (0..t).partition(|&i| single[i]);
    for (rows, dot16) in [(ones, true), (many, false)] {
        if rows.is_empty() {
            continue;
        }
        let xs: Vec<f32> = if dot16 {
            let mut x16 = vec![0.0f32; rows.len() * k];
            for (dst, &i) in x16.chunks_exact_mut(k.max(1)).zip(&rows) {
                isa.round_f16(&x[i * k..(i + 1) * k], dst);
            }
            x16
        } else if rows.len() == t {
            Vec::new()
        } else {
            rows.iter().flat_map(|&i| x[i * k..(i + 1) * k].iter().copied()).collect()
        };
        let xr: &[f32] = if xs.is_empty() { x } else { &xs };
        let n = rows.len();
        let mut tmp = if n == t { Vec::new() } else { vec![0.0f32; n * m] };
        let dst: &mut [f32] = if n == t { &mut *o } else { &mut tmp };
        matmul_f16_rows(isa, w, m, k, xr, n, dot16, dst);
        if n != t {
            for (src, &i) in tmp.chunks_exact(m).zip(&rows) {
                o[i * m..(i + 1) * m].copy_from_slice(src);
            }
        }
    }
    Ok(())
}

/// `dst [n, M] = x [n, K] · wᵀ` in one form.
#[allow(clippy::too_many_arguments)]
fn matmul_f16_rows(isa: Isa, w: &[u8], m: usize, k: usize, x: &[f32], n: usize, dot16: bool, dst: &mut [f32]) {
    let row_bytes = 2 * k;
    if dot16 {
        // One row per tile streams long rows best (the 2B LM head), with up to two tokens
        // sharing each weight load; short rows take two rows per tile, one token.
        let long = k >= DOT16_LONG_ROW;
        let tile_rows = if long { DOT16_ROWS_LONG } else { DOT16_ROWS };
        let rows = rows_per_task(m, row_bytes, tile_rows, TASKS_PER_THREAD);
        par_tasks(dst, m, rows, |r0, outs| {
            let n_rows = outs[0].len();
            let job =
                Dot16Job { isa, w: &w[r0 * row_bytes..(r0 + n_rows) * row_bytes], row_stride: row_bytes, x, x_stride: k, k };
            if long {
                drive::<_, DOT16_ROWS_LONG>(&job, DOT16_TOKENS_LONG, outs);
            } else {
                drive::<_, DOT16_ROWS>(&job, 1, outs);
            }
        });
    } else {
        let rows = rows_per_task(m, row_bytes, DOTBLAS_ROWS, TASKS_PER_THREAD);
        par_tasks(dst, m, rows, |r0, outs| {
            let n_rows = outs[0].len();
            let job = BlasJob { isa, w: &w[r0 * row_bytes..(r0 + n_rows) * row_bytes], row_stride: row_bytes, x, x_stride: k, k };
            drive::<_, DOTBLAS_ROWS>(&job, DOTBLAS_TOKENS.min(n), outs);
        });
    }
}

/// One Q8_0 or Q4_0 product: the task's weight rows and all quantized activation rows.
struct Q8Job<'a> {
    isa: Isa,
    /// Q4_0 weights (else Q8_0).
    q4: bool,
    w: &'a [u8],
    /// Bytes per weight row (`nb` blocks).
    w_row: usize,
    a: &'a [u8],
    /// Bytes per activation row (`nb` Q8_0 blocks).
    a_row: usize,
    nb: usize,
}

impl TileJob for Q8Job<'_> {
    type Acc = f32;

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let (w, a) = (&self.w[r * self.w_row..], &self.a[n0 * self.a_row..]);
        tiles!(nn; 1, 2 => |N| {
            let res = if self.q4 {
                self.isa.q4_0_dots::<R, N>(w, self.w_row, a, self.a_row, self.nb)
            } else {
                self.isa.q8_0_dots::<R, N>(w, self.w_row, a, self.a_row, self.nb)
            };
            store(res, r_local, n0, acc, block)
        })
    }
}

pub(crate) fn matmul_q8_0(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "MatMulQ8_0";
    let w = inputs[0].bytes()?;
    let wty = inputs[0].dtype;
    let q4 = match wty {
        DType::Q8_0 => false,
        DType::Q4_0 => true,
        other => return Err(fail(op, format!("weight dtype {other}, this backend's kernels take q8_0 and q4_0"))),
    };
    let (m, k) = match *inputs[0].dims {
        [m, k] => (m, k),
        _ => return Err(fail(op, format!("weight dims {:?}, expected [M, K]", inputs[0].dims))),
    };
    let x = inputs[1].f32()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    let (w_row, a_row) = match (wty.row_bytes(k), DType::Q8_0.row_bytes(k)) {
        (Some(w), Some(a)) => (w, a),
        _ => return Err(fail(op, format!("rows of {k} are not whole blocks of 32"))),
    };
    let nb = k / 32;
    if w.len() < m * w_row || inputs[1].dims != [t, k] || x.len() != t * k || o.len() != t * m {
        return Err(fail(op, format!("weight [{m}, {k}] of {} bytes, x {:?}, output of {}", w.len(), inputs[1].dims, o.len())));
    }
    if m == 0 || t == 0 {
        return Ok(());
    }
    // x: [T, K] → a: [T] rows of K/32 Q8_0 activation blocks.
    let mut a = vec![0u8; t * a_row];
    if k > 0 {
        a.par_chunks_exact_mut(a_row).zip(x.par_chunks_exact(k)).for_each(|(arow, xrow)| isa.quantize_q8_0_act(xrow, arow));
    }
    let long1 = t == 1 && k >= DOT16_LONG_ROW;
    let rows = rows_per_task(m, w_row, if long1 { Q8_0_ROWS_1 } else { Q8_0_ROWS }, TASKS_PER_THREAD);
    // w: [M] rows of K/32 blocks; o: [T, M].
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let job = Q8Job { isa, q4, w: &w[r0 * w_row..(r0 + n_rows) * w_row], w_row, a: &a, a_row, nb };
        if long1 {
            drive::<_, Q8_0_ROWS_1>(&job, 1, outs);
        } else {
            drive::<_, Q8_0_ROWS>(&job, Q8_0_TOKENS, outs);
        }
    });
    Ok(())
}

pub(crate) fn quantize_q8_k(isa: Isa, op: &str, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let x = inputs[0].f32()?;
    let k = *inputs[0].dims.last().unwrap_or(&0);
    let o = out.bytes()?;
    let rows = x.len().checked_div(k).unwrap_or(0);
    let row_bytes = k / Q8K_BLOCK * Q8K_BLOCK_BYTES;
    if !k.is_multiple_of(Q8K_BLOCK) || rows * k != x.len() || o.len() != rows * row_bytes {
        return Err(fail(op, format!("x of {} elements in rows of {k}, output of {} bytes", x.len(), o.len())));
    }
    if rows == 0 {
        return Ok(());
    }
    // x: [T, K] f32 → o: [T] rows of K/256 blocks (f32 d, 256 i8). One task per row.
    o.par_chunks_exact_mut(row_bytes).zip(x.par_chunks_exact(k)).for_each(|(orow, xrow)| isa.quantize_q8_k(xrow, orow));
    Ok(())
}

/// One TQ product: the task's weight rows, all Q8_K activation rows and their chunk sums.
struct TqJob<'a> {
    isa: Isa,
    kind: TqKind,
    w: &'a [u8],
    w_row: usize,
    a: &'a [u8],
    a_row: usize,
    /// Per token, block and chunk of 32: `Σ q` (`8·nb` i32 per token).
    bsums: &'a [i32],
    nb: usize,
}

impl TileJob for TqJob<'_> {
    type Acc = f32;

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }

    /// One weight row at a time (its codes are unpacked once per block and shared by the
    /// tokens of the tile).
    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let bs_row = 8 * self.nb;
        for dr in 0..R {
            let w = &self.w[(r + dr) * self.w_row..(r + dr + 1) * self.w_row];
            let (a, bs) = (&self.a[n0 * self.a_row..], &self.bsums[n0 * bs_row..]);
            tiles!(nn; 1, 2, 3, 4 => |N| {
                let res = self.isa.tq_dots::<N>(self.kind, w, a, self.a_row, bs, bs_row, self.nb);
                store([res], r_local + dr, n0, acc, block)
            })
        }
    }
}

pub(crate) fn matmul_tq(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "MatMulTQ";
    let w = inputs[0].bytes()?;
    let wty = inputs[0].dtype;
    let kind = match wty {
        DType::TQ2_0 => TqKind::Tq2,
        DType::TQ1_0 => TqKind::Tq1,
        DType::Q6K => TqKind::Q6k,
        other => return Err(fail(op, format!("weight dtype {other}, this backend's kernels take tq2_0, tq1_0 and q6_k"))),
    };
    let (m, k) = match *inputs[0].dims {
        [m, k] => (m, k),
        _ => return Err(fail(op, format!("weight dims {:?}, expected [M, K]", inputs[0].dims))),
    };
    let xq = inputs[1].bytes()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    let (w_row, a_row) = match (wty.row_bytes(k), DType::Q8K.row_bytes(k)) {
        (Some(w), Some(a)) => (w, a),
        _ => return Err(fail(op, format!("rows of {k} are not whole blocks of 256"))),
    };
    let nb = k / Q8K_BLOCK;
    if w.len() < m * w_row
        || inputs[1].dtype != DType::Q8K
        || inputs[1].dims != [t, k]
        || xq.len() != t * a_row
        || o.len() != t * m
    {
        return Err(fail(
            op,
            format!(
                "weight [{m}, {k}] of {} bytes, activations {:?} ({} bytes), output of {}",
                w.len(),
                inputs[1].dims,
                xq.len(),
                o.len()
            ),
        ));
    }
    if m == 0 || t == 0 || nb == 0 {
        o.fill(0.0);
        return Ok(());
    }
    // Per token, block and chunk L of 32 activations: Σ q (the kernels subtract it from lane L).
    let bsums: Vec<i32> = xq
        .chunks_exact(Q8K_BLOCK_BYTES)
        .flat_map(|blk| blk[4..].chunks_exact(32).map(|c| c.iter().map(|&q| i32::from(q as i8)).sum::<i32>()))
        .collect();
    let rows = rows_per_task(m, w_row, 1, TASKS_PER_THREAD);
    // w: [M] rows of K/256 blocks; xq: [T] q8_k rows; o: [T, M]. Tasks own disjoint output columns.
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let job = TqJob { isa, kind, w: &w[r0 * w_row..(r0 + n_rows) * w_row], w_row, a: xq, a_row, bsums: &bsums, nb };
        drive::<_, 1>(&job, TQ_TOKENS, outs);
    });
    Ok(())
}

/// Gathers the requested rows: `x [T, D]`, `rows [O]` → `[O, D]`.
pub(crate) fn select_rows(inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "SelectOutputs";
    let (x, rows) = (inputs[0].f32()?, inputs[1].i32()?);
    let o = out.f32()?;
    let [t, d] = *inputs[0].dims else { return Err(fail(op, format!("input dims {:?}, expected [T, D]", inputs[0].dims))) };
    if x.len() != t * d || o.len() != rows.len() * d {
        return Err(fail(op, format!("input of {} values, {} rows into an output of {}", x.len(), rows.len(), o.len())));
    }
    for (orow, &r) in o.chunks_exact_mut(d.max(1)).zip(rows) {
        let r = usize::try_from(r)
            .ok()
            .filter(|&r| r < t)
            .ok_or_else(|| fail(op, format!("row {r} outside the {t} rows of the step")))?;
        orow.copy_from_slice(&x[r * d..(r + 1) * d]);
    }
    Ok(())
}

pub(crate) fn elementwise(
    isa: Isa,
    op: &str,
    kind: Elementwise,
    inputs: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
) -> Result<()> {
    let a = inputs[0].f32()?;
    let b = if inputs.len() > 1 { inputs[1].f32()? } else { a };
    let o = out.f32()?;
    if a.len() != o.len() || b.len() != o.len() {
        return Err(fail(op, format!("inputs of {} and {} elements, output of {}", a.len(), b.len(), o.len())));
    }
    o.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(a.par_chunks(ELEMENTS_PER_TASK).zip(b.par_chunks(ELEMENTS_PER_TASK)))
        .for_each(|(o, (a, b))| isa.elementwise(kind, a, b, o));
    Ok(())
}
