//! The NEON backend's kernels as the executor calls them: input checks, the split of work
//! over output rows (rayon) and the token tiles of every matmul (the shared driver of
//! [`graph::tiling`]), and the calls into the SIMD code of [`crate::aarch64`]. No `unsafe`
//! here. Conventions are the scalar backend's (`backend-scalar/src/lib.rs`).

use graph::backend::{q8tok_row_bytes, TensorMut, TensorRef};
use graph::tiles;
use graph::tiling::{copy_block, drive, par_tasks, rows_per_task, store, TileJob};
use graph::{DType, Error, Result};
use rayon::prelude::*;

use crate::aarch64::Isa;
use crate::tiles::*;

pub(crate) fn fail(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{op}: {msg}"))
}

/// Tasks per thread of the F16 products.
const TASKS_PER_THREAD: usize = 8;
/// Tasks per thread of the I2_S matmul (the AVX2 backend's measured choice: a task is a run
/// of consecutive rows streamed from memory, and fewer, longer runs stream better).
const I2S_TASKS_PER_THREAD: usize = 2;

pub(crate) fn quantize_i8(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "QuantizeI8";
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
    /// Per token: whether its i16 lanes provably cannot wrap, so that `sdot` is exact.
    no_wrap: &'a [bool],
    scale: f32,
}

impl TileJob for I2sJob<'_> {
    type Acc = i32;

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [i32], block: usize) {
        let (codes, xq) = (&self.codes[r * self.row_bytes..], &self.xq[n0 * self.stride..]);
        let sdot = self.no_wrap[n0..n0 + nn].iter().all(|&ok| ok);
        tiles!(nn; 1, 2, 3, 4 => |N| {
            store(self.isa.i2s_dots::<R, N>(sdot, codes, self.row_bytes, xq, self.stride, self.k), r_local, n0, acc, block)
        })
    }

    fn finish(&self, b0: usize, nb: usize, acc: &[i32], block: usize, outs: &mut [&mut [f32]]) {
        for ((out, acc), &(s, sum)) in outs.iter_mut().zip(acc.chunks_exact(block)).zip(self.toks) {
            graph::quant::i2s_outputs(&acc[..nb], sum, s, self.scale, &mut out[b0..b0 + nb]);
        }
    }
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

pub(crate) fn matmul_i2s(isa: Isa, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>) -> Result<()> {
    let op = "MatMulI2S";
    let w = inputs[0].bytes()?;
    let (m, k) = weight_dims(op, &inputs[0], DType::I2S)?;
    let xq = inputs[1].bytes()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let stride = q8tok_row_bytes(k);
    let o = out.f32()?;
    if k % 128 != 0 || inputs[1].dims != [t, k] || xq.len() != t * stride || o.len() != t * m || w.len() < m * k / 4 {
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
    let no_wrap: Vec<bool> = match isa.dotprod() {
        true => xq.chunks_exact(stride).map(|r| isa.i2s_cannot_wrap(r, k)).collect(),
        false => vec![false; t],
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

/// `dot16` (`blas: false`, tokens of f16-rounded values) or `dotblas` (f32 tokens) of the
/// task's f16 weight rows with token rows.
pub(crate) struct F16Job<'a> {
    pub isa: Isa,
    pub blas: bool,
    /// The task's weight rows (f16), `row_stride` bytes apart.
    pub w: &'a [u8],
    pub row_stride: usize,
    /// Token rows, `x_stride` f32 apart, `k` used.
    pub x: &'a [f32],
    pub x_stride: usize,
    pub k: usize,
}

impl TileJob for F16Job<'_> {
    type Acc = f32;

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }

    /// One token at a time (the tile's rows share each activation load).
    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        let w = &self.w[r * self.row_stride..];
        for n in n0..n0 + nn {
            let x = &self.x[n * self.x_stride..n * self.x_stride + self.k];
            let res = match self.blas {
                false => self.isa.dot16_rows::<R>(w, self.row_stride, x, self.k),
                true => self.isa.dotblas_rows::<R>(w, self.row_stride, x, self.k),
            };
            store(res.map(|v| [v]), r_local, n, acc, block);
        }
    }
}

