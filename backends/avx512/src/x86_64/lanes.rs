//! The lane kernels of tiled attention (`graph::attn_tiles`): 16 queries side by side, one
//! per lane of a 512-bit register, each lane computing exactly what the scalar attention
//! computes for its query (../shared/docs/format.md §4.2–4.4).
//!
//! - Scores: a tile of [`KB`] keys is widened to f32 once; for each of `dot16`'s 32 chains
//!   (`acc[a][l]`, element `32b + 8a + l`) the 16 queries' elements are one register and
//!   each key's element a broadcast, so every lane runs the scalar's FMA chain; the four
//!   chains of an `l` are added as `(acc0 + acc2) + (acc1 + acc3)`, then the scalar's tree.
//! - Softmax: lane-wise scale and mask, the maximum in key order (`vmaxps(mx, w)` is the
//!   scalar's `mx > w ? mx : w`), [`vexp16`], 8-key chunk sums `(h0 + h2) + (h1 + h3)`
//!   added to two f64 registers (lanes 0..8, 8..16) in chunk order, the f64 reciprocal
//!   rounded to f32.
//! - Values: [`DB`] channels at a time, widened to f32; eight accumulators per channel by
//!   position mod 8, each a broadcast channel element times the 16 lanes' probabilities,
//!   then tinyBLAS's `(t0 + t2) + (t1 + t3)`.

// Index loops mirror the formulas (chain `acc[a][l]`, key `k` of a tile) across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::softmax::vexp16;
use super::Isa;

/// Lanes (queries) per block.
const LANES: usize = 16;
/// Keys per score tile: 8 chains side by side, 25 registers live at most.
const KB: usize = 8;
/// Value channels per tile: 24 accumulators.
const DB: usize = 3;

/// [`Isa`] as `graph::attn_tiles::LaneKernels`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lanes(pub(crate) Isa);

impl graph::attn_tiles::LaneKernels for Lanes {
    const LANES: usize = LANES;

    fn round_f16(&self, x: &[f32], out: &mut [f32]) {
        self.0.round_f16(x, out)
    }

    fn scores(&self, keys: &[u8], n: usize, hd: usize, nb: usize, qt: &[f32], s: &mut [f32], scratch: &mut Vec<f32>) {
        assert!(hd.is_multiple_of(32) && n.is_multiple_of(KB), "scores: hd {hd}, {n} keys");
        assert!(keys.len() >= n * hd * 2 && qt.len() >= nb * hd * LANES && s.len() >= nb * n * LANES, "scores: buffers");
        scratch.resize(KB * hd, 0.0);
        // SAFETY: `self.0` proves the AVX-512 features; the asserts bound every access: key
        // rows `j < n` of `hd` f16, `qt` `[nb][hd][16]`, `s` `[nb][n][16]`, `scratch` `[KB][hd]`.
        unsafe { scores_entry(keys.as_ptr(), n, hd, nb, qt.as_ptr(), s.as_mut_ptr(), scratch.as_mut_ptr()) }
    }

    fn softmax(&self, s: &mut [f32], n: usize, scale: f32, last: &[u32]) {
        assert!(n.is_multiple_of(8) && s.len() >= n * LANES && last.len() >= LANES, "softmax: {n} keys");
        // SAFETY: as above: `s` is `[n][16]`, `last` 16 u32.
        unsafe { softmax_entry(s.as_mut_ptr(), n, scale, last.as_ptr()) }
    }

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
    ) {
        assert!(n.is_multiple_of(16) && hd > 0, "values: {n} positions");
        assert!(
            vals.len() >= (hd - 1) * row_stride + 2 * n && p.len() >= nb * n * LANES && out.len() >= nb * hd * LANES,
            "values: buffers"
        );
        scratch.resize(DB * n, 0.0);
        let mut d = 0;
        while d < hd {
            // SAFETY: `self.0` proves the features; channels `d .. d + DB ≤ hd` of `n` f16
            // are inside `vals` (assert), `p` is `[nb][n][16]`, `out` `[nb][hd][16]`, `scratch`
            // `[DB][n]`.
            unsafe {
                if d + DB <= hd {
                    values_entry::<DB>(
                        vals.as_ptr(),
                        row_stride,
                        d,
                        hd,
                        n,
                        nb,
                        p.as_ptr(),
                        out.as_mut_ptr(),
                        scratch.as_mut_ptr(),
                    );
                    d += DB;
                } else {
                    values_entry::<1>(
                        vals.as_ptr(),
                        row_stride,
                        d,
                        hd,
                        n,
                        nb,
                        p.as_ptr(),
                        out.as_mut_ptr(),
                        scratch.as_mut_ptr(),
                    );
                    d += 1;
                }
            }
        }
    }
}

