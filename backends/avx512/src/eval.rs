//! The AVX-512 backend's kernels as the executor calls them: input checks, the split of work
//! over output rows and the token tiles (the shared driver of [`graph::tiling`]), and the
//! calls into the SIMD code of [`crate::x86_64`]. No `unsafe` here.
//!
//! Conventions are the scalar backend's (`backend-scalar/src/lib.rs`): q8_tok rows are
//! `K` i8, the f32 scale, the i32 sum; weights arrive in their file layout. Bad sizes are
//! errors, never panics.

use std::cell::RefCell;
use std::sync::Arc;

use graph::backend::{q8tok_row_bytes, TensorMut, TensorRef, WeightPrep};
use graph::tiles;
use graph::tiling::{copy_block, drive, par_tasks, rows_per_task, store, TileJob};
use graph::{DType, Error, Result};
use rayon::prelude::*;

use crate::tiles::*;
use crate::x86_64::amx::{self, BLOCK as AMX_BLOCK};
use crate::x86_64::i2s::{prepare_r16, r16_len, ROWS};
use crate::x86_64::norm::ROWS as NORM_ROWS;
use crate::x86_64::{Amx, Isa};

pub(crate) fn fail(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{op}: {msg}"))
}

/// Tasks per thread of the F16 and Q8_0 products (small, so a late or slowed thread costs
/// little; the AVX2 backend's choice).
const TASKS_PER_THREAD: usize = 8;
/// Tasks per thread of the I2_S matmul (the AVX2 backend's measured choice: a task is a run
/// of consecutive rows streamed from memory, and fewer, longer runs stream better).
const I2S_TASKS_PER_THREAD: usize = 2;

/// The weight layout of this backend's I2_S kernels: `i2s_r16` (rows interleaved in blocks
/// of 16, `x86_64::i2s` module notes), prepared once when a program binds its weights.
pub(crate) fn i2s_r16_prep() -> WeightPrep {
    WeightPrep {
        input: 0,
        layout: "i2s_r16",
        len: |dims| match *dims {
            [m, k] => r16_len(m, k),
            _ => None,
        },
        prepare: Arc::new(|src: &[u8], dims: &[usize], dst: &mut [u8]| {
            let &[m, k] = dims else { return Err(fail("MatMulI2S", format!("weight dims {dims:?}, expected [M, K]"))) };
            if src.len() < m * k / 4 + 32 || r16_len(m, k) != Some(dst.len()) {
                return Err(fail("MatMulI2S", format!("weight [{m}, {k}] of {} bytes, prepared {} bytes", src.len(), dst.len())));
            }
            prepare_r16(src, m, k, dst);
            Ok(())
        }),
    }
}

/// The operands of one I2_S product, checked.
struct I2sOperands<'a> {
    /// The weight in the `i2s_r16` layout.
    w: &'a [u8],
    m: usize,
    k: usize,
    scale: f32,
    /// q8_tok rows, `stride = K + 8` apart.
    xq: &'a [u8],
    stride: usize,
    /// Per token: (s, Σq).
    toks: Vec<(f32, i32)>,
    /// Per token: whether its i16 lanes provably cannot wrap.
    no_wrap: Vec<bool>,
}

