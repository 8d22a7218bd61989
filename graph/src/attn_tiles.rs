//! Exact tiled attention for steps where a sequence has two or more tokens (prefill), shared
//! by the SIMD backends: "queries in lanes". A backend supplies three kernels
//! ([`LaneKernels`]) that work on a block of up to `LANES` queries at once, one query per
//! SIMD lane; this driver forms the blocks, splits them over threads and moves the data.
//!
//! ## Why it is bit-identical
//! Every (query, key) score, every softmax row and every output element is computed by the
//! same operations in the same order as the scalar reference (../shared/docs/format.md
//! §4.2–4.4), only side by side with other queries in the other lanes:
//! - scores: lane `l` of a key's result is `dot16(K16[g][j], f16(q_l))`, its 32 FMA chains
//!   (`acc[a][l']` over the 32-blocks) and reduction tree unchanged, then `·scale`;
//! - softmax: per lane, the maximum over the keys in key order, `vexp(w − mx)`, the f64 sum
//!   of 8-key chunk sums in key order, the f32 reciprocal multiply — over the block's `n_kv`,
//!   which every query of a block shares (blocks never mix 32-position windows);
//! - values: per lane and channel `d`, `dotblas(V16[g][d], P_l)`: eight chains by position
//!   mod 8 in position order, then tinyBLAS's reduction.
//!
//! What changes is only how often data is loaded: a key row is loaded once per block (all
//! the block's queries: the query heads that share a KV head, times a few prompt tokens)
//! instead of once per query, and likewise a value row; the blocks that share their keys and
//! values (a 32-position window of one KV head) run as one task, each K/V tile widened to
//! f32 once for all of them.
//!
//! ## Blocks
//! A block is up to `LANES` (token, query head) pairs of one sequence slot and one KV head
//! whose tokens have the same `n_kv` (their positions lie in one window of 32). Tokens are
//! taken in step order, heads in order within a token; unused lanes repeat the last query
//! (their results are dropped). Keys `j > p` of a lane's own position are masked to −inf
//! there, as the scalar masks them.

use rayon::prelude::*;

/// The three lane kernels of one instruction set. Buffers are lane-interleaved: element
/// `(x, l)` of a `[X][LANES]` buffer is at `x·LANES + l`.
pub trait LaneKernels: Sync {
    /// Queries per block (SIMD lanes of f32).
    const LANES: usize;

    /// `out[i] = f32(f16(x[i]))`, nearest even.
    fn round_f16(&self, x: &[f32], out: &mut [f32]);

    /// Scores without the scale of `nb` blocks against the same keys: block `b`'s
    /// `s[b][j][l] = dot16(K16[j], qt[b][·][l])` for keys `j < n`, `hd` a multiple of 32.
    /// Key `j` is `hd` f16 at byte `j·2·hd` of `keys`; `qt` is `[nb][hd][LANES]` (f16 values,
    /// widened), `s` `[nb][n][LANES]`. `scratch` is the kernel's own.
    #[allow(clippy::too_many_arguments)]
    fn scores(&self, keys: &[u8], n: usize, hd: usize, nb: usize, qt: &[f32], s: &mut [f32], scratch: &mut Vec<f32>);

    /// Softmax per lane over `n` keys (a multiple of 8) of `s` (`[n][LANES]`) in place:
    /// `w = s·scale` for `j ≤ last[l]`, −inf beyond; then the scalar `softmax_f32` per lane.
    fn softmax(&self, s: &mut [f32], n: usize, scale: f32, last: &[u32]);

    /// `out[b][d][l] = dotblas(V16[d][..n], p[b][·][l])` for `d < hd` and each of `nb`
    /// blocks: channel `d` is `n` f16 at byte `d·row_stride` of `vals`; `p` is
    /// `[nb][n][LANES]`, `out` `[nb][hd][LANES]`.
    #[allow(clippy::too_many_arguments)]
    fn values(
        &self,
        vals: &[u8],
        row_stride: usize,
        hd: usize,
        n: usize,
        nb: usize,
        p: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    );
}