/// Scores of `n` keys (a multiple of [`KB`]) against `nb` blocks of 16 queries, each key
/// tile widened once for all the blocks.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `keys` readable for `n·hd` f16, `qts` for
/// `nb·hd·16` f32, `ss` writable for `nb·n·16` f32, `kbuf` for `KB·hd` f32; `hd % 32 == 0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scores_entry(keys: *const u8, n: usize, hd: usize, nb: usize, qts: *const f32, ss: *mut f32, kbuf: *mut f32) {
    // SAFETY: tile `j` reads key rows `j .. j + KB ≤ n` (`hd` f16 each) and writes rows
    // `j .. j + KB` of each block's `s` (`[n][16]` at `ss + bq·n·16`, `bq < nb`); `kbuf` holds
    // `KB·hd` f32; element `i < hd` of a block's `qt` is 16 f32 at `qts + bq·hd·16 + 16i`.
    unsafe {
        let mut j = 0;
        while j < n {
            for k in 0..KB {
                for c in (0..hd).step_by(16) {
                    let h = _mm256_loadu_si256(keys.add(((j + k) * hd + c) * 2).cast());
                    _mm512_storeu_ps(kbuf.add(k * hd + c), _mm512_cvtph_ps(h));
                }
            }
            // Two blocks at a time share each broadcast key element (half the loads per
            // FMA), four keys per pass to stay in registers; a last odd block alone.
            let mut bq = 0;
            while bq + 2 <= nb {
                let q2 = [qts.add(bq * hd * LANES), qts.add((bq + 1) * hd * LANES)];
                let s2 = [ss.add(bq * n * LANES), ss.add((bq + 1) * n * LANES)];
                tile::<2, { KB / 2 }>(kbuf, q2, s2, hd, j, 0);
                tile::<2, { KB / 2 }>(kbuf, q2, s2, hd, j, KB / 2);
                bq += 2;
            }
            if bq < nb {
                tile::<1, KB>(kbuf, [qts.add(bq * hd * LANES)], [ss.add(bq * n * LANES)], hd, j, 0);
            }
            j += KB;
        }
    }
}

/// Scores of keys `k0 .. k0 + KN` of the widened tile (`kbuf`) against `NB` blocks of 16
/// queries, written to rows `j + k0 ..` of each block's `s`: per `l`, `dot16`'s chains
/// `(acc0 + acc2) + (acc1 + acc3)`, then its tree over `l`.
///
/// # Safety
/// The CPU must support AVX-512 F; `kbuf` readable for `(k0 + KN)·hd` f32, each `qt` for
/// `hd·16`, each `s` writable for rows `j + k0 .. j + k0 + KN` of 16 f32.
#[inline(always)]
unsafe fn tile<const NB: usize, const KN: usize>(
    kbuf: *const f32,
    qt: [*const f32; NB],
    s: [*mut f32; NB],
    hd: usize,
    j: usize,
    k0: usize,
) {
    // SAFETY: the caller's ranges.
    unsafe {
        let mut sl = [[[_mm512_setzero_ps(); KN]; 8]; NB];
        for l in 0..8 {
            let (a0, a2) = (chain::<NB, KN>(kbuf, qt, hd, 0, l, k0), chain::<NB, KN>(kbuf, qt, hd, 2, l, k0));
            let x02: [[__m512; KN]; NB] = std::array::from_fn(|b| std::array::from_fn(|k| _mm512_add_ps(a0[b][k], a2[b][k])));
            let (a1, a3) = (chain::<NB, KN>(kbuf, qt, hd, 1, l, k0), chain::<NB, KN>(kbuf, qt, hd, 3, l, k0));
            for b in 0..NB {
                for k in 0..KN {
                    sl[b][l][k] = _mm512_add_ps(x02[b][k], _mm512_add_ps(a1[b][k], a3[b][k]));
                }
            }
        }
        for b in 0..NB {
            for k in 0..KN {
                let t: [__m512; 4] = std::array::from_fn(|m| _mm512_add_ps(sl[b][m][k], sl[b][m + 4][k]));
                let r = _mm512_add_ps(_mm512_add_ps(t[0], t[1]), _mm512_add_ps(t[2], t[3]));
                _mm512_storeu_ps(s[b].add((j + k0 + k) * LANES), r);
            }
        }
    }
}

/// `dot16`'s chain `acc[a][l]` (elements `32b + 8a + l`, `b` ascending) of keys `k0 .. k0 +
/// KN` (`kbuf`, f32 `[KB][hd]`) against `NB` blocks of 16 queries (`qt`, `[hd][16]` each),
/// each key element broadcast once for all the blocks.
///
/// # Safety
/// The CPU must support AVX-512 F; `kbuf` readable for `(k0 + KN)·hd` f32, each `qt` for
/// `hd·16`.
#[inline(always)]
unsafe fn chain<const NB: usize, const KN: usize>(
    kbuf: *const f32,
    qt: [*const f32; NB],
    hd: usize,
    a: usize,
    l: usize,
    k0: usize,
) -> [[__m512; KN]; NB] {
    // SAFETY: `i < hd` for every block `b < hd / 32`: inside every buffer.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); KN]; NB];
        for b in 0..hd / 32 {
            let i = 32 * b + 8 * a + l;
            let qv: [__m512; NB] = std::array::from_fn(|q| _mm512_loadu_ps(qt[q].add(i * LANES)));
            for k in 0..KN {
                let kv = _mm512_set1_ps(*kbuf.add((k0 + k) * hd + i));
                for q in 0..NB {
                    acc[q][k] = _mm512_fmadd_ps(kv, qv[q], acc[q][k]);
                }
            }
        }
        acc
    }
}

