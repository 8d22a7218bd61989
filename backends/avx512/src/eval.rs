//! The AVX-512 backend's kernels as the executor calls them: input checks, the split of work
//! over output rows and the token tiles (the shared driver of [`graph::tiling`]), and the
//! calls into the SIMD code of [`crate::x86_64`]. No `unsafe` here.
//!
//! Conventions are the scalar backend's (`backend-scalar/src/lib.rs`): q8_tok rows are
//! `K` i8, the f32 scale, the i32 sum; weights arrive in their file layout. Bad sizes are
//! errors, never panics.

use graph::backend::{q8tok_row_bytes, TensorMut, TensorRef};
use graph::tiles;
use graph::tiling::{drive, par_tasks, rows_per_task, store, TileJob};
use graph::{DType, Error, Result};
use rayon::prelude::*;

use crate::tiles::*;
use crate::x86_64::amx::{self, BLOCK as AMX_BLOCK};
use crate::x86_64::i2s::{permute_acts, permuted_len};
use crate::x86_64::{Amx, Isa};

fn fail(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{op}: {msg}"))
}

/// Tasks per thread of the I2_S matmul (the AVX2 backend's measured choice: a task is a run
/// of consecutive rows streamed from memory, and fewer, longer runs stream better).
const I2S_TASKS_PER_THREAD: usize = 2;

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

/// The operands of one I2_S product, checked.
struct I2sOperands<'a> {
    w: &'a [u8],
    m: usize,
    k: usize,
    scale: f32,
    /// Per token: (s, Σq).
    toks: Vec<(f32, i32)>,
    /// Per token: whether its i16 lanes provably cannot wrap.
    no_wrap: Vec<bool>,
    /// Per token: its activations in pair order, `permuted_len(k)` bytes each.
    xp: Vec<u8>,
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
        let scale = graph::quant::i2s_scale(w, m * k).ok_or_else(|| fail(op, "I2_S tensor too short"))?;
        let toks = xq
            .chunks_exact(stride)
            .map(|r| {
                let s = f32::from_le_bytes([r[k], r[k + 1], r[k + 2], r[k + 3]]);
                let sum = i32::from_le_bytes([r[k + 4], r[k + 5], r[k + 6], r[k + 7]]);
                (s, sum)
            })
            .collect();
        let kp = permuted_len(k);
        let mut xp = vec![0u8; t * kp];
        let mut no_wrap = vec![false; t];
        if kp > 0 {
            xp.par_chunks_exact_mut(kp).zip(xq.par_chunks_exact(stride)).zip(no_wrap.par_iter_mut()).for_each(
                |((dst, row), ok)| {
                    permute_acts(row, k, dst);
                    *ok = isa.i2s_cannot_wrap(row, k);
                },
            );
        }
        Ok(I2sOperands { w, m, k, scale, toks, no_wrap, xp })
    }
}

/// One I2_S product on 512-bit tiles: weight codes of the task's rows, permuted activations.
struct I2sJob<'a> {
    isa: Isa,
    /// The task's rows of codes, `row_bytes = K/4` apart.
    codes: &'a [u8],
    row_bytes: usize,
    k: usize,
    /// Permuted activations, `xp_stride` apart.
    xp: &'a [u8],
    xp_stride: usize,
    toks: &'a [(f32, i32)],
    no_wrap: &'a [bool],
    scale: f32,
}

impl TileJob for I2sJob<'_> {
    type Acc = i32;

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [i32], block: usize) {
        let (codes, xp) = (&self.codes[r * self.row_bytes..], &self.xp[n0 * self.xp_stride..]);
        let vnni = self.no_wrap[n0..n0 + nn].iter().all(|&ok| ok);
        tiles!(nn; 1, 2, 3, 4 => |N| {
            let res = if vnni {
                self.isa.i2s_dots_vnni::<R, N>(codes, self.row_bytes, xp, self.xp_stride, self.k)
            } else {
                self.isa.i2s_dots::<R, N>(codes, self.row_bytes, xp, self.xp_stride, self.k)
            };
            store(res, r_local, n0, acc, block)
        })
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[i32], block: usize, outs: &mut [&mut [f32]]) {
        for ((out, acc), &(s, sum)) in outs.iter_mut().zip(acc.chunks_exact(block)).zip(self.toks) {
            i2s_outputs(&acc[..nb], sum, s, self.scale, &mut out[b0..b0 + nb]);
        }
    }
}

