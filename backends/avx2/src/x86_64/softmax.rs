//! ggml's vector `exp` on 8 lanes and the attention softmax (`softmax_f32_avx2`),
//! bit-exact with scalar `vexp_f32` / `softmax_f32` (../shared/docs/format.md §4.2).
//!
//! [`vexp8`] is the scalar `vexp_f32` evaluated lane-wise: the same FMAs and products on
//! the same f32 constants, the same wrapping integer steps on the bit patterns, and the two
//! special branches selected per lane with blends (ordered comparisons, so a NaN lane takes
//! the first branch as in the scalar's `!(|n| > 126)`).
//!
//! Softmax: the maximum is a lane-wise `max_ps` reduced over the lanes (exact without NaN;
//! the sign of a zero maximum cannot change `w − mx`'s exponent); a row holding a NaN uses
//! the scalar's sequential maximum. Each 8-aligned chunk is reduced with the scalar's f32
//! expression on the stored lanes and added to the f64 sum in chunk order.

use std::arch::x86_64::*;

use super::{any_nan, hmax_ps, lanes, Isa};

/// Bit patterns of the f32 constants (hex floats of `ggml_v_expf`).
///
/// `0x1.8p23`.
const SHIFT: u32 = 0x4B40_0000;
/// `0x1.715476p+0`.
const LOG2E: u32 = 0x3FB8_AA3B;
/// `0x1.62e4p-1`.
const LN2_HI: u32 = 0x3F31_7200;
/// `0x1.7f7d1cp-20`.
const LN2_LO: u32 = 0x35BF_BE8E;
/// `0x1.0e4020p-7`.
const P5: u32 = 0x3C07_2010;
/// `0x1.573e2ep-5`.
const P4: u32 = 0x3D2B_9F17;
/// `0x1.555e66p-3`.
const P3: u32 = 0x3E2A_AF33;
/// `0x1.fffdb6p-2`.
const P2: u32 = 0x3EFF_FEDB;
/// `0x1.ffffecp-1`.
const P1: u32 = 0x3F7F_FFF6;

/// The f32 with bit pattern `bits` in every lane.
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn splat(bits: u32) -> __m256 {
    // SAFETY: the caller guarantees AVX; register-only operations.
    unsafe { _mm256_castsi256_ps(_mm256_set1_epi32(bits as i32)) }
}

/// ggml's `ggml_v_expf` on 8 lanes (see the scalar `vexp_f32` for the formula).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline(always)]
pub(crate) unsafe fn vexp8(x: __m256) -> __m256 {
    // SAFETY: the caller guarantees AVX2 and FMA; register-only operations.
    unsafe {
        let shift = splat(SHIFT);
        let z = _mm256_fmadd_ps(x, splat(LOG2E), shift);
        let n = _mm256_sub_ps(z, shift);
        let neg_n = _mm256_xor_ps(n, _mm256_set1_ps(-0.0));
        let b = _mm256_fmadd_ps(neg_n, splat(LN2_LO), _mm256_fmadd_ps(neg_n, splat(LN2_HI), x));
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0))));
        let u = _mm256_mul_ps(b, b);
        let p1b = _mm256_mul_ps(splat(P1), b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_fmadd_ps(splat(P5), b, splat(P4)), u, _mm256_fmadd_ps(splat(P3), b, splat(P2))),
            u,
            p1b,
        );
        let normal = _mm256_fmadd_ps(k, j, k);
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
        if _mm256_movemask_ps(big) == 0 {
            return normal;
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7F00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
        let far = _mm256_mul_ps(s1, s1);
        let near = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
        let special = _mm256_blendv_ps(near, far, huge);
        _mm256_blendv_ps(normal, special, big)
    }
}

impl Isa {
    /// The scalar `softmax_f32` of one row in place (`w.len()` a multiple of 8, as
    /// attention rows are).
    ///
    /// # Panics
    /// If `w.len()` is not a multiple of 8.
    pub(crate) fn softmax(self, w: &mut [f32]) {
        assert!(w.len().is_multiple_of(8), "softmax: length {} is not a multiple of 8", w.len());
        // SAFETY: `self` proves AVX2/FMA/F16C; `w` holds `w.len()` f32, a multiple of 8.
        let mx = unsafe { max_entry(w.as_ptr(), w.len()) };
        let mx = mx.unwrap_or_else(|| {
            let mut mx = f32::NEG_INFINITY;
            for &v in w.iter() {
                mx = if mx > v { mx } else { v };
            }
            mx
        });
        // SAFETY: as above.
        let sum = unsafe { exp_sum_entry(w.as_mut_ptr(), w.len(), mx) };
        let inv = (1.0f64 / sum) as f32;
        // SAFETY: as above.
        unsafe { scale_entry(w.as_mut_ptr(), w.len(), inv) }
    }
}

