//! The token-tile driver that every SIMD backend's matmul kernels share: how the rows of a
//! weight matrix are split into parallel tasks and walked in tiles of `R` rows × `N` tokens.
//! It is ISA-independent and safe; a backend supplies only the tile kernel ([`TileJob::tile`])
//! and the epilogue ([`TileJob::finish`]).
//!
//! ## Design
//! Backends may not depend on each other, so the driver lives here rather than being
//! copied into each backend crate. It owns the work split (tasks of consecutive output
//! columns, [`rows_per_task`], [`split_columns`], [`par_tasks`]) and the walk inside a task
//! ([`drive`]: blocks of [`ROW_BLOCK`] rows, token tiles outer, row tiles inner); it knows no
//! weight format, no instruction set and no numerics. Work is only ever split over output
//! rows, never inside a reduction, so a kernel's result does not depend on the thread
//! count. The `tiles!` macro turns a run-time tile width into a call of a const-generic
//! kernel.

use rayon::prelude::*;

/// A task never holds more than about this many weight bytes (keeps the load balanced on
/// the LM head: 128256 rows are ~650 tasks of 1 MiB).
pub const MAX_TASK_BYTES: usize = 1 << 20;
/// A task holds at least about this many weight bytes (keeps rayon's overhead small on
/// small matrices).
pub const MIN_TASK_BYTES: usize = 1 << 15;

/// One product of a task's weight rows with every token of a step, computed in tiles of
/// `R` rows × `N` tokens. The one token-tile driver, [`drive`], walks every job the same
/// way; a job only says how to compute one tile and how a block's results become outputs.
pub trait TileJob: Sync {
    /// What a tile computes per (row, token) before [`TileJob::finish`]: the f32 result, or
    /// an integer dot that a float epilogue turns into one.
    type Acc: Copy + Default;

    /// Rows `r .. r+R` (task-local) × tokens `n0 .. n0+nn`, into `acc[(n0+dn)·block + r_local+dr]`.
    /// Each job dispatches `nn` to the tile widths it has kernels for (see `tiles!`).
    fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [Self::Acc], block: usize);

    /// Turns the accumulators of rows `b0 .. b0+nb` (`acc[n·block + r_local]`) into the
    /// outputs `outs[n][b0 .. b0+nb]` (f32 jobs: [`copy_block`]).
    fn finish(&self, b0: usize, nb: usize, acc: &[Self::Acc], block: usize, outs: &mut [&mut [f32]]);
}

/// The epilogue of jobs whose tiles compute final f32 values: a copy.
pub fn copy_block(b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
    for (n, out) in outs.iter_mut().enumerate() {
        out[b0..b0 + nb].copy_from_slice(&acc[n * block..n * block + nb]);
    }
}

/// Stores an `R × N` tile result at `acc[(n0+dn)·block + r_local+dr]`.
#[inline(always)]
pub fn store<T: Copy, const R: usize, const N: usize>(res: [[T; N]; R], r_local: usize, n0: usize, acc: &mut [T], block: usize) {
    for (dr, res_r) in res.iter().enumerate() {
        for (dn, &v) in res_r.iter().enumerate() {
            acc[(n0 + dn) * block + r_local + dr] = v;
        }
    }
}

/// Dispatches a runtime tile width to a job's const-generic kernel: `tiles!(nn; 1, 2, 4 =>
/// |N| expr)` instantiates the kernel only at the widths listed (each width is a separate
/// kernel, so jobs list the few they were tuned for). A width not listed is a bug of the
/// caller (the driver never asks for more than the `nt` it was given) and panics.
#[macro_export]
macro_rules! tiles {
    ($nn:expr; $($n:literal),+ => |$N:ident| $body:expr) => {
        match $nn {
            $( $n => { const $N: usize = $n; $body } )+
            other => unreachable!("no tile kernel for {other} tokens"),
        }
    };
}

/// Output rows per block: within a block, the token tiles are the outer loop, so a tile's
/// activations stay in L1 while the block's weights (at most 64 rows, ~110 KB of I2_S codes
/// at K = 6912) come from L2 for every token tile but the first; each token tile walks the
/// block in tiles of `R` rows (then single rows), and the block's epilogue runs over its
/// rows at once, where the compiler vectorises it. (A scalar `divss` per output in the AVX2
/// I2_S tile loop cost ~1/3 of the kernel time; `avx2_kernel_throughput`, 1 thread,
/// 6912×2560 T = 128: 35 → 66 G MAC/s, T = 1: 24 → 34 G MAC/s.)
pub const ROW_BLOCK: usize = 64;