/// The layer's cache and shape, as the attention op sees it (byte views of the f16 cache).
#[derive(Clone, Copy, Debug)]
pub struct CacheView<'a> {
    /// Keys, `[slot][Hkv][stride][hd]` f16 (little-endian bytes).
    pub k: &'a [u8],
    /// Values, `[slot][Hkv][hd][stride]` f16.
    pub v: &'a [u8],
    /// Positions per cache row (a multiple of 32).
    pub stride: usize,
    /// Query heads.
    pub n_head: usize,
    /// KV heads (a divisor of `n_head`).
    pub n_head_kv: usize,
    /// Head dimension.
    pub hd: usize,
    /// Score scale.
    pub scale: f32,
}

impl CacheView<'_> {
    /// f16 values of one slot (both caches).
    fn slot_len(&self) -> usize {
        self.n_head_kv * self.hd * self.stride
    }
}

/// Whether the tiled kernels apply to a head dimension (whole 32-blocks: no f64 tail).
pub fn supported(hd: usize) -> bool {
    hd > 0 && hd.is_multiple_of(32)
}

/// One block: the slot, KV head and shared `n_kv` of up to `LANES` (token, head) queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Sequence slot.
    pub slot: usize,
    /// KV head.
    pub g: usize,
    /// Positions the softmax runs over (the tokens' `p + 1` rounded up to 32).
    pub n_kv: usize,
    /// (token index in the step, query head), at most `LANES`.
    pub queries: Vec<(usize, usize)>,
}

/// Forms the blocks of the tokens `take(i)` selects (positions and slots already checked).
pub fn blocks(
    pos: &[i32],
    seqs: &[i32],
    n_head: usize,
    n_head_kv: usize,
    lanes: usize,
    take: impl Fn(usize) -> bool,
) -> Vec<Block> {
    let group = n_head / n_head_kv;
    let n_kv = |i: usize| (pos[i] as usize + 1).div_ceil(32) * 32;
    let mut out = Vec::new();
    // Runs of consecutive selected tokens with the same slot and n_kv.
    let mut i = 0;
    while i < pos.len() {
        if !take(i) {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < pos.len() && take(end) && seqs[end] == seqs[i] && n_kv(end) == n_kv(i) {
            end += 1;
        }
        for g in 0..n_head_kv {
            let qs: Vec<(usize, usize)> = (i..end).flat_map(|t| (g * group..(g + 1) * group).map(move |h| (t, h))).collect();
            for c in qs.chunks(lanes) {
                out.push(Block { slot: seqs[i] as usize, g, n_kv: n_kv(i), queries: c.to_vec() });
            }
        }
        i = end;
    }
    out
}

/// Per-worker buffers.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    qt: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Attends the tokens `take(i)` selects (their sequences have ≥ 2 tokens in the step: the
/// f32-P `dotblas` form of the values), writing their rows of `out` (`[T, H·hd]`); the keys
/// and values of the step must already be in the cache. `q` is `[T, H·hd]` f32.
#[allow(clippy::too_many_arguments)]
pub fn attend<J: LaneKernels>(
    job: &J,
    cache: CacheView<'_>,
    q: &[f32],
    pos: &[i32],
    seqs: &[i32],
    take: impl Fn(usize) -> bool,
    out: &mut [f32],
) {
    let CacheView { n_head, n_head_kv, hd, .. } = cache;
    let lanes = J::LANES;
    let plan = blocks(pos, seqs, n_head, n_head_kv, lanes, take);
    let slot_bytes = 2 * cache.slot_len();
    // Blocks that share their keys and values (same slot, KV head and `n_kv`: adjacent in
    // the plan) run as one task, so each K/V tile is widened once for all of them; at most
    // GROUP_MAX, and few enough that every thread gets several tasks.
    let per_task = (plan.len() / (4 * rayon::current_num_threads()).max(1)).clamp(1, GROUP_MAX);
    let shares = |a: &Block, b: &Block| (a.slot, a.g, a.n_kv) == (b.slot, b.g, b.n_kv);
    let mut tasks: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, b) in plan.iter().enumerate() {
        match tasks.last_mut() {
            Some(task) if task.len() < per_task && shares(&plan[task.start], b) => task.end = i + 1,
            _ => tasks.push(i..i + 1),
        }
    }
    // Each task's outputs, `[nb][hd][LANES]`, scattered afterwards (tasks run in parallel).
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map_init(Scratch::default, |sc, task| {
            let bs = &plan[task.clone()];
            let (nb, n, first) = (bs.len(), bs[0].n_kv, &bs[0]);
            // Queries, f16-rounded, transposed to [hd][LANES]; unused lanes repeat the last.
            sc.q.resize(hd, 0.0);
            sc.qt.resize(nb * hd * lanes, 0.0);
            let mut last = vec![0u32; nb * lanes];
            for (bi, b) in bs.iter().enumerate() {
                let qt = &mut sc.qt[bi * hd * lanes..(bi + 1) * hd * lanes];
                for l in 0..lanes {
                    let (t, h) = b.queries[l.min(b.queries.len() - 1)];
                    job.round_f16(&q[(t * n_head + h) * hd..(t * n_head + h + 1) * hd], &mut sc.q);
                    for (d, &x) in sc.q.iter().enumerate() {
                        qt[d * lanes + l] = x;
                    }
                    last[bi * lanes + l] = pos[t] as u32;
                }
            }
            let base = first.slot * slot_bytes;
            let keys = &cache.k[base + first.g * cache.stride * hd * 2..][..n * hd * 2];
            sc.s.resize(nb * n * lanes, 0.0);
            job.scores(keys, n, hd, nb, &sc.qt, &mut sc.s, &mut sc.k);
            for (s, last) in sc.s.chunks_mut(n * lanes).zip(last.chunks(lanes)) {
                job.softmax(s, n, cache.scale, last);
            }
            let vals = &cache.v[base + first.g * hd * cache.stride * 2..][..((hd - 1) * cache.stride + n) * 2];
            sc.o.resize(nb * hd * lanes, 0.0);
            job.values(vals, cache.stride * 2, hd, n, nb, &sc.s, &mut sc.o, &mut sc.v);
            sc.o.clone()
        })
        .collect();
    for (task, r) in tasks.iter().zip(&results) {
        for (b, r) in plan[task.clone()].iter().zip(r.chunks(hd * lanes)) {
            for (l, &(t, h)) in b.queries.iter().enumerate() {
                let row = &mut out[(t * n_head + h) * hd..(t * n_head + h + 1) * hd];
                for (d, o) in row.iter_mut().enumerate() {
                    *o = r[d * lanes + l];
                }
            }
        }
    }
}

