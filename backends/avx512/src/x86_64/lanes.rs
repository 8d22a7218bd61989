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

    fn scores(&self, keys: &[u8], n: usize, hd: usize, qt: &[f32], s: &mut [f32], scratch: &mut Vec<f32>) {
        assert!(hd.is_multiple_of(32) && n.is_multiple_of(KB), "scores: hd {hd}, {n} keys");
        assert!(keys.len() >= n * hd * 2 && qt.len() >= hd * LANES && s.len() >= n * LANES, "scores: buffers");
        scratch.resize(KB * hd, 0.0);
        // SAFETY: `self.0` proves the AVX-512 features; the asserts bound every access: key
        // rows `j < n` of `hd` f16, `qt` `[hd][16]`, `s` `[n][16]`, `scratch` `[KB][hd]`.
        unsafe { scores_entry(keys.as_ptr(), n, hd, qt.as_ptr(), s.as_mut_ptr(), scratch.as_mut_ptr()) }
    }

    fn softmax(&self, s: &mut [f32], n: usize, scale: f32, last: &[u32]) {
        assert!(n.is_multiple_of(8) && s.len() >= n * LANES && last.len() >= LANES, "softmax: {n} keys");
        // SAFETY: as above: `s` is `[n][16]`, `last` 16 u32.
        unsafe { softmax_entry(s.as_mut_ptr(), n, scale, last.as_ptr()) }
    }

    fn values(&self, vals: &[u8], row_stride: usize, hd: usize, n: usize, p: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        assert!(n.is_multiple_of(16) && hd > 0, "values: {n} positions");
        assert!(
            vals.len() >= (hd - 1) * row_stride + 2 * n && p.len() >= n * LANES && out.len() >= hd * LANES,
            "values: buffers"
        );
        scratch.resize(DB * n, 0.0);
        let mut d = 0;
        while d < hd {
            // SAFETY: `self.0` proves the features; channels `d .. d + DB ≤ hd` of `n` f16
            // are inside `vals` (assert), `p` is `[n][16]`, `out` `[hd][16]`, `scratch`
            // `[DB][n]`.
            unsafe {
                if d + DB <= hd {
                    values_entry::<DB>(vals.as_ptr(), row_stride, d, n, p.as_ptr(), out.as_mut_ptr(), scratch.as_mut_ptr());
                    d += DB;
                } else {
                    values_entry::<1>(vals.as_ptr(), row_stride, d, n, p.as_ptr(), out.as_mut_ptr(), scratch.as_mut_ptr());
                    d += 1;
                }
            }
        }
    }
}

/// Scores of `n` keys (a multiple of [`KB`]) against 16 queries.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `keys` readable for `n·hd` f16, `qt` for
/// `hd·16` f32, `s` writable for `n·16` f32, `kbuf` for `KB·hd` f32; `hd % 32 == 0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scores_entry(keys: *const u8, n: usize, hd: usize, qt: *const f32, s: *mut f32, kbuf: *mut f32) {
    // SAFETY: tile `j` reads key rows `j .. j + KB ≤ n` (`hd` f16 each) and writes `s` rows
    // `j .. j + KB`; `kbuf` holds `KB·hd` f32; element `i < hd` of `qt` is 16 f32 at `16i`.
    unsafe {
        let mut j = 0;
        while j < n {
            for k in 0..KB {
                for c in (0..hd).step_by(16) {
                    let h = _mm256_loadu_si256(keys.add(((j + k) * hd + c) * 2).cast());
                    _mm512_storeu_ps(kbuf.add(k * hd + c), _mm512_cvtph_ps(h));
                }
            }
            let mut sl = [[_mm512_setzero_ps(); KB]; 8];
            for (l, sl_l) in sl.iter_mut().enumerate() {
                let (a0, a2) = (chain(kbuf, qt, hd, 0, l), chain(kbuf, qt, hd, 2, l));
                let x02: [__m512; KB] = std::array::from_fn(|k| _mm512_add_ps(a0[k], a2[k]));
                let (a1, a3) = (chain(kbuf, qt, hd, 1, l), chain(kbuf, qt, hd, 3, l));
                for k in 0..KB {
                    sl_l[k] = _mm512_add_ps(x02[k], _mm512_add_ps(a1[k], a3[k]));
                }
            }
            for k in 0..KB {
                let t: [__m512; 4] = std::array::from_fn(|m| _mm512_add_ps(sl[m][k], sl[m + 4][k]));
                let r = _mm512_add_ps(_mm512_add_ps(t[0], t[1]), _mm512_add_ps(t[2], t[3]));
                _mm512_storeu_ps(s.add((j + k) * LANES), r);
            }
            j += KB;
        }
    }
}

/// `dot16`'s chain `acc[a][l]` (elements `32b + 8a + l`, `b` ascending) of [`KB`] keys
/// (`kbuf`, f32 `[KB][hd]`) against 16 queries (`qt`, `[hd][16]`).
///
/// # Safety
/// The CPU must support AVX-512 F; `kbuf` readable for `KB·hd` f32, `qt` for `hd·16`.
#[inline(always)]
unsafe fn chain(kbuf: *const f32, qt: *const f32, hd: usize, a: usize, l: usize) -> [__m512; KB] {
    // SAFETY: `i < hd` for every block `b < hd / 32`: inside both buffers.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); KB];
        for b in 0..hd / 32 {
            let i = 32 * b + 8 * a + l;
            let qv = _mm512_loadu_ps(qt.add(i * LANES));
            for (k, acc_k) in acc.iter_mut().enumerate() {
                *acc_k = _mm512_fmadd_ps(_mm512_set1_ps(*kbuf.add(k * hd + i)), qv, *acc_k);
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

/// Channels `d0 .. d0 + R` of the values: `out[d·16 + l] = dotblas(V[d][..n], p[·][l])`.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; channel `d < d0 + R` is `n` f16 at byte
/// `d·row_stride` of `vals`; `p` readable for `n·16` f32, `out` writable for `(d0 + R)·16`,
/// `vbuf` for `R·n` f32; `n % 16 == 0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn values_entry<const R: usize>(
    vals: *const u8,
    row_stride: usize,
    d0: usize,
    n: usize,
    p: *const f32,
    out: *mut f32,
    vbuf: *mut f32,
) {
    // SAFETY: the caller's ranges: channel rows `d0 + r` (`n` f16), `p` rows `j < n`, `vbuf`
    // `[R][n]`, `out` rows `d0 + r`.
    unsafe {
        for r in 0..R {
            let row = vals.add((d0 + r) * row_stride);
            for j in (0..n).step_by(16) {
                _mm512_storeu_ps(vbuf.add(r * n + j), _mm512_cvtph_ps(_mm256_loadu_si256(row.add(2 * j).cast())));
            }
        }
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
