//! The lane kernels of tiled attention (`graph::attn_tiles`): 8 queries side by side, one
//! per lane of a 256-bit register, each lane computing exactly what the scalar attention
//! computes for its query (../shared/docs/format.md §4.2–4.4).
//!
//! - Scores: a tile of [`KB`] keys is widened to f32 once; for each of `dot16`'s 32 chains
//!   (`acc[a][l]`, element `32b + 8a + l`) the 8 queries' elements are one register and
//!   each key's element a broadcast, so every lane runs the scalar's FMA chain; the four
//!   chains of an `l` are added as `(acc0 + acc2) + (acc1 + acc3)`, then the scalar's tree.
//! - Softmax: lane-wise scale and mask, the maximum in key order (`vmaxps(mx, w)` is the
//!   scalar's `mx > w ? mx : w`), [`vexp8`], 8-key chunk sums `(h0 + h2) + (h1 + h3)`
//!   added to two f64 registers (lanes 0..4, 4..8) in chunk order, the f64 reciprocal
//!   rounded to f32.
//! - Values: [`DB`] channels at a time, widened to f32; eight accumulators per channel by
//!   position mod 8, each a broadcast channel element times the 8 lanes' probabilities,
//!   then tinyBLAS's `(t0 + t2) + (t1 + t3)`.

// Index loops mirror the formulas (chain `acc[a][l]`, key `k` of a tile) across several arrays.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::softmax::vexp8;
use super::Isa;

/// Lanes (queries) per block.
const LANES: usize = 8;
/// Keys per score tile: 4 chains side by side, 13 registers live at most.
const KB: usize = 4;
/// Value channels per tile: 8 accumulators (16 registers leave no room for a second).
const DB: usize = 1;

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
        // SAFETY: `self.0` proves the AVX2 features; the asserts bound every access: key
        // rows `j < n` of `hd` f16, `qt` `[nb][hd][8]`, `s` `[nb][n][8]`, `scratch` `[KB][hd]`.
        unsafe { scores_entry(keys.as_ptr(), n, hd, nb, qt.as_ptr(), s.as_mut_ptr(), scratch.as_mut_ptr()) }
    }

    fn softmax(&self, s: &mut [f32], n: usize, scale: f32, last: &[u32]) {
        assert!(n.is_multiple_of(8) && s.len() >= n * LANES && last.len() >= LANES, "softmax: {n} keys");
        // SAFETY: as above: `s` is `[n][8]`, `last` 8 u32.
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
        assert!(n.is_multiple_of(8) && hd > 0, "values: {n} positions");
        assert!(
            vals.len() >= (hd - 1) * row_stride + 2 * n && p.len() >= nb * n * LANES && out.len() >= nb * hd * LANES,
            "values: buffers"
        );
        scratch.resize(DB * n, 0.0);
        let mut d = 0;
        while d < hd {
            // SAFETY: `self.0` proves the features; channels `d .. d + DB ≤ hd` of `n` f16
            // are inside `vals` (assert), `p` is `[nb][n][8]`, `out` `[nb][hd][8]`, `scratch`
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

/// Scores of `n` keys (a multiple of [`KB`]) against `nb` blocks of 8 queries, each key
/// tile widened once for all the blocks.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `keys` readable for `n·hd` f16, `qts` for
/// `nb·hd·8` f32, `ss` writable for `nb·n·8` f32, `kbuf` for `KB·hd` f32; `hd % 32 == 0`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_entry(keys: *const u8, n: usize, hd: usize, nb: usize, qts: *const f32, ss: *mut f32, kbuf: *mut f32) {
    // SAFETY: tile `j` reads key rows `j .. j + KB ≤ n` (`hd` f16 each) and writes rows
    // `j .. j + KB` of each block's `s` (`[n][8]` at `ss + bq·n·8`, `bq < nb`); `kbuf` holds
    // `KB·hd` f32; element `i < hd` of a block's `qt` is 8 f32 at `qts + bq·hd·8 + 8i`.
    unsafe {
        let mut j = 0;
        while j < n {
            for k in 0..KB {
                for c in (0..hd).step_by(8) {
                    let h = _mm_loadu_si128(keys.add(((j + k) * hd + c) * 2).cast());
                    _mm256_storeu_ps(kbuf.add(k * hd + c), _mm256_cvtph_ps(h));
                }
            }
            for bq in 0..nb {
                let (qt, s) = (qts.add(bq * hd * LANES), ss.add(bq * n * LANES));
                let mut sl = [[_mm256_setzero_ps(); KB]; 8];
                for (l, sl_l) in sl.iter_mut().enumerate() {
                    let (a0, a2) = (chain(kbuf, qt, hd, 0, l), chain(kbuf, qt, hd, 2, l));
                    let x02: [__m256; KB] = std::array::from_fn(|k| _mm256_add_ps(a0[k], a2[k]));
                    let (a1, a3) = (chain(kbuf, qt, hd, 1, l), chain(kbuf, qt, hd, 3, l));
                    for k in 0..KB {
                        sl_l[k] = _mm256_add_ps(x02[k], _mm256_add_ps(a1[k], a3[k]));
                    }
                }
                for k in 0..KB {
                    let t: [__m256; 4] = std::array::from_fn(|m| _mm256_add_ps(sl[m][k], sl[m + 4][k]));
                    let r = _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]));
                    _mm256_storeu_ps(s.add((j + k) * LANES), r);
                }
            }
            j += KB;
        }
    }
}