/// Most blocks in one task of [`attend`] (8 × 16 lanes: a 32-token window's 128 queries
/// of one KV head with 4 query heads per KV head).
const GROUP_MAX: usize = 8;

/// Positions from which a lone decoded token takes [`decode_split`].
const SPLIT_MIN_KEYS: usize = 256;
/// Keys per score task of [`decode_split`].
const SPLIT_KEYS: usize = 256;
/// Value rows (head dimensions) per P·V task of [`decode_split`].
const SPLIT_DIMS: usize = 32;

/// One decoded token at position `p` (its sequence's only token in the step) whose slot
/// starts `cache.k` / `cache.v`: the scalar reference's scores, softmax and `dot16` P·V
/// (../shared/docs/format.md §4.2–4.4), split so that every thread works and each key and
/// value row is read once for all the query heads of its KV head: scores by (KV head, block
/// of keys), softmax by head, P·V by (KV head, block of value rows). Every score and every output element is the same single
/// `dot16` over the same elements in the same order, so the split changes no bit.
pub fn decode_split<K: DecodeKernels>(kern: &K, cache: &CacheView<'_>, q: &[f32], p: usize, o: &mut [f32]) {
    let (n_head, n_head_kv, hd, stride) = (cache.n_head, cache.n_head_kv, cache.hd, cache.stride);
    let group = n_head / n_head_kv;
    let n_kv = (p + 1).div_ceil(32) * 32;
    let mut q16 = vec![0f32; n_head * hd];
    kern.round_f16(q, &mut q16);
    // 1. Scores, w[h][j] for j ≤ p (−inf above, to n_kv), by (KV head, block of keys).
    let mut w = vec![f32::NEG_INFINITY; n_head * n_kv];
    per_group_blocks(n_head_kv, group, p + 1, SPLIT_KEYS, n_kv, &mut w, |g, j0, outs| {
        let nj = outs[0].len();
        let keys = &cache.k[(g * stride + j0) * hd * 2..(g * stride + j0 + nj) * hd * 2];
        kern.dot16_rows(keys, hd * 2, &q16[g * group * hd..(g + 1) * group * hd], hd, hd, outs);
    });
    // 2. Softmax per head, then the probabilities rounded to f16 (the one-column form).
    let mut p16 = vec![0f32; n_head * n_kv];
    w.par_chunks_mut(n_kv).zip(p16.par_chunks_mut(n_kv)).for_each(|(row, row16)| {
        for s in &mut row[..p + 1] {
            *s *= cache.scale;
        }
        kern.softmax(row);
        kern.round_f16(row, row16);
    });
    // 3. o[h][d] = dot16(V16[g][d], f16(P[h])), by (KV head, block of value rows).
    per_group_blocks(n_head_kv, group, hd, SPLIT_DIMS, hd, o, |g, d0, outs| {
        let nd = outs[0].len();
        let vals = &cache.v[(g * hd + d0) * stride * 2..((g * hd + d0 + nd - 1) * stride + n_kv) * 2];
        kern.dot16_rows(vals, stride * 2, &p16[g * group * n_kv..(g + 1) * group * n_kv], n_kv, n_kv, outs);
    });
}

