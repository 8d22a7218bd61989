//! `Backend::eval` for the AVX2 backend: input checks, the split of work over output rows
//! (rayon), and the calls into the kernels of [`crate::x86_64`]. No `unsafe` here.
//!
//! Conventions are the scalar backend's (`backend-scalar/src/lib.rs`): q8_tok rows are
//! `K` i8, the f32 scale, the i32 sum; q8_k rows are `K/256` blocks of (f32 `d`, 256 i8);
//! weights arrive in their file layout; the KV cache is
//! `k [Hkv][n_ctx][hd]`, `v [Hkv][hd][n_ctx]` (f16); MatMulF16 rounds a one-row activation
//! to f16 and uses dot16, else dotblas on the f32 activation; attention pads the positions
//! to a multiple of 32 with exact zeros; SelectOutputs keeps the last rows. Bad sizes are
//! errors, never panics.

use graph::backend::{q8tok_row_bytes, KvLayer, TensorMut, TensorRef};
use graph::{DType, Error, Op, Result};
use half::f16;
use rayon::prelude::*;

use crate::tiles::*;
use crate::x86_64::elementwise::Elementwise;
use crate::x86_64::q4_0::BLOCK_BYTES as Q4_0_BLOCK_BYTES;
use crate::x86_64::q8_0::BLOCK_BYTES as Q8_0_BLOCK_BYTES;
use crate::x86_64::q8_k::{BLOCK as Q8K_BLOCK, BLOCK_BYTES as Q8K_BLOCK_BYTES};
use crate::x86_64::tq::TqKind;
use crate::x86_64::{Isa, Vnni};

/// A task never holds more than about this many weight bytes (keeps the load balanced on
/// the LM head: 128256 rows are ~650 tasks of 1 MiB).
const MAX_TASK_BYTES: usize = 1 << 20;
/// A task holds at least about this many weight bytes (keeps rayon's overhead small on
/// small matrices).
const MIN_TASK_BYTES: usize = 1 << 15;
/// Elementwise ops: elements per rayon task.
const ELEMENTS_PER_TASK: usize = 1 << 15;

fn fail(op: &Op, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{}: {msg}", op.name()))
}

/// Evaluates one node (see [`graph::Backend::eval`]).
pub(crate) fn eval(
    isa: Isa,
    vnni: Option<Vnni>,
    op: &Op,
    inputs: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
    kv: Option<&mut KvLayer<'_>>,
) -> Result<()> {
    if inputs.len() != op.arity() {
        return Err(fail(op, format!("{} inputs, expected {}", inputs.len(), op.arity())));
    }
    match op {
        Op::RmsNorm { eps } => rms_norm(isa, op, inputs, out, *eps),
        Op::QuantizeI8 => quantize_i8(isa, op, inputs, out),
        Op::MatMulI2S => matmul_i2s(isa, vnni, op, inputs, out),
        Op::MatMulF16 => matmul_f16(isa, op, inputs, out),
        Op::MatMulQ8_0 => matmul_q8_0(isa, op, inputs, out),
        Op::QuantizeQ8K => quantize_q8_k(isa, op, inputs, out),
        Op::Rope { n_rot, freq_base, style } => rope(isa, op, inputs, out, *n_rot, *freq_base, *style),
        Op::MatMulTQ => matmul_tq(isa, op, inputs, out),
        Op::Attention { n_head, n_head_kv, head_dim, scale, .. } => {
            let kv = kv.ok_or_else(|| fail(op, "no KV cache"))?;
            attention(isa, op, inputs, out, kv, *n_head, *n_head_kv, *head_dim, *scale)
        }
        Op::Add => elementwise(isa, op, Elementwise::Add, inputs, out),
        Op::Mul => elementwise(isa, op, Elementwise::Mul, inputs, out),
        Op::Relu => elementwise(isa, op, Elementwise::Relu, inputs, out),
        Op::Sqr => elementwise(isa, op, Elementwise::Sqr, inputs, out),
        Op::Silu => elementwise(isa, op, Elementwise::Silu, inputs, out),
        Op::Reshape { .. } => {
            let (x, o) = (inputs[0].f32()?, out.f32()?);
            if x.len() != o.len() {
                return Err(fail(op, format!("{} elements into an output of {}", x.len(), o.len())));
            }
            o.copy_from_slice(x);
            Ok(())
        }
        Op::SelectOutputs => {
            let (x, o) = (inputs[0].f32()?, out.f32()?);
            if o.len() > x.len() {
                return Err(fail(op, format!("{} output elements from an input of {}", o.len(), x.len())));
            }
            o.copy_from_slice(&x[x.len() - o.len()..]);
            Ok(())
        }
        _ => Err(fail(op, "not supported by the avx2 backend")),
    }
}

