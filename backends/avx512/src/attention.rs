//! Causal attention over the f16 KV cache, the scalar backend's `attention` step for step
//! (../shared/docs/format.md §4.2–4.4), with every sequence of a step in its own cache slot.
//!
//! Work is split over (token, KV head) pairs: the query heads that share a KV head (grouped
//! query attention) are one task, so each key and value row is loaded once for all of them
//! (the dot16 / dotblas tiles take the heads as their "tokens"). A step with too few pairs
//! to keep every thread busy (one decoded token: 5 KV heads on the 2B shape) is split per
//! query head instead. Each (token, head) result is computed exactly as the scalar does, so
//! the split does not change a bit.

use graph::backend::{KvLayer, TensorMut, TensorRef};
use graph::tiling::drive;
use graph::Result;
use half::f16;
use rayon::prelude::*;

use crate::eval::{fail, BlasJob, Dot16Job};
use crate::x86_64::lanes::Lanes;
use crate::x86_64::Isa;

/// Heads per tile of the score and value products (the tiles take heads as tokens).
const HEAD_TILE: usize = 4;

/// Per-task buffers, reused across the tasks a worker runs.
#[derive(Default)]
struct Scratch {
    /// The task's queries rounded to f16, `heads × hd`.
    q16: Vec<f32>,
    /// Scores, then probabilities, `heads × n_kv`.
    w: Vec<f32>,
    /// Probabilities rounded to f16 (a sequence's only token), `heads × n_kv`.
    p16: Vec<f32>,
}

