//! Q8_K activation quantizer of the TQ matmuls (`quantize_row_q8_k_avx2`), bit-exact with
//! scalar `quantize_row_q8_k` (shared/reference/README-more-models.md §2.3, §4.2).
//!
//! Per block of 256 (output: `d` as f32, then 256 × i8):
//! - `amax` is the lane-wise `max_ps(|x|, acc)` (`acc` second: a NaN `|x|` leaves `acc`
//!   as it is, as the scalar's `a > amax` skips NaN) reduced over the lanes, which is the
//!   scalar's maximum of the non-NaN `|x|` (the maximum does not depend on the order).
//! - `max` is `x_j` for the FIRST `j` with `|x_j| == amax` (`cmp_eq` + `movemask`), which
//!   is the element the scalar's strict `>` scan keeps, sign included.
//! - `amax == 0` writes an all-zero block; else `iscale = f32(−127/max)` and
//!   `d = f32(1/iscale)` are the scalar's own f32 divisions.
//! - `q = min(127, rne(f32(iscale·x)))` as Rust's saturating `as i32` then `as i8`: a
//!   finite product satisfies |p| ≤ 127·(1 + 2⁻²⁴)² (|x| ≤ |max|), so it rounds
//!   (`round_ps`, nearest even) into [−127, 127]; the non-finite products come from an
//!   infinite `max` (p = ±0 or NaN) or an infinite `iscale` (subnormal or tiny `max`):
//!   NaN → 0, +inf → 127, and −inf → `i32::MIN` truncated to 0. The vector code maps a
//!   rounded value that is NaN or below −128 (only −inf can be) to 0 and takes
//!   `min(·, 127)`, then converts exactly and narrows with the (then non-saturating) packs.

use std::arch::x86_64::*;

use super::{hmax_ps, Isa};

/// Elements per Q8_K block.
pub(crate) const BLOCK: usize = 256;
/// Bytes per Q8_K block as laid out by the scalar backend: f32 `d`, 256 × i8.
pub(crate) const BLOCK_BYTES: usize = 260;

impl Isa {
    /// Quantizes `x` (a multiple of 256 long) into `x.len()/256` Q8_K blocks in `out`.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of 256 or `out.len() != x.len()/256·260`.
    pub(crate) fn quantize_q8_k(self, x: &[f32], out: &mut [u8]) {
        assert!(x.len().is_multiple_of(BLOCK), "quantize_q8_k: length {} is not a multiple of {BLOCK}", x.len());
        assert_eq!(out.len(), x.len() / BLOCK * BLOCK_BYTES, "quantize_q8_k: output length");
        // SAFETY: `self` proves AVX2/FMA/F16C; `x` holds `nb·256` f32 and `out` `nb·260`
        // bytes (asserted above).
        unsafe { quantize_entry(x.as_ptr(), out.as_mut_ptr(), x.len() / BLOCK) }
    }
}

/// Entry point of [`Isa::quantize_q8_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable for `256·nb` f32 and
/// `out` writable for `260·nb` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_entry(x: *const f32, out: *mut u8, nb: usize) {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { quantize_body(x, out, nb) }
}

/// Quantizes 8 values with scale `s` into 8 exact i32 in [−127, 127] (see the module docs).
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn quantize8(v: __m256, s: __m256) -> __m256i {
    // SAFETY: the caller guarantees AVX2; register-only operations.
    unsafe {
        let p = _mm256_mul_ps(s, v);
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
        // NaN (unordered) and −inf compare false: 0, as `as i32` then `as i8` give.
        let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_GE_OQ>(r, _mm256_set1_ps(-128.0)));
        let r = _mm256_min_ps(r, _mm256_set1_ps(127.0));
        _mm256_cvtps_epi32(r)
    }
}

/// Body of [`Isa::quantize_q8_k`].
///
/// # Safety
/// As [`quantize_entry`].
#[inline(always)]
unsafe fn quantize_body(x: *const f32, out: *mut u8, nb: usize) {
    // SAFETY: the caller guarantees the features and that block `b < nb` reads f32
    // `256b .. 256b+256` of `x` and writes bytes `260b .. 260b+260` of `out` (unaligned
    // loads and stores; every offset below stays inside those ranges).
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for b in 0..nb {
            let xb = x.add(BLOCK * b);
            let ob = out.add(BLOCK_BYTES * b);
            let mut mx = _mm256_setzero_ps();
            for j in 0..BLOCK / 8 {
                let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(xb.add(8 * j)));
                mx = _mm256_max_ps(a, mx);
            }
            let amax = hmax_ps(mx);
            if amax == 0.0 {
                std::ptr::write_bytes(ob, 0, BLOCK_BYTES);
                continue;
            }
            // The first element with |x| = amax (one exists: amax is a non-NaN |x_j| > 0;
            // the fallback 0 only keeps the read in bounds).
            let av = _mm256_set1_ps(amax);
            let mut first = 0;
            for j in 0..BLOCK / 8 {
                let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(xb.add(8 * j)));
                let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, av));
                if m != 0 {
                    first = 8 * j + m.trailing_zeros() as usize;
                    break;
                }
            }
            let max = *xb.add(first);
            let iscale: f32 = -127.0f32 / max;
            let sv = _mm256_set1_ps(iscale);
            for g in 0..BLOCK / 32 {
                let xg = xb.add(32 * g);
                let q0 = quantize8(_mm256_loadu_ps(xg), sv);
                let q1 = quantize8(_mm256_loadu_ps(xg.add(8)), sv);
                let q2 = quantize8(_mm256_loadu_ps(xg.add(16)), sv);
                let q3 = quantize8(_mm256_loadu_ps(xg.add(24)), sv);
                let q8 = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
                _mm256_storeu_si256(ob.add(4 + 32 * g).cast::<__m256i>(), _mm256_permutevar8x32_epi32(q8, perm));
            }
            let d: f32 = 1.0f32 / iscale;
            std::ptr::copy_nonoverlapping(d.to_le_bytes().as_ptr(), ob, 4);
        }
    }
}