/// `o [t, m]` on the 512-bit tiles for tokens `toks` (`xp` their permuted rows).
#[allow(clippy::too_many_arguments)]
fn i2s_tiles(isa: Isa, p: &I2sOperands<'_>, xp: &[u8], toks: &[(f32, i32)], no_wrap: &[bool], o: &mut [f32]) {
    let (m, k, t) = (p.m, p.k, toks.len());
    let row_bytes = k / 4;
    let rows = rows_per_task(m, row_bytes, 4, I2S_TASKS_PER_THREAD);
    // w: [M, K/4] codes; xp: [T] permuted rows; o: [T, M]. Tasks own disjoint output columns.
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let job = I2sJob {
            isa,
            codes: &p.w[r0 * row_bytes..(r0 + n_rows) * row_bytes],
            row_bytes,
            k,
            xp,
            xp_stride: permuted_len(k),
            toks,
            no_wrap,
            scale: p.scale,
        };
        if t == 1 {
            drive::<_, I2S_ROWS_1>(&job, 1, outs);
        } else {
            drive::<_, I2S_ROWS>(&job, I2S_TOKENS, outs);
        }
    });
}

/// `o [t, m]` on AMX tiles, then the tokens that could wrap an i16 lane again on the exact
/// 512-bit tiles.
fn i2s_amx(amx: Amx, p: &I2sOperands<'_>, o: &mut [f32]) {
    let (m, k, t) = (p.m, p.k, p.toks.len());
    let (row_bytes, kp) = (k / 4, permuted_len(k));
    // B tiles: blocks of 16 tokens, one more zero block when their count is odd (the
    // kernel takes two per call).
    let bb = amx::b_block_bytes(k);
    let nb16 = t.div_ceil(16);
    let mut bp = vec![0u8; nb16.next_multiple_of(2) * bb];
    amx::pack_b(&p.xp, kp, t, k, &mut bp[..nb16 * bb]);
    let rows = rows_per_task(m, row_bytes, AMX_BLOCK, I2S_TASKS_PER_THREAD);
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let mut u = vec![0u8; AMX_BLOCK * kp];
        let mut col = [0i32; AMX_BLOCK];
        for b in (0..n_rows).step_by(AMX_BLOCK) {
            let nb = AMX_BLOCK.min(n_rows - b);
            amx.unpack_rows(&p.w[(r0 + b) * row_bytes..(r0 + b + nb) * row_bytes], row_bytes, nb, k, &mut u);
            for j in (0..t).step_by(AMX_BLOCK) {
                let blk = j / 16;
                let c = amx.block_dots(&u, &bp[blk * bb..(blk + 1) * bb], &bp[(blk + 1) * bb..(blk + 2) * bb], k);
                for n in j..(j + AMX_BLOCK).min(t) {
                    for (r, v) in col.iter_mut().enumerate().take(nb) {
                        *v = c[r][n - j];
                    }
                    let (s, sum) = p.toks[n];
                    i2s_outputs(&col[..nb], sum, s, p.scale, &mut outs[n][b..b + nb]);
                }
            }
        }
    });
    // Tokens the proof does not cover: their exact products, written over the AMX ones.
    let bad: Vec<usize> = (0..t).filter(|&n| !p.no_wrap[n]).collect();
    if bad.is_empty() {
        return;
    }
    let xp: Vec<u8> = bad.iter().flat_map(|&n| p.xp[n * kp..(n + 1) * kp].iter().copied()).collect();
    let toks: Vec<(f32, i32)> = bad.iter().map(|&n| p.toks[n]).collect();
    let mut tmp = vec![0.0f32; bad.len() * m];
    i2s_tiles(amx.isa, p, &xp, &toks, &vec![false; bad.len()], &mut tmp);
    for (src, &n) in tmp.chunks_exact(m).zip(&bad) {
        o[n * m..(n + 1) * m].copy_from_slice(src);
    }
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
        _ => i2s_tiles(isa, &p, &p.xp, &p.toks, &p.no_wrap, o),
    }
    Ok(())
}
