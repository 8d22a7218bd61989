//! RMSNorm with its weight over up to eight rows at once (`rms_norm_f32_8rows_avx512`),
//! bit-exact with scalar `rms_norm_f32`.
//!
//! The scalar sums `f64(f32(x²))` in index order, one add per element: a chain of dependent
//! f64 adds that no reassociation may shorten. One row's chain cannot go faster, but eight
//! rows' chains can run side by side: the squares of eight rows are formed 8 elements at a
//! time (f32, as the scalar), transposed so that one register holds element `i` of every
//! row, widened to f64 (exact) and added into an 8-lane f64 accumulator whose lane `r` is
//! row `r`'s sum, still one add per element in index order. The scale
//! `r = 1/sqrtf(f32(Σ/n) + eps)` uses the scalar's expressions, and
//! `out = f32(f32(x·r)·w)` is two separate vector multiplies.

use std::arch::x86_64::*;

use super::Isa;

/// Rows whose sums run side by side.
pub(crate) const ROWS: usize = 8;

impl Isa {
    /// RMSNorm of `x.len()/d` (at most [`ROWS`]) rows of `d` elements with weight `w`, into
    /// `out`.
    ///
    /// # Panics
    /// If `d` is zero, `x` is not 1 to 8 whole rows, or `w`/`out` have the wrong length.
    pub(crate) fn rms_norm_rows(self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        assert!(
            d > 0 && x.len().is_multiple_of(d) && (1..=ROWS).contains(&(x.len() / d)),
            "rms_norm_rows: {} values, rows of {d}",
            x.len()
        );
        assert_eq!(out.len(), x.len(), "rms_norm_rows: output length");
        let rows = x.len() / d;
        let sums = if rows == 1 {
            // One row (a decode step): its chain of dependent f64 adds bounds the time
            // whatever forms the squares, and plain code keeps it free of transposes and of
            // wide stores read back narrowly (the vector form measured 2-3x slower here:
            // `bench -p 0 -n 16 --profile`, RmsNorm per token, 2B shape).
            let mut acc = 0.0f64;
            for &v in x {
                let sq: f32 = v * v;
                acc += f64::from(sq);
            }
            [acc; ROWS]
        } else {
            // SAFETY: `self` proves the AVX-512 features; `x` holds `rows·d` f32 (asserted).
            unsafe { sum_squares_entry(x.as_ptr(), d, rows) }
        };
        for (r, (xr, or)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let mean = (sums[r] / d as f64) as f32;
            let scale: f32 = 1.0f32 / (mean + eps).sqrt();
            // SAFETY: as above; `xr`, `w` and `or` hold `d` f32 each.
            unsafe { scale_entry(xr.as_ptr(), w.as_ptr(), scale, or.as_mut_ptr(), d) }
        }
    }
}

/// Per row `r < rows`: `Σ_i f64(f32(x[r·d + i]²))`, added in index order.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` must be readable for `rows·d` f32 with
/// `rows ≤ 8`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn sum_squares_entry(x: *const f32, d: usize, rows: usize) -> [f64; ROWS] {
    // SAFETY: row `r < rows` is read at elements `i .. i+8` with `i + 8 ≤ d` and then at
    // single elements `< d`; rows `rows..8` are never read (zero registers).
    unsafe {
        let d8 = d - d % 8;
        let mut acc = _mm512_setzero_pd();
        let mut i = 0;
        while i < d8 {
            let mut sq = [_mm256_setzero_ps(); ROWS];
            for (r, s) in sq.iter_mut().enumerate().take(rows) {
                let v = _mm256_loadu_ps(x.add(r * d + i));
                *s = _mm256_mul_ps(v, v);
            }
            // Column j: element i + j of every row.
            for c in transpose8(sq) {
                acc = _mm512_add_pd(acc, _mm512_cvtps_pd(c));
            }
            i += 8;
        }
        for i in d8..d {
            let mut sq = [0.0f32; ROWS];
            for (r, s) in sq.iter_mut().enumerate().take(rows) {
                let v = *x.add(r * d + i);
                *s = v * v;
            }
            acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_loadu_ps(sq.as_ptr())));
        }
        let mut out = [0.0f64; ROWS];
        _mm512_storeu_pd(out.as_mut_ptr(), acc);
        out
    }
}

/// Transposes an 8 × 8 matrix of f32 held in registers (row `i` in `a[i]`).
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn transpose8(a: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: the caller guarantees AVX; register-only operations.
    unsafe {
        let t0 = _mm256_unpacklo_ps(a[0], a[1]);
        let t1 = _mm256_unpackhi_ps(a[0], a[1]);
        let t2 = _mm256_unpacklo_ps(a[2], a[3]);
        let t3 = _mm256_unpackhi_ps(a[2], a[3]);
        let t4 = _mm256_unpacklo_ps(a[4], a[5]);
        let t5 = _mm256_unpackhi_ps(a[4], a[5]);
        let t6 = _mm256_unpacklo_ps(a[6], a[7]);
        let t7 = _mm256_unpackhi_ps(a[6], a[7]);
        let u0 = _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0b01_00_01_00>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0b11_10_11_10>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0b01_00_01_00>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0b11_10_11_10>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// `out[i] = f32(f32(x[i]·r)·w[i])`.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` and `w` must be readable and `out`
/// writable for `n` f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scale_entry(x: *const f32, w: *const f32, r: f32, out: *mut f32, n: usize) {
    // SAFETY: step `i` touches elements `i .. i + len` (`len ≤ 16`, `i + len ≤ n`) through
    // masked loads and stores, which touch nothing outside the mask.
    unsafe {
        let rv = _mm512_set1_ps(r);
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let m: __mmask16 = if len == 16 { 0xFFFF } else { ((1u32 << len) - 1) as u16 };
            let y = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x.add(i)), rv);
            _mm512_mask_storeu_ps(out.add(i), m, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, w.add(i))));
            i += len;
        }
    }
}