/// F16 weights × f32 rows `x [R, K]`: each row in the form its sequence's row count calls
/// for (`dot16` on f16(x) for a sequence's only row, else `dotblas`).
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
    // Per row: f16-rounded for dot16 (its sequence's only row), as it is for dotblas.
    let single: Vec<bool> = graph::rows_per_seq(seqs).iter().map(|&n| n == 1).collect();
    let mut xs = x.to_vec();
    for (row, _) in xs.chunks_exact_mut(k.max(1)).zip(&single).filter(|(_, &s)| s) {
        let src = row.to_vec();
        isa.round_f16(&src, row);
    }
    let row_bytes = 2 * k;
    let rows = rows_per_task(m, row_bytes, F16_ROWS, TASKS_PER_THREAD);
    // w: [M, K] f16; o: [T, M]. Each token takes its own form; rows are split over tasks.
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let wt = &w[r0 * row_bytes..(r0 + n_rows) * row_bytes];
        for (n, out) in outs.iter_mut().enumerate() {
            let job = F16Job { isa, blas: !single[n], w: wt, row_stride: row_bytes, x: &xs[n * k..(n + 1) * k], x_stride: k, k };
            drive::<_, F16_ROWS>(&job, 1, std::slice::from_mut(out));
        }
    });
    Ok(())
}

/// One Q8_0 or Q4_0 product: the task's weight rows and all quantized activation rows.
struct QJob<'a> {
    isa: Isa,
    /// Q4_0 weights (else Q8_0).
    q4: bool,
    w: &'a [u8],
    /// Bytes per weight row (`nb` blocks).
    w_row: usize,
    a: &'a [u8],
    /// Bytes per activation row (`nb` Q8_0 blocks).
    a_row: usize,
    /// Per token: its activations hold no −128 (`Isa::q8_0_act_exact`).
    exact: &'a [bool],
    nb: usize,
}

impl TileJob for QJob<'_> {
    type Acc = f32;

    fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
        copy_block(b0, nb, acc, block, outs)
    }

    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
        for n in n0..n0 + nn {
            let a = &self.a[n * self.a_row..(n + 1) * self.a_row];
            let res: [[f32; 1]; R] = std::array::from_fn(|dr| {
                let w = &self.w[(r + dr) * self.w_row..(r + dr + 1) * self.w_row];
                [self.isa.q_dot(self.q4, self.exact[n], w, a, self.nb)]
            });
            store(res, r_local, n, acc, block);
        }
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
    let [m, k] = *inputs[0].dims else { return Err(fail(op, format!("weight dims {:?}, expected [M, K]", inputs[0].dims))) };
    let x = inputs[1].f32()?;
    let t = inputs[1].dims.first().copied().unwrap_or(0);
    let o = out.f32()?;
    let (Some(w_row), Some(a_row)) = (wty.row_bytes(k), DType::Q8_0.row_bytes(k)) else {
        return Err(fail(op, format!("rows of {k} are not whole blocks of 32")));
    };
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
    let exact: Vec<bool> = a.chunks_exact(a_row.max(1)).map(|r| isa.q8_0_act_exact(r)).collect();
    let rows = rows_per_task(m, w_row, Q8_0_ROWS, TASKS_PER_THREAD);
    // w: [M] rows of K/32 blocks; o: [T, M].
    par_tasks(o, m, rows, |r0, outs| {
        let n_rows = outs[0].len();
        let job = QJob { isa, q4, w: &w[r0 * w_row..(r0 + n_rows) * w_row], w_row, a: &a, a_row, exact: &exact, nb: k / 32 };
        drive::<_, Q8_0_ROWS>(&job, Q8_0_TOKENS, outs);
    });
    Ok(())
}