/// Maximum of `n` (a multiple of 8) values, `None` if one is NaN.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must be readable for `n` f32, `n % 8 == 0`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn max_entry(w: *const f32, n: usize) -> Option<f32> {
    // SAFETY: the caller guarantees the features and `n` (a multiple of 8) readable f32.
    unsafe {
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut nan = _mm256_setzero_ps();
        for i in (0..n).step_by(8) {
            let v = _mm256_loadu_ps(w.add(i));
            mx = _mm256_max_ps(mx, v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
        if any_nan(nan) {
            None
        } else {
            Some(hmax_ps(mx))
        }
    }
}

/// `w[i] = vexp(w[i] − mx)` and the scalar's chunked f64 sum of the results.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must be valid for `n` f32, `n % 8 == 0`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_sum_entry(w: *mut f32, n: usize, mx: f32) -> f64 {
    // SAFETY: the caller guarantees the features and `n` (a multiple of 8) valid f32.
    unsafe {
        let mv = _mm256_set1_ps(mx);
        let mut sum = 0.0f64;
        for i in (0..n).step_by(8) {
            let e = vexp8(_mm256_sub_ps(_mm256_loadu_ps(w.add(i)), mv));
            _mm256_storeu_ps(w.add(i), e);
            let l = lanes(e);
            let h = [l[4] + l[0], l[5] + l[1], l[6] + l[2], l[7] + l[3]];
            let part: f32 = (h[0] + h[2]) + (h[1] + h[3]);
            sum += f64::from(part);
        }
        sum
    }
}

/// `w[i] = f32(w[i]·inv)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must be valid for `n` f32, `n % 8 == 0`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_entry(w: *mut f32, n: usize, inv: f32) {
    // SAFETY: the caller guarantees the features and `n` (a multiple of 8) valid f32.
    unsafe {
        let iv = _mm256_set1_ps(inv);
        for i in (0..n).step_by(8) {
            _mm256_storeu_ps(w.add(i), _mm256_mul_ps(_mm256_loadu_ps(w.add(i)), iv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar backend's `vexp_f32`, transcribed from its documented formula (backends
    /// never depend on each other, so the twin is restated here for this unit test; the
    /// ops-tests compare the ops built on it against the scalar backend itself).
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn vexp_ref(x: f32) -> f32 {
        let c = f32::from_bits;
        let z = x.mul_add(c(LOG2E), c(SHIFT));
        let n: f32 = z - c(SHIFT);
        let b = (-n).mul_add(c(LN2_LO), (-n).mul_add(c(LN2_HI), x));
        let e = z.to_bits() << 23;
        let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
        let u: f32 = b * b;
        let p1b: f32 = c(P1) * b;
        let j = c(P5).mul_add(b, c(P4)).mul_add(u, c(P3).mul_add(b, c(P2))).mul_add(u, p1b);
        if !(n.abs() > 126.0) {
            return k.mul_add(j, k);
        }
        let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
        let s1 = f32::from_bits(g.wrapping_add(0x7F00_0000));
        let s2 = f32::from_bits(e.wrapping_sub(g));
        if n.abs() > 192.0 {
            return s1 * s1;
        }
        let t: f32 = s2.mul_add(j, s2);
        t * s1
    }

    /// `vexp8` on 8 values.
    fn vexp_avx2(x: [f32; 8]) -> [f32; 8] {
        let mut out = [0.0f32; 8];
        // SAFETY: the test only runs when the CPU has AVX2/FMA/F16C (checked just before
        // the call in `vexp8_matches_scalar_formula`); 8 f32 are read from `x` and written
        // to `out` (unaligned).
        unsafe { vexp_test_entry(x.as_ptr(), out.as_mut_ptr()) };
        out
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `x` and `out` must be valid for 8 f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn vexp_test_entry(x: *const f32, out: *mut f32) {
        // SAFETY: the caller guarantees the features and 8 valid f32 at each pointer.
        unsafe { _mm256_storeu_ps(out, vexp8(_mm256_loadu_ps(x))) }
    }

    #[test]
    fn vexp8_matches_scalar_formula() {
        if Isa::detect().is_none() {
            println!("skipped: no AVX2+FMA+F16C");
            return;
        }
        // Dense sweep over every branch (|n| ≤ 126, 126 < |n| ≤ 192, |n| > 192), then the
        // special values.
        let mut xs: Vec<f32> = Vec::new();
        let mut x = -200.0f32;
        while x < 200.0 {
            xs.push(x);
            x += 0.00731;
        }
        xs.extend_from_slice(&[
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -1e-40,
            88.03,
            -88.03,
            87.34,
            -87.34,
        ]);
        xs.resize(xs.len().div_ceil(8) * 8, 1.0);
        for chunk in xs.chunks_exact(8) {
            let got = vexp_avx2(chunk.try_into().unwrap());
            for (&x, g) in chunk.iter().zip(got) {
                let want = vexp_ref(x);
                assert!(
                    want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan()),
                    "vexp({x:e}): scalar {want:e} ({:#x}), avx2 {g:e} ({:#x})",
                    want.to_bits(),
                    g.to_bits()
                );
            }
        }
    }
}