/// Runs `job` over every row of a task (`outs[token]` holds the task's output columns of
/// each token) in row tiles of `R` and token tiles of up to `nt`.
pub fn drive<J: TileJob, const R: usize>(job: &J, nt: usize, outs: &mut [&mut [f32]]) {
    let t = outs.len();
    let Some(first) = outs.first() else { return };
    let n_rows = first.len();
    let mut acc = vec![J::Acc::default(); t * ROW_BLOCK];
    for b0 in (0..n_rows).step_by(ROW_BLOCK) {
        let nb = ROW_BLOCK.min(n_rows - b0);
        let mut n0 = 0;
        while n0 < t {
            let nn = (t - n0).min(nt);
            let mut r = 0;
            while r + R <= nb {
                job.tile::<R>(b0 + r, r, n0, nn, &mut acc, ROW_BLOCK);
                r += R;
            }
            while r < nb {
                job.tile::<1>(b0 + r, r, n0, nn, &mut acc, ROW_BLOCK);
                r += 1;
            }
            n0 += nn;
        }
        job.finish(b0, nb, &acc, ROW_BLOCK, outs);
    }
}

/// Splits the output `[T, M]` into tasks of `rows` columns and runs `job(r0, outs)` on each
/// in parallel (`r0` is the task's first row).
pub fn par_tasks(o: &mut [f32], m: usize, rows: usize, job: impl Fn(usize, &mut [&mut [f32]]) + Sync) {
    split_columns(o, m, rows).into_par_iter().enumerate().for_each(|(i, mut outs)| job(i * rows, &mut outs));
}

/// Rows per rayon task for a matrix of `m` rows of `row_bytes` bytes: `per_thread` tasks
/// per thread, more if a task would exceed [`MAX_TASK_BYTES`] (always a multiple of the
/// thread count, so that equal threads finish together), at least [`MIN_TASK_BYTES`] per
/// task, rounded up to a multiple of `align`.
pub fn rows_per_task(m: usize, row_bytes: usize, align: usize, per_thread: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let row_bytes = row_bytes.max(1);
    let per_thread = per_thread.max((m * row_bytes).div_ceil(threads * MAX_TASK_BYTES)).max(1);
    let rows = m.div_ceil(threads * per_thread).max(MIN_TASK_BYTES / row_bytes).max(1);
    rows.div_ceil(align.max(1)) * align.max(1)
}

/// Splits an output `[T, M]` (row-major) into tasks of `rows` consecutive output columns:
/// task `i` gets, for each token, the slice of columns `i·rows .. (i+1)·rows`.
pub fn split_columns(out: &mut [f32], m: usize, rows: usize) -> Vec<Vec<&mut [f32]>> {
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..m.div_ceil(rows)).map(|_| Vec::new()).collect();
    for orow in out.chunks_mut(m) {
        for (task, piece) in tasks.iter_mut().zip(orow.chunks_mut(rows)) {
            task.push(piece);
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// out[n][r] = 1000·(r0 + r) + n for every row and token, whatever the tile sizes.
    struct Ids;

    impl TileJob for Ids {
        type Acc = f32;
        fn tile<const R: usize>(&self, r: usize, r_local: usize, n0: usize, nn: usize, acc: &mut [f32], block: usize) {
            crate::tiles!(nn; 1, 2, 3 => |N| {
                let mut res = [[0.0f32; N]; R];
                for (dr, row) in res.iter_mut().enumerate() {
                    for (dn, v) in row.iter_mut().enumerate() {
                        *v = (1000 * (r + dr) + n0 + dn) as f32;
                    }
                }
                store(res, r_local, n0, acc, block)
            })
        }
        fn finish(&self, b0: usize, nb: usize, acc: &[f32], block: usize, outs: &mut [&mut [f32]]) {
            copy_block(b0, nb, acc, block, outs)
        }
    }

    #[test]
    fn drive_covers_every_row_and_token_once() {
        for (m, t, rows) in [(1usize, 1usize, 1usize), (7, 5, 3), (130, 4, 64), (200, 7, 130)] {
            let mut o = vec![f32::NAN; m * t];
            par_tasks(&mut o, m, rows, |r0, outs| {
                // Task-local rows: shift them back to global ids in the check below.
                let n_rows = outs[0].len();
                assert!(n_rows <= rows && r0 % rows == 0);
                drive::<_, 2>(&Ids, 3, outs);
                for out in outs.iter_mut() {
                    for v in out.iter_mut() {
                        *v += (1000 * r0) as f32;
                    }
                }
            });
            for n in 0..t {
                for r in 0..m {
                    assert_eq!(o[n * m + r], (1000 * r + n) as f32, "m {m} t {t} rows {rows}: row {r} token {n}");
                }
            }
        }
    }

    #[test]
    fn rows_per_task_bounds() {
        let threads = rayon::current_num_threads().max(1);
        // Aligned, and at least MIN_TASK_BYTES per task.
        let r = rows_per_task(6912, 640, 4, 2);
        assert_eq!(r % 4, 0);
        assert!(r * 640 >= MIN_TASK_BYTES);
        // A huge matrix is split so that no task exceeds MAX_TASK_BYTES by more than a row.
        let r = rows_per_task(128_256, 5120, 1, 8);
        assert!(r * 5120 <= MAX_TASK_BYTES + 5120 || threads == 0);
        // Degenerate sizes do not divide by zero.
        assert!(rows_per_task(0, 0, 0, 0) >= 1);
    }
}