impl<'a> I2sOperands<'a> {
    fn new(isa: Isa, inputs: &[TensorRef<'a>], t: usize, m_out: usize) -> Result<I2sOperands<'a>> {
        let op = "MatMulI2S";
        let w = inputs[0].bytes()?;
        if inputs[0].dtype != DType::I2S {
            return Err(fail(op, format!("weight dtype {}, this backend's kernel takes i2_s", inputs[0].dtype)));
        }
        let [m, k] = *inputs[0].dims else {
            return Err(fail(op, format!("weight dims {:?}, expected [M, K]", inputs[0].dims)));
        };
        let xq = inputs[1].bytes()?;
        let stride = q8tok_row_bytes(k);
        if k % 128 != 0 || inputs[1].dims != [t, k] || xq.len() != t * stride || m_out != t * m {
            return Err(fail(
                op,
                format!("weight [{m}, {k}], activations {:?} ({} bytes), output of {m_out}", inputs[1].dims, xq.len()),
            ));
        }
        if r16_len(m, k) != Some(w.len()) {
            return Err(fail(
                op,
                format!("weight of {} bytes: this kernel reads the i2s_r16 layout ({:?} bytes)", w.len(), r16_len(m, k)),
            ));
        }
        let scale = graph::quant::i2s_scale(w, m.div_ceil(ROWS) * ROWS * k).ok_or_else(|| fail(op, "I2_S tensor too short"))?;
        let toks = xq
            .chunks_exact(stride)
            .map(|r| {
                let s = f32::from_le_bytes([r[k], r[k + 1], r[k + 2], r[k + 3]]);
                let sum = i32::from_le_bytes([r[k + 4], r[k + 5], r[k + 6], r[k + 7]]);
                (s, sum)
            })
            .collect();
        let no_wrap = xq.par_chunks_exact(stride).map(|row| isa.i2s_cannot_wrap(row, k)).collect();
        Ok(I2sOperands { w, m, k, scale, xq, stride, toks, no_wrap })
    }

    /// The 16-row block of the weight that holds row `r`.
    fn block(&self, r: usize) -> &'a [u8] {
        let bytes = ROWS * self.k / 4;
        &self.w[r / ROWS * bytes..(r / ROWS + 1) * bytes]
    }
}

/// One I2_S product on 512-bit tiles of 16 rows (the blocks of the layout).
struct I2sJob<'a, 'p> {
    isa: Isa,
    p: &'p I2sOperands<'a>,
    /// The task's first row.
    r0: usize,
    /// Activation rows, `stride` apart, with their (s, Σq) and no-wrap flags.
    xq: &'p [u8],
    toks: &'p [(f32, i32)],
    no_wrap: &'p [bool],
}

impl TileJob for I2sJob<'_, '_> {
    type Acc = i32;

    /// `R` is 16 (a whole block) or 1 (a row of the block that ends the matrix).
    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [i32], block: usize) {
        let (row, p) = (self.r0 + r, self.p);
        let (blk, off) = (p.block(row), row % ROWS);
        let put = |acc: &mut [i32], n: usize, res: &[i32; ROWS]| {
            for dr in 0..R {
                acc[n * block + r_local + dr] = res[off + dr];
            }
        };
        if self.no_wrap[n0..n0 + nn].iter().all(|&ok| ok) {
            let xq = &self.xq[n0 * p.stride..];
            tiles!(nn; 1, 2, 3, 4 => |N| {
                let res = self.isa.r16_dots_vnni::<N>(blk, xq, p.stride, p.k);
                for (dn, res_n) in res.iter().enumerate() {
                    put(acc, n0 + dn, res_n);
                }
            })
        } else {
            for n in n0..n0 + nn {
                put(acc, n, &self.isa.r16_dots_exact(blk, &self.xq[n * p.stride..], p.k));
            }
        }
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[i32], block: usize, outs: &mut [&mut [f32]]) {
        for ((out, acc), &(s, sum)) in outs.iter_mut().zip(acc.chunks_exact(block)).zip(self.toks) {
            graph::quant::i2s_outputs(&acc[..nb], sum, s, self.p.scale, &mut out[b0..b0 + nb]);
        }
    }
}

/// `o [t, m]` on the 512-bit tiles for the tokens of `xq` (`toks`, `no_wrap` theirs).
fn i2s_tiles(isa: Isa, p: &I2sOperands<'_>, xq: &[u8], toks: &[(f32, i32)], no_wrap: &[bool], o: &mut [f32]) {
    let t = toks.len();
    let rows = rows_per_task(p.m, p.k / 4, ROWS, I2S_TASKS_PER_THREAD);
    // o: [T, M]; tasks own disjoint output columns, whole blocks of 16 rows.
    par_tasks(o, p.m, rows, |r0, outs| {
        let job = I2sJob { isa, p, r0, xq, toks, no_wrap };
        if t == 1 {
            drive::<_, ROWS>(&job, 1, outs);
        } else {
            drive::<_, ROWS>(&job, I2S_TOKENS, outs);
        }
    });
}