/// `[M, K]` of a weight input, which must have dtype `want`.
fn weight_dims(op: &Op, w: &TensorRef<'_>, want: DType) -> Result<(usize, usize)> {
    if w.dtype != want {
        return Err(fail(op, format!("weight dtype {}, this backend's kernel takes {want}", w.dtype)));
    }
    match *w.dims {
        [m, k] => Ok((m, k)),
        _ => Err(fail(op, format!("weight dims {:?}, expected [M, K]", w.dims))),
    }
}

/// Tasks per thread of most kernels (small, so a late or slowed thread costs little).
const TASKS_PER_THREAD: usize = 8;
/// Tasks per thread of the I2_S matmul: a task is a run of consecutive rows streamed from
/// memory, so fewer, longer runs stream better (the workers are kept awake, see
/// `graph::Executor`). 2-vCPU Xeon VM, 2 threads, 2B shape: the 210 GEMVs of a decode
/// step alone (`decode_i2s` example), median ms, 8 → 2 tasks per thread: 22.6 → 20.7 and
/// 22.4 → 21.5; whole decode (`bench -p 128 -n 32 --profile`, A/B twice): I2_S 23.8 →
/// 22.1 and 24.2 → 23.1 ms per token, pp128 unchanged within the noise.
const I2S_TASKS_PER_THREAD: usize = 2;

/// Rows per rayon task for a matrix of `m` rows of `row_bytes` bytes: `per_thread` tasks
/// per thread, more if a task would exceed [`MAX_TASK_BYTES`] (always a multiple of the
/// thread count, so that equal threads finish together), at least [`MIN_TASK_BYTES`] per
/// task, rounded up to a multiple of `align`.
fn rows_per_task(m: usize, row_bytes: usize, align: usize, per_thread: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let row_bytes = row_bytes.max(1);
    let per_thread = per_thread.max((m * row_bytes).div_ceil(threads * MAX_TASK_BYTES)).max(1);
    let rows = m.div_ceil(threads * per_thread).max(MIN_TASK_BYTES / row_bytes).max(1);
    rows.div_ceil(align) * align
}

/// Splits an output `[T, M]` (row-major) into tasks of `rows` consecutive output columns:
/// task `i` gets, for each token, the slice of columns `i·rows .. (i+1)·rows`.
fn split_columns(out: &mut [f32], m: usize, rows: usize) -> Vec<Vec<&mut [f32]>> {
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..m.div_ceil(rows)).map(|_| Vec::new()).collect();
    for orow in out.chunks_mut(m) {
        for (task, piece) in tasks.iter_mut().zip(orow.chunks_mut(rows)) {
            task.push(piece);
        }
    }
    tasks
}