/// Softmax of 16 lanes over `n` keys (a multiple of 8) in place, lane `l` masked beyond
/// key `last[l]`.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `s` valid for `n·16` f32, `last` for 16 u32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn softmax_entry(s: *mut f32, n: usize, scale: f32, last: *const u32) {
    // SAFETY: every access is row `j < n` of `s` (16 f32) or the 16 u32 of `last`.
    unsafe {
        let lastv = _mm512_loadu_si512(last.cast());
        let sc = _mm512_set1_ps(scale);
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut mx = ninf;
        for j in 0..n {
            let keep = _mm512_cmp_epu32_mask::<_MM_CMPINT_LE>(_mm512_set1_epi32(j as i32), lastv);
            let w = _mm512_mask_mul_ps(ninf, keep, _mm512_loadu_ps(s.add(j * LANES)), sc);
            _mm512_storeu_ps(s.add(j * LANES), w);
            mx = _mm512_max_ps(mx, w);
        }
        let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        for c in (0..n).step_by(8) {
            let e: [__m512; 8] = std::array::from_fn(|m| {
                let e = vexp16(_mm512_sub_ps(_mm512_loadu_ps(s.add((c + m) * LANES)), mx));
                _mm512_storeu_ps(s.add((c + m) * LANES), e);
                e
            });
            let h: [__m512; 4] = std::array::from_fn(|m| _mm512_add_ps(e[m + 4], e[m]));
            let part = _mm512_add_ps(_mm512_add_ps(h[0], h[2]), _mm512_add_ps(h[1], h[3]));
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(part)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(part)))));
        }
        let one = _mm512_set1_pd(1.0);
        let inv_lo = _mm512_cvtpd_ps(_mm512_div_pd(one, lo));
        let inv_hi = _mm512_cvtpd_ps(_mm512_div_pd(one, hi));
        let inv =
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(_mm256_castps_pd(inv_lo)), _mm256_castps_pd(inv_hi)));
        for j in 0..n {
            _mm512_storeu_ps(s.add(j * LANES), _mm512_mul_ps(_mm512_loadu_ps(s.add(j * LANES)), inv));
        }
    }
}

/// Channels `d0 .. d0 + R` of the values of `nb` blocks, the channels widened once for all:
/// `out[d·16 + l] = dotblas(V[d][..n], p[·][l])` per block.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; channel `d < d0 + R` is `n` f16 at byte
/// `d·row_stride` of `vals`; `ps` readable for `nb·n·16` f32, `outs` writable for
/// `nb·hd·16` f32 (`d0 + R ≤ hd`), `vbuf` for `R·n` f32; `n % 16 == 0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn values_entry<const R: usize>(
    vals: *const u8,
    row_stride: usize,
    d0: usize,
    hd: usize,
    n: usize,
    nb: usize,
    ps: *const f32,
    outs: *mut f32,
    vbuf: *mut f32,
) {
    // SAFETY: the caller's ranges: channel rows `d0 + r` (`n` f16), a block's `p` rows
    // `j < n` (at `ps + bq·n·LANES`), `vbuf` `[R][n]`, a block's `out` rows `d0 + r` (at
    // `outs + bq·hd·LANES`).
    unsafe {
        for r in 0..R {
            let row = vals.add((d0 + r) * row_stride);
            for j in (0..n).step_by(16) {
                _mm512_storeu_ps(vbuf.add(r * n + j), _mm512_cvtph_ps(_mm256_loadu_si256(row.add(2 * j).cast())));
            }
        }
        for bq in 0..nb {
            let (p, out) = (ps.add(bq * n * LANES), outs.add(bq * hd * LANES));
            let mut acc = [[_mm512_setzero_ps(); 8]; R];
            for c in (0..n).step_by(8) {
                for m in 0..8 {
                    let pv = _mm512_loadu_ps(p.add((c + m) * LANES));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        acc_r[m] = _mm512_fmadd_ps(_mm512_set1_ps(*vbuf.add(r * n + c + m)), pv, acc_r[m]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let t: [__m512; 4] = std::array::from_fn(|m| _mm512_add_ps(a[m + 4], a[m]));
                let res = _mm512_add_ps(_mm512_add_ps(t[0], t[2]), _mm512_add_ps(t[1], t[3]));
                _mm512_storeu_ps(out.add((d0 + r) * LANES), res);
            }
        }
    }
}