/// `o [t, m]` on AMX tiles, then the tokens that could wrap an i16 lane again on the exact
/// kernel.
fn i2s_amx(amx: Amx, p: &I2sOperands<'_>, o: &mut [f32]) {
    let (m, k, t) = (p.m, p.k, p.toks.len());
    // The activations without their scale and sum, in whole blocks of 32 rows (zero past t),
    // in this thread's reused scratch.
    with_scratch(&AMX_A, t.next_multiple_of(AMX_BLOCK) * k, |xa| {
        let (rows_in, pad) = xa.split_at_mut(t * k);
        pad.fill(0);
        rows_in
            .par_chunks_exact_mut(k)
            .zip(p.xq.par_chunks_exact(p.stride))
            .for_each(|(dst, row)| dst.copy_from_slice(&row[..k]));
        i2s_amx_tiles(amx, p, xa, o);
    });
    // Tokens the proof does not cover: their exact products, written over the AMX ones.
    let bad: Vec<usize> = (0..t).filter(|&n| !p.no_wrap[n]).collect();
    if bad.is_empty() {
        return;
    }
    let xq: Vec<u8> = bad.iter().flat_map(|&n| p.xq[n * p.stride..(n + 1) * p.stride].iter().copied()).collect();
    let toks: Vec<(f32, i32)> = bad.iter().map(|&n| p.toks[n]).collect();
    let mut tmp = vec![0.0f32; bad.len() * m];
    i2s_tiles(amx.isa, p, &xq, &toks, &vec![false; bad.len()], &mut tmp);
    for (src, &n) in tmp.chunks_exact(m).zip(&bad) {
        o[n * m..(n + 1) * m].copy_from_slice(src);
    }
}

thread_local! {
    /// The AMX GEMM's activation rows (on the calling thread) and B tiles (on each worker),
    /// reused from call to call (a step's rows at the widest `k`, two B blocks; grown, never
    /// shrunk).
    /// A fresh zeroed buffer of up to a few megabytes per call meant fresh pages to fault
    /// in; reusing them moved pp128 on the 2B shape from 376–399 to 460–503 tok/s (two
    /// threads, Xeon with AMX, alternated runs).
    static AMX_A: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static AMX_B: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes of this thread's scratch `key` (grown as needed, never shrunk;
/// its contents are whatever the last user left).
fn with_scratch<R>(key: &'static std::thread::LocalKey<RefCell<Vec<u8>>>, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0);
            }
            f(&mut v[..len])
        }
        // Re-entered on this thread (a nested call while the scratch is in use): a fresh buffer.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// The AMX part of [`i2s_amx`]: `xa` holds the activations in whole blocks of 32 rows.
fn i2s_amx_tiles(amx: Amx, p: &I2sOperands<'_>, xa: &[u8], o: &mut [f32]) {
    let (m, k, t) = (p.m, p.k, p.toks.len());
    let bb = amx::b_block_bytes(k);
    let rows = rows_per_task(m, k / 4, AMX_BLOCK, I2S_TASKS_PER_THREAD);
    par_tasks(o, m, rows, |r0, outs| {
        with_scratch(&AMX_B, 2 * bb, |b| {
            let n_rows = outs[0].len();
            for r in (0..n_rows).step_by(AMX_BLOCK) {
                let nb = AMX_BLOCK.min(n_rows - r);
                let (b0, b1) = b.split_at_mut(bb);
                amx.unpack_b(p.block(r0 + r), k, b0);
                if nb > ROWS {
                    amx.unpack_b(p.block(r0 + r + ROWS), k, b1);
                }
                for j in (0..t).step_by(AMX_BLOCK) {
                    let c = amx.block_dots(&xa[j * k..], k, &b[..bb], &b[bb..], k);
                    for n in j..(j + AMX_BLOCK).min(t) {
                        let (s, sum) = p.toks[n];
                        graph::quant::i2s_outputs(&c[n - j][..nb], sum, s, p.scale, &mut outs[n][r..r + nb]);
                    }
                }
            }
        })
    });
}

pub(crate) fn matmul_i2s(isa: Isa, amx: Option<Amx>, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    let p = I2sOperands::new(isa, inputs, t, o.len())?;
    if p.m == 0 || t == 0 {
        return Ok(());
    }
    match amx {
        Some(amx) if t >= AMX_MIN_TOKENS => i2s_amx(amx, &p, o),
        _ => i2s_tiles(isa, &p, p.xq, &p.toks, &p.no_wrap, o),
    }
    Ok(())
}