/// RoPE over `[T, H, hd]`: tokens in parallel, one position each.
fn rope(
    isa: Isa,
    op: &Op,
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

fn rms_norm(isa: Isa, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, eps: f32) -> Result<()> {
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

fn quantize_i8(isa: Isa, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
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

/// Output rows per block of I2_S integer dots: the float epilogue then runs over a block's
/// rows at once, where the compiler vectorises its division. (A scalar `divss` per output
/// in the tile loop cost ~1/3 of the kernel time; `avx2_kernel_throughput`, 1 thread,
/// 6912×2560 T = 128: 35 → 66 G MAC/s, T = 1: 24 → 34 G MAC/s.)
const I2S_ROW_BLOCK: usize = 64;

impl I2sJob<'_> {
    /// Integer dots of rows `r .. r+R` × tokens `n0 .. n0+N` into `dots[token][r_local ..]`.
    fn tile<const R: usize, const N: usize>(&self, r: usize, r_local: usize, n0: usize, dots: &mut [i32]) {
        let (codes, xq) = (&self.codes[r * self.row_bytes..], &self.xq[n0 * self.stride..]);
        let acc = match self.vnni {
            Some(v) if self.no_wrap[n0..n0 + N].iter().all(|&ok| ok) => {
                v.i2s_dots::<R, N>(codes, self.row_bytes, xq, self.stride, self.k)
            }
            _ => self.isa.i2s_dots::<R, N>(codes, self.row_bytes, xq, self.stride, self.k),
        };
        for (dr, acc_r) in acc.iter().enumerate() {
            for (dn, &a) in acc_r.iter().enumerate() {
                dots[(n0 + dn) * I2S_ROW_BLOCK + r_local + dr] = a;
            }
        }
    }

    /// Every row of the task: blocks of [`I2S_ROW_BLOCK`] rows, each followed by the float
    /// epilogue of the block. Within a block the token tiles of `NT` tokens (and a smaller
    /// last one) are the outer loop, so a tile's activations stay in L1 while the block's
    /// codes (at most 64 rows, ~110 KB) come from L2; each token tile then walks the block in
    /// tiles of `R` rows (then single rows).
    fn run<const R: usize, const NT: usize>(&self, outs: &mut [&mut [f32]]) {
        let n_rows = outs[0].len();
        let t = self.toks.len();
        let mut dots = vec![0i32; t * I2S_ROW_BLOCK];
        for b0 in (0..n_rows).step_by(I2S_ROW_BLOCK) {
            let nb = I2S_ROW_BLOCK.min(n_rows - b0);
            let mut n0 = 0;
            while n0 < t {
                let nn = (t - n0).min(NT);
                match nn {
                    1 => self.block::<R, 1>(b0, nb, n0, &mut dots),
                    2 => self.block::<R, 2>(b0, nb, n0, &mut dots),
                    3 => self.block::<R, 3>(b0, nb, n0, &mut dots),
                    4 => self.block::<R, 4>(b0, nb, n0, &mut dots),
                    5 => self.block::<R, 5>(b0, nb, n0, &mut dots),
                    6 => self.block::<R, 6>(b0, nb, n0, &mut dots),
                    7 => self.block::<R, 7>(b0, nb, n0, &mut dots),
                    8 => self.block::<R, 8>(b0, nb, n0, &mut dots),
                    _ => unreachable!("token tiles hold at most 8 tokens"),
                }
                n0 += nn;
            }
            for ((out, acc), &(s, sum)) in outs.iter_mut().zip(dots.chunks_exact(I2S_ROW_BLOCK)).zip(self.toks) {
                i2s_outputs(&acc[..nb], sum, s, self.scale, &mut out[b0..b0 + nb]);
            }
        }
    }

    /// Tokens `n0 .. n0+N` for the `nb` rows of the block at `b0`, in tiles of `R` rows
    /// (then single rows).
    fn block<const R: usize, const N: usize>(&self, b0: usize, nb: usize, n0: usize, dots: &mut [i32]) {
        let mut r = 0;
        while r + R <= nb {
            self.tile::<R, N>(b0 + r, r, n0, dots);
            r += R;
        }
        while r < nb {
            self.tile::<1, N>(b0 + r, r, n0, dots);
            r += 1;
        }
    }
}

/// The scalar `i2s_output` for a run of rows of one token:
/// `out[r] = f32( f32( f32(acc[r]) − f32(qsum) ) / s ) · scale`, left to right. Lane-wise
/// IEEE operations, so the vectorised loop gives the scalar's bits.
fn i2s_outputs(acc: &[i32], qsum: i32, s: f32, scale: f32, out: &mut [f32]) {
    let qs = qsum as f32;
    for (o, &a) in out.iter_mut().zip(acc) {
        let diff: f32 = a as f32 - qs;
        let unscaled: f32 = diff / s;
        *o = unscaled * scale;
    }
}

fn matmul_i2s(isa: Isa, vnni: Option<Vnni>, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
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
    split_columns(o, m, rows).into_par_iter().enumerate().for_each(|(i, mut outs)| {
        let r0 = i * rows;
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
            job.run::<I2S_ROWS_1, 1>(&mut outs);
        } else {
            job.run::<I2S_ROWS, I2S_TOKENS>(&mut outs);
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

/// `dot16` of rows `r .. r+R` (`row_stride` bytes apart in `w`) with `x` (f16 values as
/// f32), into `out[r ..]`.
fn dot16_tile<const R: usize>(isa: Isa, w: &[u8], row_stride: usize, x: &[f32], r: usize, out: &mut [f32]) {
    let res = isa.dot16_rows::<R>(&w[r * row_stride..], row_stride, x);
    for (dr, &v) in res.iter().enumerate() {
        let row = &w[(r + dr) * row_stride..];
        out[r + dr] = dot16_finish(v, row, x);
    }
}

/// `dot16` of every row of `w` (`out.len()` rows, `row_stride` bytes apart) with `x`.
fn dot16_all<const R: usize>(isa: Isa, w: &[u8], row_stride: usize, x: &[f32], out: &mut [f32]) {
    let n = out.len();
    let mut r = 0;
    while r + R <= n {
        dot16_tile::<R>(isa, w, row_stride, x, r, out);
        r += R;
    }
    while r < n {
        dot16_tile::<1>(isa, w, row_stride, x, r, out);
        r += 1;
    }
}

/// A job over an output tile grid: `rows` computes row tile `r` (R rows) for every token;
/// `run` walks the job's rows in tiles of R and finishes the remainder one row at a time.
trait RowTiles {
    fn rows<const R: usize, const NT: usize>(&self, r: usize, outs: &mut [&mut [f32]]);

    fn run<const R: usize, const NT: usize>(&self, outs: &mut [&mut [f32]]) {
        let n_rows = outs[0].len();
        let mut r = 0;
        while r + R <= n_rows {
            self.rows::<R, NT>(r, outs);
            r += R;
        }
        while r < n_rows {
            self.rows::<1, NT>(r, outs);
            r += 1;
        }
    }
}

/// One dotblas product: the task's weight rows and all activation rows.
struct BlasJob<'a> {
    isa: Isa,
    w: &'a [u8],
    row_stride: usize,
    x: &'a [f32],
    k: usize,
    t: usize,
}

impl BlasJob<'_> {
    fn tile<const R: usize, const N: usize>(&self, r: usize, n0: usize, outs: &mut [&mut [f32]]) {
        let res = self.isa.dotblas_tile::<R, N>(
            &self.w[r * self.row_stride..],
            self.row_stride,
            &self.x[n0 * self.k..],
            self.k,
            self.k,
        );
        for (dr, res_r) in res.iter().enumerate() {
            for (dn, &v) in res_r.iter().enumerate() {
                outs[n0 + dn][r + dr] = v;
            }
        }
    }
}

impl RowTiles for BlasJob<'_> {
    fn rows<const R: usize, const NT: usize>(&self, r: usize, outs: &mut [&mut [f32]]) {
        let mut n0 = 0;
        while n0 < self.t {
            let nn = (self.t - n0).min(NT);
            match nn {
                1 => self.tile::<R, 1>(r, n0, outs),
                2 => self.tile::<R, 2>(r, n0, outs),
                3 => self.tile::<R, 3>(r, n0, outs),
                4 => self.tile::<R, 4>(r, n0, outs),
                5 => self.tile::<R, 5>(r, n0, outs),
                6 => self.tile::<R, 6>(r, n0, outs),
                _ => unreachable!("token tiles hold at most 6 tokens"),
            }
            n0 += nn;
        }
    }
}

fn matmul_f16(isa: Isa, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let w = inputs[0].bytes()?;
    let (m, k) = weight_dims(op, &inputs[0], DType::F16)?;
    let x = inputs[1].f32()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    if w.len() < m * k * 2 || inputs[1].dims != [t, k] || x.len() != t * k || o.len() != t * m {
        return Err(fail(op, format!("weight [{m}, {k}] of {} bytes, x {:?}, output of {}", w.len(), inputs[1].dims, o.len())));
    }
    if m == 0 || t == 0 {
        return Ok(());
    }
    let row_bytes = 2 * k;
    // w: [M, K] f16; x: [T, K]; o: [T, M]. One column: x → f16, dot16; else dotblas.
    if t == 1 {
        let mut x16 = vec![0.0f32; k];
        isa.round_f16(x, &mut x16);
        let long = k >= DOT16_LONG_ROW;
        let rows = rows_per_task(m, row_bytes, if long { DOT16_ROWS_LONG } else { DOT16_ROWS }, TASKS_PER_THREAD);
        o.par_chunks_mut(rows).enumerate().for_each(|(i, orow)| {
            let r0 = i * rows;
            let wt = &w[r0 * row_bytes..(r0 + orow.len()) * row_bytes];
            if long {
                dot16_all::<DOT16_ROWS_LONG>(isa, wt, row_bytes, &x16, orow);
            } else {
                dot16_all::<DOT16_ROWS>(isa, wt, row_bytes, &x16, orow);
            }
        });
    } else {
        let rows = rows_per_task(m, row_bytes, DOTBLAS_ROWS, TASKS_PER_THREAD);
        split_columns(o, m, rows).into_par_iter().enumerate().for_each(|(i, mut outs)| {
            let r0 = i * rows;
            let n_rows = outs[0].len();
            let job = BlasJob { isa, w: &w[r0 * row_bytes..(r0 + n_rows) * row_bytes], row_stride: row_bytes, x, k, t };
            job.run::<DOTBLAS_ROWS, DOTBLAS_TOKENS>(&mut outs);
        });
    }
    Ok(())
}

/// One Q8_0 or Q4_0 product: the task's weight rows and all quantized activation rows.
struct Q8Job<'a> {
    isa: Isa,
    /// Q4_0 weights (else Q8_0).
    q4: bool,
    w: &'a [u8],
    /// Bytes per weight row (`nb` blocks of 34 or 18 bytes).
    w_row: usize,
    a: &'a [u8],
    /// Bytes per activation row (`nb` Q8_0 blocks of 34 bytes).
    a_row: usize,
    nb: usize,
    t: usize,
}

impl Q8Job<'_> {
    fn tile<const R: usize, const N: usize>(&self, r: usize, n0: usize, outs: &mut [&mut [f32]]) {
        let (w, a) = (&self.w[r * self.w_row..], &self.a[n0 * self.a_row..]);
        let res = if self.q4 {
            self.isa.q4_0_dots::<R, N>(w, self.w_row, a, self.a_row, self.nb)
        } else {
            self.isa.q8_0_dots::<R, N>(w, self.w_row, a, self.a_row, self.nb)
        };
        for (dr, res_r) in res.iter().enumerate() {
            for (dn, &v) in res_r.iter().enumerate() {
                outs[n0 + dn][r + dr] = v;
            }
        }
    }
}