/// Store f16(k), f16(v) at each token's (slot, position); then per (token, query head)
/// `kq[j] = dot16(K16[g][j], f16(q))·scale` for `j ≤ p` of the token's slot, −inf up to
/// `n_kv` (`p + 1` rounded up to 32); softmax; then `o[d] = dot16(V16[g][d], f16(P))` for a
/// token that is its sequence's only token in the step, `dotblas(V16[g][d], P)` otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    isa: Isa,
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
    let t = pos.len();
    let stride = kv.n_ctx; // positions per KV row (a multiple of 32)
    let o = out.f32()?;
    let kv_len = n_head_kv * hd;
    if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) || hd == 0 {
        return Err(fail(op, format!("{n_head} heads, {n_head_kv} KV heads, head dim {hd}")));
    }
    if q.len() != t * n_head * hd
        || kn.len() != t * kv_len
        || vn.len() != t * kv_len
        || o.len() != t * n_head * hd
        || seqs.len() != t
    {
        return Err(fail(
            op,
            format!(
                "q {}, k {}, v {}, {} sequence ids, output {} for {t} tokens",
                q.len(),
                kn.len(),
                vn.len(),
                seqs.len(),
                o.len()
            ),
        ));
    }
    let slot_len = kv.slot_len(n_head_kv, hd);
    if kv.k.len() < slot_len * kv.n_slots || kv.v.len() < slot_len * kv.n_slots {
        return Err(fail(op, format!("KV cache of {} / {} values, expected {}", kv.k.len(), kv.v.len(), slot_len * kv.n_slots)));
    }
    for (&p, &s) in pos.iter().zip(seqs) {
        match (usize::try_from(p), usize::try_from(s)) {
            (Ok(p), Ok(s)) if (p + 1).div_ceil(32) * 32 <= stride && s < kv.n_slots => {}
            _ => return Err(fail(op, format!("position {p} of sequence {s} outside the KV cache of {} × {stride}", kv.n_slots))),
        }
    }
    // 1. Store f16(k), f16(v). k: [slot][Hkv][stride][hd], v: [slot][Hkv][hd][stride].
    let mut k16 = vec![f16::ZERO; kv_len];
    let mut v16 = vec![f16::ZERO; kv_len];
    for (i, (&p, &s)) in pos.iter().zip(seqs).enumerate() {
        let (p, base) = (p as usize, s as usize * slot_len);
        isa.to_f16(&kn[i * kv_len..(i + 1) * kv_len], &mut k16);
        isa.to_f16(&vn[i * kv_len..(i + 1) * kv_len], &mut v16);
        for g in 0..n_head_kv {
            let row = base + (g * stride + p) * hd;
            kv.k[row..row + hd].copy_from_slice(&k16[g * hd..(g + 1) * hd]);
            for d in 0..hd {
                kv.v[base + (g * hd + d) * stride + p] = v16[g * hd + d];
            }
        }
    }
    let kb: &[u8] = bytemuck::cast_slice(&kv.k[..slot_len * kv.n_slots]);
    let vb: &[u8] = bytemuck::cast_slice(&kv.v[..slot_len * kv.n_slots]);
    let group = n_head / n_head_kv;
    let one_row = graph::rows_per_seq(seqs);
    // Tokens of sequences with two or more tokens in the step go to the tiled kernels
    // (queries in lanes, graph::attn_tiles); the others (decode) are attended here.
    let tiled = graph::attn_tiles::supported(hd);
    let multi = |i: usize| tiled && one_row[i] >= 2;
    // 2. Attend. o: [T, H·hd]; a task is one token's heads `h0 .. h0 + per_task` (all of one
    // KV head's group, or one head when there are few pairs).
    let per_task = if t * n_head_kv >= 4 * rayon::current_num_threads() { group } else { 1 };
    // A sequence's only token at depth, when there are too few (token, KV head) pairs to
    // share out: split over keys and value rows instead (`decode_split`).
    let split = |i: usize| per_task == 1 && one_row[i] == 1 && graph::attn_tiles::split_decode(pos[i] as usize);
    o.par_chunks_mut(per_task * hd).enumerate().for_each_init(Scratch::default, |sc, (task, orows)| {
        let (i, h0) = (task * per_task / n_head, task * per_task % n_head);
        if multi(i) || split(i) {
            return;
        }
        let g = h0 / group;
        let p = pos[i] as usize;
        let base = 2 * seqs[i] as usize * slot_len; // the slot's first byte
        let n_kv = (p + 1).div_ceil(32) * 32;
        sc.q16.resize(per_task * hd, 0.0);
        isa.round_f16(&q[(i * n_head + h0) * hd..(i * n_head + h0 + per_task) * hd], &mut sc.q16);
        // Scores: key rows j ≤ p of KV head g, hd f16 each; heads as the tile's tokens.
        let keys = &kb[base + g * stride * hd * 2..base + (g * stride + p + 1) * hd * 2];
        sc.w.clear();
        sc.w.resize(per_task * n_kv, f32::NEG_INFINITY);
        {
            let mut outs: Vec<&mut [f32]> = sc.w.chunks_exact_mut(n_kv).map(|w| &mut w[..p + 1]).collect();
            let job = Dot16Job { isa, w: keys, row_stride: hd * 2, x: &sc.q16, x_stride: hd, k: hd };
            drive::<_, 2>(&job, HEAD_TILE, &mut outs);
        }
        for w in sc.w.chunks_exact_mut(n_kv) {
            for s in &mut w[..p + 1] {
                *s *= scale;
            }
            isa.softmax(w);
        }
        // Values: row d of KV head g holds position j at element j (stride apart).
        let vals = &vb[base + g * hd * stride * 2..base + ((g + 1) * hd - 1) * stride * 2 + n_kv * 2];
        let mut outs: Vec<&mut [f32]> = orows.chunks_exact_mut(hd).collect();
        if one_row[i] == 1 {
            sc.p16.resize(per_task * n_kv, 0.0);
            isa.round_f16(&sc.w, &mut sc.p16);
            let job = Dot16Job { isa, w: vals, row_stride: stride * 2, x: &sc.p16, x_stride: n_kv, k: n_kv };
            drive::<_, 2>(&job, HEAD_TILE, &mut outs);
        } else {
            let job = BlasJob { isa, w: vals, row_stride: stride * 2, x: &sc.w, x_stride: n_kv, k: n_kv };
            drive::<_, 4>(&job, HEAD_TILE, &mut outs);
        }
    });
    for i in (0..t).filter(|&i| split(i)) {
        let base = 2 * seqs[i] as usize * slot_len;
        let cache = graph::attn_tiles::CacheView { k: &kb[base..], v: &vb[base..], stride, n_head, n_head_kv, hd, scale };
        let rows = i * n_head * hd..(i + 1) * n_head * hd;
        graph::attn_tiles::decode_split(&Decode(isa), &cache, &q[rows.clone()], pos[i] as usize, &mut o[rows]);
    }
    if (0..t).any(multi) {
        let cache = graph::attn_tiles::CacheView { k: kb, v: vb, stride, n_head, n_head_kv, hd, scale };
        graph::attn_tiles::attend(&Lanes(isa), cache, q, pos, seqs, multi, o);
    }
    Ok(())
}

/// The one-token kernels [`graph::attn_tiles::decode_split`] runs on.
struct Decode(Isa);

impl graph::attn_tiles::DecodeKernels for Decode {
    fn round_f16(&self, x: &[f32], out: &mut [f32]) {
        self.0.round_f16(x, out);
    }

    fn dot16_rows(&self, w: &[u8], row_stride: usize, x: &[f32], x_stride: usize, k: usize, outs: &mut [&mut [f32]]) {
        let job = Dot16Job { isa: self.0, w, row_stride, x, x_stride, k };
        drive::<_, 2>(&job, HEAD_TILE, outs);
    }

    fn softmax(&self, row: &mut [f32]) {
        self.0.softmax(row);
    }
}