/// `dot16` (with its f64 tail) of the task's weight rows with f16-rounded token rows.
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

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let (w, x) = (&self.w[r * self.row_stride..], &self.x[n0 * self.x_stride..]);
        tiles!(nn; 1, 2, 3, 4 => |N| store(self.isa.dot16_tile::<R, N>(w, self.row_stride, x, self.x_stride, self.k), r_local, n0, acc, block))
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }
}

/// `dotblas` of the task's weight rows with f32 token rows.
pub(crate) struct BlasJob<'a> {
    pub isa: Isa,
    pub w: &'a [u8],
    pub row_stride: usize,
    pub x: &'a [f32],
    pub x_stride: usize,
    pub k: usize,
}

impl TileJob for BlasJob<'_> {
    type Acc = f32;

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let (w, x) = (&self.w[r * self.row_stride..], &self.x[n0 * self.x_stride..]);
        tiles!(nn; 1, 2, 3, 4 => |N| store(self.isa.dotblas_tile::<R, N>(w, self.row_stride, x, self.x_stride, self.k), r_local, n0, acc, block))
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }
}

/// `[M, K]` of a weight input of dtype `want`.
fn weight_dims(op: &str, w: &TensorRef<'_>, want: DType) -> Result<(usize, usize)> {
    match (w.dims, w.dtype == want) {
        (&[m, k], true) => Ok((m, k)),
        _ => Err(fail(op, format!("weight {} {:?}, this backend's kernel takes {want} [M, K]", w.dtype, w.dims))),
    }
}

/// F16 weights × f32 rows `x [T, K]`: each row in the form its sequence's row count calls
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
    let (ones, many): (Vec<usize>, Vec<usize>) = (0..t).partition(|&i| single[i]);
    for (rows, dot16) in [(ones, true), (many, false)] {
        if rows.is_empty() {
            continue;
        }
        let n = rows.len();
        // The form's rows: f16-rounded for dot16, else the rows themselves (gathered unless
        // they are all of x).
        let xs: Vec<f32> = if dot16 {
            let mut x16 = vec![0.0f32; n * k];
            for (dst, &i) in x16.chunks_exact_mut(k.max(1)).zip(&rows) {
                isa.round_f16(&x[i * k..(i + 1) * k], dst);
            }
            x16
        } else if n == t {
            Vec::new()
        } else {
            rows.iter().flat_map(|&i| x[i * k..(i + 1) * k].iter().copied()).collect()
        };
        let xr: &[f32] = if xs.is_empty() { x } else { &xs };
        let mut tmp = if n == t { Vec::new() } else { vec![0.0f32; n * m] };
        let dst: &mut [f32] = if n == t { &mut *o } else { &mut tmp };
        let row_bytes = 2 * k;
        let long = k >= DOT16_LONG_ROW;
        let tile_rows = match (dot16, long) {
            (true, true) => DOT16_ROWS_LONG,
            (true, false) => DOT16_ROWS,
            (false, _) => DOTBLAS_ROWS,
        };
        let per_task = rows_per_task(m, row_bytes, tile_rows, TASKS_PER_THREAD);
        par_tasks(dst, m, per_task, |r0, outs| {
            let w = &w[r0 * row_bytes..(r0 + outs[0].len()) * row_bytes];
            match (dot16, long) {
                (true, true) => drive::<_, DOT16_ROWS_LONG>(
                    &Dot16Job { isa, w, row_stride: row_bytes, x: xr, x_stride: k, k },
                    DOT16_TOKENS_LONG,
                    outs,
                ),
                (true, false) => {
                    drive::<_, DOT16_ROWS>(&Dot16Job { isa, w, row_stride: row_bytes, x: xr, x_stride: k, k }, 1, outs)
                }
                (false, _) => drive::<_, DOTBLAS_ROWS>(
                    &BlasJob { isa, w, row_stride: row_bytes, x: xr, x_stride: k, k },
                    DOTBLAS_TOKENS.min(n),
                    outs,
                ),
            }
        });
        if n != t {
            for (src, &i) in tmp.chunks_exact(m).zip(&rows) {
                o[i * m..(i + 1) * m].copy_from_slice(src);
            }
        }
    }
    Ok(())
}

/// One Q8_0 product: the task's weight rows and all quantized activation rows.
struct Q8Job<'a> {
    isa: Isa,
    w: &'a [u8],
    w_row: usize,
    a: &'a [u8],
    a_row: usize,
    nb: usize,
}

