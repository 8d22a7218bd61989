//! Per-token int8 activation quantizer of the I2_S matmul (`quantize_row_i8_avx512`),
//! bit-exact with scalar `quantize_row_i8` (../shared/docs/format.md §4.2).
//!
//! - `max|x|` is a lane-wise maximum of `|x|` reduced over the lanes: without NaN every
//!   order gives the same maximum, and `m = max(1e-5, f64(max))` is the scalar's
//!   sequential f64 maximum. A row holding a NaN redoes the maximum with the scalar's
//!   sequential rule (`m = m > a ? m : a`, where a NaN resets `m` to the next value).
//! - `s = f32(127/m)` in f64, as the scalar.
//! - `q = clamp(rne(f32(x·s)), −128, 127)`: the f32 product, a NaN product set to 0 (the
//!   scalar's `NaN as i8`), rounded to nearest even, clamped, then an exact conversion; the
//!   i32 sum adds the converted lanes (exact integers). A tail shorter than 16 is a masked
//!   step (masked-off lanes are zero: they quantize to 0 and add nothing).

use std::arch::x86_64::*;

use super::Isa;

impl Isa {
    /// Quantizes `x` into `q`, returning `(s, Σ q)`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn quantize_i8(self, x: &[f32], q: &mut [i8]) -> (f32, i32) {
        assert_eq!(x.len(), q.len(), "quantize_i8: output length");
        // SAFETY: `self` proves the AVX-512 features; `x` holds `x.len()` f32 and `q` as many
        // bytes.
        let amax = unsafe { abs_max_entry(x.as_ptr(), x.len()) };
        let s = graph::quant::i8_row_scale(amax, x);
        // SAFETY: as above.
        let sum = unsafe { quantize_entry(x.as_ptr(), s, q.as_mut_ptr(), x.len()) };
        (s, sum)
    }
}

/// The mask of the first `len ≤ 16` lanes.
#[inline(always)]
fn first(len: usize) -> __mmask16 {
    if len >= 16 {
        0xFFFF
    } else {
        ((1u32 << len) - 1) as u16
    }
}

/// `max_i |x[i]|`, or `None` if `x` holds a NaN (0 for an empty row).
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` must be readable for `n` f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn abs_max_entry(x: *const f32, n: usize) -> Option<f32> {
    // SAFETY: step `i` reads elements `i .. i + len` (`i + len ≤ n`) with a masked load
    // (masked-off lanes are neither read nor faulted on).
    unsafe {
        let sign = _mm512_set1_ps(-0.0);
        let mut mx = _mm512_setzero_ps();
        let mut nan: __mmask16 = 0;
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let v = _mm512_maskz_loadu_ps(first(len), x.add(i));
            mx = _mm512_max_ps(mx, _mm512_andnot_ps(sign, v));
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            i += len;
        }
        (nan == 0).then(|| _mm512_reduce_max_ps(mx))
    }
}

/// Writes `q[i] = clamp(rne(f32(x[i]·s)))` and returns `Σ q[i]`.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` must be readable for `n` f32 and `q`
/// writable for `n` bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quantize_entry(x: *const f32, s: f32, q: *mut i8, n: usize) -> i32 {
    // SAFETY: step `i` reads f32 `i .. i + len` and writes bytes `i .. i + len` (`i + len ≤
    // n`) with masked loads and stores, which touch nothing outside the mask.
    unsafe {
        let sv = _mm512_set1_ps(s);
        let (lo, hi) = (_mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
        let mut sum = _mm512_setzero_si512();
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let m = first(len);
            let p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x.add(i)), sv);
            let p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p), p);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
            let v = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
            sum = _mm512_add_epi32(sum, v);
            _mm_mask_storeu_epi8(q.add(i), m, _mm512_cvtepi32_epi8(v));
            i += len;
        }
        _mm512_reduce_add_epi32(sum)
    }
}
