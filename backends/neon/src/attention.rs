//! Causal attention over the f16 KV cache, the scalar backend's `attention` step for step
//! (../shared/docs/format.md §4.2–4.4), with every sequence of a step in its own cache slot.

use graph::backend::{KvLayer, TensorMut, TensorRef};
use graph::Result;
use half::f16;
use rayon::prelude::*;

use crate::aarch64::Isa;
use crate::eval::fail;

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
    // 2. Attend. o: [T, H·hd]; work is split over (token, head) pairs.
    o.par_chunks_mut(hd).enumerate().for_each(|(th, orow)| {
        let (i, hq) = (th / n_head, th % n_head);
        let g = hq / group;
        let p = pos[i] as usize;
        let base = 2 * seqs[i] as usize * slot_len; // the slot's first byte
        let n_kv = (p + 1).div_ceil(32) * 32;
        let mut q16 = vec![0.0f32; hd];
        isa.round_f16(&q[(i * n_head + hq) * hd..(i * n_head + hq + 1) * hd], &mut q16);
        // Scores: key rows j ≤ p of KV head g, hd f16 each.
        let keys = &kb[base + g * stride * hd * 2..];
        let mut w = vec![f32::NEG_INFINITY; n_kv];
        for (j, wj) in w[..p + 1].iter_mut().enumerate() {
            let [s] = isa.dot16_rows::<1>(&keys[j * hd * 2..], 0, &q16, hd);
            *wj = s * scale;
        }
        isa.softmax(&mut w);
        // Values: row d of KV head g holds position j at element j (stride apart).
        let vals = &vb[base + g * hd * stride * 2..];
        let single = one_row[i] == 1;
        let mut p16 = vec![0.0f32; if single { n_kv } else { 0 }];
        if single {
            isa.round_f16(&w, &mut p16);
        }
        for (d, od) in orow.iter_mut().enumerate() {
            let vrow = &vals[d * stride * 2..d * stride * 2 + n_kv * 2];
            let [v] = if single { isa.dot16_rows::<1>(vrow, 0, &p16, n_kv) } else { isa.dotblas_rows::<1>(vrow, 0, &w, n_kv) };
            *od = v;
        }
    });
    Ok(())
}