impl TileJob for Q8Job<'_> {
    type Acc = f32;

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let (w, a) = (&self.w[r * self.w_row..], &self.a[n0 * self.a_row..]);
        tiles!(nn; 1, 2 => |N| store(self.isa.q8_0_dots::<R, N>(w, self.w_row, a, self.a_row, self.nb), r_local, n0, acc, block))
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }
}

/// Q8_0 weights × f32 rows: the rows quantized to Q8_0 blocks, then block dot tiles.
pub(crate) fn matmul_q8_0(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "MatMulQ8_0";
    let w = inputs[0].bytes()?;
    let (m, k) = weight_dims(op, &inputs[0], DType::Q8_0)?;
    let x = inputs[1].f32()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    let Some(row) = DType::Q8_0.row_bytes(k) else {
        return Err(fail(op, format!("rows of {k} are not whole blocks of 32")));
    };
    if w.len() < m * row || inputs[1].dims != [t, k] || x.len() != t * k || o.len() != t * m {
        return Err(fail(op, format!("weight [{m}, {k}] of {} bytes, x {:?}, output of {}", w.len(), inputs[1].dims, o.len())));
    }
    if m == 0 || t == 0 {
        return Ok(());
    }
    // x: [T, K] → a: [T] rows of K/32 Q8_0 activation blocks.
    let mut a = vec![0u8; t * row];
    if k > 0 {
        a.par_chunks_exact_mut(row).zip(x.par_chunks_exact(k)).for_each(|(arow, xrow)| isa.quantize_q8_0_act(xrow, arow));
    }
    let long1 = t == 1 && k >= DOT16_LONG_ROW;
    let per_task = rows_per_task(m, row, if long1 { Q8_0_ROWS_1 } else { Q8_0_ROWS }, TASKS_PER_THREAD);
    par_tasks(o, m, per_task, |r0, outs| {
        let job = Q8Job { isa, w: &w[r0 * row..(r0 + outs[0].len()) * row], w_row: row, a: &a, a_row: row, nb: k / 32 };
        if long1 {
            drive::<_, Q8_0_ROWS_1>(&job, 1, outs);
        } else {
            drive::<_, Q8_0_ROWS>(&job, Q8_0_TOKENS, outs);
        }
    });
    Ok(())
}

/// RMSNorm over `[rows, d]`: tasks of eight rows, whose squared sums run side by side.
pub(crate) fn rms_norm(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, eps: f32) -> Result<()> {
    let (x, w) = (inputs[0].f32()?, inputs[1].f32()?);
    let d = w.len();
    let o = out.f32()?;
    if o.len() != x.len() || (d == 0 && !x.is_empty()) || (d > 0 && x.len() % d != 0) {
        return Err(fail("RmsNorm", format!("x of {} elements, weight of {d}, output of {}", x.len(), o.len())));
    }
    if x.is_empty() {
        return Ok(());
    }
    let group = NORM_ROWS * d;
    o.par_chunks_mut(group).zip(x.par_chunks(group)).for_each(|(o, x)| isa.rms_norm_rows(x, w, eps, o));
    Ok(())
}

/// QuantizeI8 over `[T, K]`: one q8_tok row (K i8, f32 scale, i32 sum) per token.
pub(crate) fn quantize_i8(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let x = inputs[0].f32()?;
    let k = *inputs[0].dims.last().unwrap_or(&1);
    let o = out.bytes()?;
    let rows = x.len().checked_div(k).unwrap_or(0);
    if rows * k != x.len() || o.len() != rows * q8tok_row_bytes(k) {
        return Err(fail("QuantizeI8", format!("x of {} elements in rows of {k}, output of {} bytes", x.len(), o.len())));
    }
    if rows == 0 {
        return Ok(());
    }
    o.par_chunks_mut(q8tok_row_bytes(k)).zip(x.par_chunks(k)).for_each(|(row, x)| {
        let (q, tail) = row.split_at_mut(k);
        let (s, sum) = isa.quantize_i8(x, bytemuck::cast_slice_mut(q));
        tail[..4].copy_from_slice(&s.to_le_bytes());
        tail[4..].copy_from_slice(&sum.to_le_bytes());
    });
    Ok(())
}