/// `dot16`'s chain `acc[a][l]` (elements `32b + 8a + l`, `b` ascending) of [`KB`] keys
/// (`kbuf`, f32 `[KB][hd]`) against 8 queries (`qt`, `[hd][8]`).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `kbuf` readable for `KB·hd` f32, `qt` for `hd·8`.
#[inline(always)]
unsafe fn chain(kbuf: *const f32, qt: *const f32, hd: usize, a: usize, l: usize) -> [__m256; KB] {
    // SAFETY: `i < hd` for every block `b < hd / 32`: inside both buffers.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); KB];
        for b in 0..hd / 32 {
            let i = 32 * b + 8 * a + l;
            let qv = _mm256_loadu_ps(qt.add(i * LANES));
            for (k, acc_k) in acc.iter_mut().enumerate() {
                *acc_k = _mm256_fmadd_ps(_mm256_set1_ps(*kbuf.add(k * hd + i)), qv, *acc_k);
            }
        }
        acc
    }
}

/// Softmax of 8 lanes over `n` keys (a multiple of 8) in place, lane `l` masked beyond
/// key `last[l]`.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `s` valid for `n·8` f32, `last` for 8 u32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_entry(s: *mut f32, n: usize, scale: f32, last: *const u32) {
    // SAFETY: every access is row `j < n` of `s` (8 f32) or the 8 u32 of `last`.
    unsafe {
        let lastv = _mm256_loadu_si256(last.cast());
        let sc = _mm256_set1_ps(scale);
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut mx = ninf;
        for j in 0..n {
            // `last ≥ j` as signed `last > j − 1` (positions are below 2³¹).
            let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lastv, _mm256_set1_epi32(j as i32 - 1)));
            let w = _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_loadu_ps(s.add(j * LANES)), sc), keep);
            _mm256_storeu_ps(s.add(j * LANES), w);
            mx = _mm256_max_ps(mx, w);
        }
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for c in (0..n).step_by(8) {
            let e: [__m256; 8] = std::array::from_fn(|m| {
                let e = vexp8(_mm256_sub_ps(_mm256_loadu_ps(s.add((c + m) * LANES)), mx));
                _mm256_storeu_ps(s.add((c + m) * LANES), e);
                e
            });
            let h: [__m256; 4] = std::array::from_fn(|m| _mm256_add_ps(e[m + 4], e[m]));
            let part = _mm256_add_ps(_mm256_add_ps(h[0], h[2]), _mm256_add_ps(h[1], h[3]));
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(part)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(part)));
        }
        let one = _mm256_set1_pd(1.0);
        let inv = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_div_pd(one, hi)), _mm256_cvtpd_ps(_mm256_div_pd(one, lo)));
        for j in 0..n {
            _mm256_storeu_ps(s.add(j * LANES), _mm256_mul_ps(_mm256_loadu_ps(s.add(j * LANES)), inv));
        }
    }
}

/// Channels `d0 .. d0 + R` of the values of `nb` blocks, the channels widened once for all:
/// `out[d·8 + l] = dotblas(V[d][..n], p[·][l])` per block.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; channel `d < d0 + R` is `n` f16 at byte
/// `d·row_stride` of `vals`; `ps` readable for `nb·n·8` f32, `outs` writable for
/// `nb·hd·8` f32 (`d0 + R ≤ hd`), `vbuf` for `R·n` f32; `n % 8 == 0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
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
            for j in (0..n).step_by(8) {
                _mm256_storeu_ps(vbuf.add(r * n + j), _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * j).cast())));
            }
        }
        for bq in 0..nb {
            let (p, out) = (ps.add(bq * n * LANES), outs.add(bq * hd * LANES));
            let mut acc = [[_mm256_setzero_ps(); 8]; R];
            for c in (0..n).step_by(8) {
                for m in 0..8 {
                    let pv = _mm256_loadu_ps(p.add((c + m) * LANES));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        acc_r[m] = _mm256_fmadd_ps(_mm256_set1_ps(*vbuf.add(r * n + c + m)), pv, acc_r[m]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let t: [__m256; 4] = std::array::from_fn(|m| _mm256_add_ps(a[m + 4], a[m]));
                let res = _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]));
                _mm256_storeu_ps(out.add((d0 + r) * LANES), res);
            }
        }
    }
}
