//! ggml's vector `exp` on 16 lanes and the attention softmax (`softmax_f32_avx512`),
//! bit-exact with scalar `vexp_f32` / `softmax_f32` (../shared/docs/format.md §4.2).
//!
//! [`vexp16`] is the scalar `vexp_f32` evaluated lane-wise: the same FMAs and products on
//! the same f32 constants, the same wrapping integer steps on the bit patterns, and the two
//! special branches selected per lane with mask blends (ordered comparisons, so a NaN lane
//! takes the first branch as in the scalar's `!(|n| > 126)`).
//!
//! Softmax: the maximum is a lane-wise maximum reduced over the lanes (exact without NaN);
//! a row holding a NaN uses the scalar's sequential maximum. Each 8-aligned chunk (half a
//! register) is reduced with the scalar's f32 expression on the stored lanes and added to
//! the f64 sum in chunk order.

use std::arch::x86_64::*;

use super::Isa;

/// Bit patterns of the f32 constants (hex floats of `ggml_v_expf`): `0x1.8p23`.
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
/// The CPU must support AVX-512 F.
#[inline(always)]
unsafe fn splat(bits: u32) -> __m512 {
    // SAFETY: the caller guarantees AVX-512 F; register-only operations.
    unsafe { _mm512_castsi512_ps(_mm512_set1_epi32(bits as i32)) }
}

/// ggml's `ggml_v_expf` on 16 lanes (see the scalar `vexp_f32` for the formula).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[inline(always)]
pub(crate) unsafe fn vexp16(x: __m512) -> __m512 {
    // SAFETY: the caller guarantees AVX-512 F; register-only operations.
    unsafe {
        let shift = splat(SHIFT);
        let z = _mm512_fmadd_ps(x, splat(LOG2E), shift);
        let n = _mm512_sub_ps(z, shift);
        let neg_n = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(n), _mm512_set1_epi32(i32::MIN)));
        let b = _mm512_fmadd_ps(neg_n, splat(LN2_LO), _mm512_fmadd_ps(neg_n, splat(LN2_HI), x));
        let e = _mm512_slli_epi32::<23>(_mm512_castps_si512(z));
        let k = _mm512_castsi512_ps(_mm512_add_epi32(e, _mm512_castps_si512(_mm512_set1_ps(1.0))));
        let u = _mm512_mul_ps(b, b);
        let p1b = _mm512_mul_ps(splat(P1), b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_fmadd_ps(splat(P5), b, splat(P4)), u, _mm512_fmadd_ps(splat(P3), b, splat(P2))),
            u,
            p1b,
        );
        let normal = _mm512_fmadd_ps(k, j, k);
        let abs_n = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(n), _mm512_set1_epi32(i32::MAX)));
        let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs_n, _mm512_set1_ps(126.0));
        if big == 0 {
            return normal;
        }
        let le0 = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
        let g = _mm512_maskz_mov_epi32(le0, _mm512_set1_epi32(0x8200_0000u32 as i32));
        let s1 = _mm512_castsi512_ps(_mm512_add_epi32(g, _mm512_set1_epi32(0x7F00_0000)));
        let s2 = _mm512_castsi512_ps(_mm512_sub_epi32(e, g));
        let huge = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs_n, _mm512_set1_ps(192.0));
        let far = _mm512_mul_ps(s1, s1);
        let near = _mm512_mul_ps(_mm512_fmadd_ps(s2, j, s2), s1);
        let special = _mm512_mask_blend_ps(huge, near, far);
        _mm512_mask_blend_ps(big, normal, special)
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
        // SAFETY: `self` proves the AVX-512 features; `w` holds `w.len()` f32.
        let mx = unsafe { max_entry(w.as_ptr(), w.len()) }.unwrap_or_else(|| {
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

/// Mask of the first `len ≤ 16` lanes.
#[inline(always)]
fn first(len: usize) -> __mmask16 {
    if len >= 16 {
        0xFFFF
    } else {
        ((1u32 << len) - 1) as u16
    }
}

/// Maximum of `n` values, `None` if one is NaN.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `w` must be readable for `n` f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn max_entry(w: *const f32, n: usize) -> Option<f32> {
    // SAFETY: step `i` reads `i .. i + len ≤ n` through a masked load (masked-off lanes are
    // −inf and never read).
    unsafe {
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut nan: __mmask16 = 0;
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), first(len), w.add(i));
            mx = _mm512_max_ps(mx, v);
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            i += len;
        }
        (nan == 0).then(|| _mm512_reduce_max_ps(mx))
    }
}

/// `w[i] = vexp(w[i] − mx)` and the scalar's chunked f64 sum of the results.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `w` must be valid for `n` f32, `n % 8 == 0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn exp_sum_entry(w: *mut f32, n: usize, mx: f32) -> f64 {
    // SAFETY: step `i` touches `i .. i + len ≤ n` (`len` 8 or 16) through masked loads and
    // stores.
    unsafe {
        let mv = _mm512_set1_ps(mx);
        let mut sum = 0.0f64;
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let m = first(len);
            let e = vexp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, w.add(i)), mv));
            _mm512_mask_storeu_ps(w.add(i), m, e);
            let mut l = [0.0f32; 16];
            _mm512_storeu_ps(l.as_mut_ptr(), e);
            for c in l[..len].chunks_exact(8) {
                let h = [c[4] + c[0], c[5] + c[1], c[6] + c[2], c[7] + c[3]];
                let part: f32 = (h[0] + h[2]) + (h[1] + h[3]);
                sum += f64::from(part);
            }
            i += len;
        }
        sum
    }
}

/// `w[i] = f32(w[i]·inv)`.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `w` must be valid for `n` f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scale_entry(w: *mut f32, n: usize, inv: f32) {
    // SAFETY: step `i` touches `i .. i + len ≤ n` through masked loads and stores.
    unsafe {
        let iv = _mm512_set1_ps(inv);
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let m = first(len);
            _mm512_mask_storeu_ps(w.add(i), m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w.add(i)), iv));
            i += len;
        }
    }
}
