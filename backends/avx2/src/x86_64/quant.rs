//! Per-token int8 activation quantizer of the I2_S matmul (`quantize_row_i8_avx2`),
//! bit-exact with scalar `quantize_row_i8` (../shared/docs/format.md §4.2).
//!
//! - `max|x|` is a lane-wise `max_ps` of `|x|`, reduced over the lanes: without NaN every
//!   order gives the same maximum, and `m = max(1e-5, f64(max))` is then the scalar's
//!   sequential f64 maximum. A row holding a NaN redoes the maximum with the scalar's
//!   sequential rule (`m = m > a ? m : a`, where a NaN resets `m` to the next value).
//! - `s = f32(127/m)` in f64, as the scalar.
//! - `q = clamp(rne(f32(x·s)), −128, 127)`: the f32 product, a NaN product set to 0 (the
//!   scalar's `NaN as i8`), `_mm256_round_ps` to nearest even, `max`/`min` clamp, then an
//!   exact conversion. The i32 sum adds the converted lanes (exact integers).
//! - A tail shorter than 8 goes through the same vector code on a zero-padded copy (a
//!   padding zero quantizes to 0 and adds nothing to the sum).

use std::arch::x86_64::*;

use super::{hmax_ps, hsum_epi32, Isa};

impl Isa {
    /// Quantizes `x` into `q`, returning `(s, Σ q)`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn quantize_i8(self, x: &[f32], q: &mut [i8]) -> (f32, i32) {
        assert_eq!(x.len(), q.len(), "quantize_i8: output length");
        // SAFETY: `self` proves AVX2/FMA/F16C; `x` holds `x.len()` f32 and `q` as many bytes.
        let amax = unsafe { abs_max_entry(x.as_ptr(), x.len()) };
        let s = graph::quant::i8_row_scale(amax, x);
        // SAFETY: as above.
        let sum = unsafe { quantize_entry(x.as_ptr(), s, q.as_mut_ptr(), x.len()) };
        (s, sum)
    }
}

/// `max_i |x[i]|`, or `None` if `x` holds a NaN (0 for an empty row).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable for `n` f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_max_entry(x: *const f32, n: usize) -> Option<f32> {
    // SAFETY: the caller guarantees the features and `n` readable f32; full vectors read
    // `i .. i+8` with `i + 8 ≤ n`, the tail single elements below `n`.
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let mut mx = _mm256_setzero_ps();
        let mut nan = _mm256_setzero_ps();
        let n8 = n - n % 8;
        let mut i = 0;
        while i < n8 {
            let v = _mm256_loadu_ps(x.add(i));
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            i += 8;
        }
        if _mm256_movemask_ps(nan) != 0 {
            return None;
        }
        let mut m = hmax_ps(mx);
        for j in n8..n {
            let a = (*x.add(j)).abs();
            if a.is_nan() {
                return None;
            }
            m = if m > a { m } else { a };
        }
        Some(m)
    }
}

/// Quantizes 8 values with scale `s` into 8 exact i32.
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn quantize8(v: __m256, s: __m256) -> __m256i {
    // SAFETY: the caller guarantees AVX2; register-only operations.
    unsafe {
        let p = _mm256_mul_ps(v, s);
        let p = _mm256_and_ps(p, _mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
        let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
        _mm256_cvtps_epi32(r)
    }
}

/// Writes `q[i] = clamp(rne(f32(x[i]·s)))` and returns `Σ q[i]`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable for `n` f32 and `q`
/// writable for `n` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_entry(x: *const f32, s: f32, q: *mut i8, n: usize) -> i32 {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { quantize_body(x, s, q, n) }
}

/// Body of [`quantize_entry`].
///
/// # Safety
/// As [`quantize_entry`].
#[inline(always)]
unsafe fn quantize_body(x: *const f32, s: f32, q: *mut i8, n: usize) -> i32 {
    // SAFETY: the caller guarantees the features and the `n`-element ranges. Blocks of 32
    // read `i .. i+32` and write 32 bytes at `i` with `i + 32 ≤ n`; blocks of 8 likewise
    // with `i + 8 ≤ n` (8 bytes written through a local buffer); the last `n % 8`
    // elements go through zero-padded local buffers.
    unsafe {
        let sv = _mm256_set1_ps(s);
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut sum = _mm256_setzero_si256();
        let n32 = n - n % 32;
        let mut i = 0;
        while i < n32 {
            let a = quantize8(_mm256_loadu_ps(x.add(i)), sv);
            let b = quantize8(_mm256_loadu_ps(x.add(i + 8)), sv);
            let c = quantize8(_mm256_loadu_ps(x.add(i + 16)), sv);
            let d = quantize8(_mm256_loadu_ps(x.add(i + 24)), sv);
            sum = _mm256_add_epi32(_mm256_add_epi32(sum, _mm256_add_epi32(a, b)), _mm256_add_epi32(c, d));
            let q8 = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
            _mm256_storeu_si256(q.add(i).cast::<__m256i>(), _mm256_permutevar8x32_epi32(q8, perm));
            i += 32;
        }
        while i < n {
            let len = (n - i).min(8);
            let mut xb = [0.0f32; 8];
            std::ptr::copy_nonoverlapping(x.add(i), xb.as_mut_ptr(), len);
            let a = quantize8(_mm256_loadu_ps(xb.as_ptr()), sv);
            sum = _mm256_add_epi32(sum, a);
            let mut qi = [0i32; 8];
            _mm256_storeu_si256(qi.as_mut_ptr().cast::<__m256i>(), a);
            for (j, &v) in qi.iter().enumerate().take(len) {
                // `v` is an exact integer in [−128, 127].
                *q.add(i + j) = v as i8;
            }
            i += len;
        }
        hsum_epi32(sum)
    }
}