impl RowTiles for Q8Job<'_> {
    fn rows<const R: usize, const NT: usize>(&self, r: usize, outs: &mut [&mut [f32]]) {
        let mut n0 = 0;
        while n0 < self.t {
            let nn = (self.t - n0).min(NT);
            match nn {
                1 => self.tile::<R, 1>(r, n0, outs),
                2 => self.tile::<R, 2>(r, n0, outs),
                _ => unreachable!("Q8_0 token tiles hold at most 2 tokens"),
            }
            n0 += nn;
        }
    }
}

fn matmul_q8_0(isa: Isa, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let w = inputs[0].bytes()?;
    let q4 = match inputs[0].dtype {
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
    let nb = k / 32;
    let w_row = nb * if q4 { Q4_0_BLOCK_BYTES } else { Q8_0_BLOCK_BYTES };
    let a_row = nb * Q8_0_BLOCK_BYTES;
    if k % 32 != 0 || w.len() < m * w_row || inputs[1].dims != [t, k] || x.len() != t * k || o.len() != t * m {
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
    let rows = rows_per_task(m, w_row, Q8_0_ROWS, TASKS_PER_THREAD);
    // w: [M] rows of K/32 blocks; o: [T, M].
    split_columns(o, m, rows).into_par_iter().enumerate().for_each(|(i, mut outs)| {
        let r0 = i * rows;
        let n_rows = outs[0].len();
        let job = Q8Job { isa, q4, w: &w[r0 * w_row..(r0 + n_rows) * w_row], w_row, a: &a, a_row, nb, t };
        if t == 1 && k >= DOT16_LONG_ROW {
            job.run::<Q8_0_ROWS_1, 1>(&mut outs);
        } else {
            job.run::<Q8_0_ROWS, Q8_0_TOKENS>(&mut outs);
        }
    });
    Ok(())
}

fn quantize_q8_k(isa: Isa, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
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
    t: usize,
}

impl TqJob<'_> {
    fn tile<const N: usize>(&self, r: usize, n0: usize, outs: &mut [&mut [f32]]) {
        let bs_row = 8 * self.nb;
        let res = self.isa.tq_dots::<N>(
            self.kind,
            &self.w[r * self.w_row..(r + 1) * self.w_row],
            &self.a[n0 * self.a_row..],
            self.a_row,
            &self.bsums[n0 * bs_row..],
            bs_row,
            self.nb,
        );
        for (dn, &v) in res.iter().enumerate() {
            outs[n0 + dn][r] = v;
        }
    }

    fn run(&self, outs: &mut [&mut [f32]]) {
        for r in 0..outs[0].len() {
            let mut n0 = 0;
            while n0 < self.t {
                let nn = (self.t - n0).min(TQ_TOKENS);
                match nn {
                    1 => self.tile::<1>(r, n0, outs),
                    2 => self.tile::<2>(r, n0, outs),
                    3 => self.tile::<3>(r, n0, outs),
                    4 => self.tile::<4>(r, n0, outs),
                    _ => unreachable!("TQ token tiles hold at most 4 tokens"),
                }
                n0 += nn;
            }
        }
    }
}

fn matmul_tq(isa: Isa, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let w = inputs[0].bytes()?;
    let kind = match inputs[0].dtype {
        DType::TQ2_0 => TqKind::Tq2,
        DType::TQ1_0 => TqKind::Tq1,
        other => return Err(fail(op, format!("weight dtype {other}, this backend's kernels take tq2_0 and tq1_0"))),
    };
    let (m, k) = match *inputs[0].dims {
        [m, k] => (m, k),
        _ => return Err(fail(op, format!("weight dims {:?}, expected [M, K]", inputs[0].dims))),
    };
    let xq = inputs[1].bytes()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    let nb = k / Q8K_BLOCK;
    let w_row = nb * kind.block_bytes();
    let a_row = nb * Q8K_BLOCK_BYTES;
    if k % Q8K_BLOCK != 0
        || w.len() < m * w_row
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
    split_columns(o, m, rows).into_par_iter().enumerate().for_each(|(i, mut outs)| {
        let r0 = i * rows;
        let n_rows = outs[0].len();
        let job = TqJob { isa, kind, w: &w[r0 * w_row..(r0 + n_rows) * w_row], w_row, a: xq, a_row, bsums: &bsums, nb, t };
        job.run(&mut outs);
    });
    Ok(())
}

/// Causal attention over the f16 KV cache, the scalar backend's `attention` step for step
/// (docs/format.md §4.2–4.4): store f16(k), f16(v) at the step's positions; per (token,
/// query head) `kq[j] = dot16(K16[g][j], f16(q))·scale` for `j ≤ p`, −inf up to `n_kv`
/// (`p + 1` rounded up to 32); softmax; then `o[d] = dot16(V16[g][d], f16(P))` for one
/// token, `dotblas(V16[g][d], P)` for more.
#[allow(clippy::too_many_arguments)]
fn attention(
    isa: Isa,
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
    let o = out.f32()?;
    let kv_len = n_head_kv * hd;
    if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) || hd == 0 {
        return Err(fail(op, format!("{n_head} heads, {n_head_kv} KV heads, head dim {hd}")));
    }
    if q.len() != t * n_head * hd || kn.len() != t * kv_len || vn.len() != t * kv_len || o.len() != t * n_head * hd {
        return Err(fail(op, format!("q {}, k {}, v {}, output {} for {t} tokens", q.len(), kn.len(), vn.len(), o.len())));
    }
    if kv.k.len() < kv_len * stride || kv.v.len() < kv_len * stride {
        return Err(fail(op, format!("KV cache of {} / {} values, expected {}", kv.k.len(), kv.v.len(), kv_len * stride)));
    }
    for &p in pos {
        match usize::try_from(p) {
            Ok(p) if (p + 1).div_ceil(32) * 32 <= stride => {}
            _ => return Err(fail(op, format!("position {p} outside the KV cache of {stride}"))),
        }
    }
    // 1. Store f16(k), f16(v) at the step's positions. k: [Hkv][stride][hd], v: [Hkv][hd][stride].
    let mut k16 = vec![f16::ZERO; kv_len];
    let mut v16 = vec![f16::ZERO; kv_len];
    for (i, &p) in pos.iter().enumerate() {
        let p = p as usize;
        isa.to_f16(&kn[i * kv_len..(i + 1) * kv_len], &mut k16);
        isa.to_f16(&vn[i * kv_len..(i + 1) * kv_len], &mut v16);
        for g in 0..n_head_kv {
            kv.k[(g * stride + p) * hd..(g * stride + p + 1) * hd].copy_from_slice(&k16[g * hd..(g + 1) * hd]);
            for d in 0..hd {
                kv.v[(g * hd + d) * stride + p] = v16[g * hd + d];
            }
        }
    }
    let kb: &[u8] = bytemuck::cast_slice(&kv.k[..kv_len * stride]);
    let vb: &[u8] = bytemuck::cast_slice(&kv.v[..kv_len * stride]);
    let group = n_head / n_head_kv;
    // 2. Attend. o: [T, H·hd]; work is split over (token, head) pairs.
    o.par_chunks_mut(hd).enumerate().for_each(|(th, orow)| {
        let (i, hq) = (th / n_head, th % n_head);
        let g = hq / group;
        let p = pos[i] as usize;
        let n_kv = (p + 1).div_ceil(32) * 32;
        let mut q16 = vec![0.0f32; hd];
        isa.round_f16(&q[(i * n_head + hq) * hd..(i * n_head + hq + 1) * hd], &mut q16);
        // Scores: key rows j ≤ p of KV head g, hd f16 each.
        let keys = &kb[g * stride * hd * 2..(g * stride + p + 1) * hd * 2];
        let mut w = vec![f32::NEG_INFINITY; n_kv];
        dot16_all::<4>(isa, keys, hd * 2, &q16, &mut w[..p + 1]);
        for s in &mut w[..p + 1] {
            *s *= scale;
        }
        isa.softmax(&mut w);
        // Values: row d of KV head g holds position j at element j (stride apart).
        let vals = &vb[g * hd * stride * 2..((g + 1) * hd - 1) * stride * 2 + n_kv * 2];
        if t == 1 {
            let mut p16 = vec![0.0f32; n_kv];
            isa.round_f16(&w, &mut p16);
            dot16_all::<2>(isa, vals, stride * 2, &p16, orow);
        } else {
            let job = BlasJob { isa, w: vals, row_stride: stride * 2, x: &w, k: n_kv, t: 1 };
            let mut outs = [orow];
            job.run::<2, 1>(&mut outs);
        }
    });
    Ok(())
}

fn elementwise(isa: Isa, op: &Op, kind: Elementwise, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
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