/// Runs `f(g, c0, outs)` in parallel for every KV head `g` and block of columns `c0 ..
/// c0 + len` of `0 .. n` (`outs`: one slice of `len` per query head of the group), then writes
/// each head `h`'s results to `dst[h·row + c0 ..]`.
#[allow(clippy::too_many_arguments)]
fn per_group_blocks(
    n_head_kv: usize,
    group: usize,
    n: usize,
    block: usize,
    row: usize,
    dst: &mut [f32],
    f: impl Fn(usize, usize, &mut [&mut [f32]]) + Sync,
) {
    let blocks = n.div_ceil(block);
    let place = |task: usize| (task / blocks, task % blocks * block);
    let parts: Vec<Vec<f32>> = (0..n_head_kv * blocks)
        .into_par_iter()
        .map(|task| {
            let (g, c0) = place(task);
            let len = block.min(n - c0);
            let mut part = vec![0f32; group * len];
            let mut outs: Vec<&mut [f32]> = part.chunks_exact_mut(len).collect();
            f(g, c0, &mut outs);
            part
        })
        .collect();
    for (task, part) in parts.iter().enumerate() {
        let (g, c0) = place(task);
        let len = part.len() / group;
        for (hh, src) in part.chunks_exact(len).enumerate() {
            let h = g * group + hh;
            dst[h * row + c0..h * row + c0 + len].copy_from_slice(src);
        }
    }
}

/// Whether a decoded token at position `p` (alone in its sequence, in a step with too few
/// (token, KV head) pairs for the threads) takes [`decode_split`].
pub fn split_decode(p: usize) -> bool {
    p + 1 >= SPLIT_MIN_KEYS
}

/// The kernels of one instruction set that [`decode_split`] runs, each the scalar
/// reference's operation exactly.
pub trait DecodeKernels: Sync {
    /// `out[i] = f32(f16(x[i]))`, nearest even.
    fn round_f16(&self, x: &[f32], out: &mut [f32]);
    /// `outs[t][r] = dot16(row r of w, x[t])` for the rows `r < outs[t].len()`, row `r` being
    /// `k` f16 at byte `r·row_stride` of `w` and `x[t]` `k` values at `t·x_stride` of `x`.
    fn dot16_rows(&self, w: &[u8], row_stride: usize, x: &[f32], x_stride: usize, k: usize, outs: &mut [&mut [f32]]);
    /// The scalar `softmax_f32` over the whole row (−inf entries give 0).
    fn softmax(&self, row: &mut [f32]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_share_slot_head_and_window() {
        // Two sequences: seq 0 at positions 28..36 (crosses 32), seq 1 at 0..3; 8 heads, 2 KV.
        let mut pos: Vec<i32> = (28..36).collect();
        pos.extend(0..3);
        let mut seqs = vec![0; 8];
        seqs.extend([1; 3]);
        let b = blocks(&pos, &seqs, 8, 2, 8, |i| i != 9);
        for blk in &b {
            assert!(blk.queries.len() <= 8);
            for &(t, h) in &blk.queries {
                assert_eq!(seqs[t] as usize, blk.slot);
                assert_eq!(h / 4, blk.g);
                assert_eq!((pos[t] as usize + 1).div_ceil(32) * 32, blk.n_kv);
            }
        }
        // Every selected (token, head) exactly once.
        let mut all: Vec<(usize, usize)> = b.iter().flat_map(|b| b.queries.clone()).collect();
        all.sort();
        let want: Vec<(usize, usize)> = (0..11).filter(|&i| i != 9).flat_map(|t| (0..8).map(move |h| (t, h))).collect();
        assert_eq!(all, want);
    }
}
