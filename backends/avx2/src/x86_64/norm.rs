//! RMSNorm with its weight (`rms_norm_f32_avx2`), bit-exact with scalar `rms_norm_f32`.
//!
//! The squares are formed 8 at a time in f32 and widened to f64 (both exact per element,
//! as in the scalar), but the f64 sum stays sequential in index order, one add per element:
//! reassociating it would change the rounding. The scale `r` is computed with the scalar's
//! f32 expression, and `out = f32(f32(x·r)·w)` is two separate vector multiplies.

use std::arch::x86_64::*;

use super::Isa;

impl Isa {
    /// `out[i] = f32(f32(x[i]·r)·w[i])` with `r = 1/sqrtf(f32(Σ f64(f32(x²)) / n) + eps)`.
    ///
    /// # Panics
    /// If `w` or `out` do not have the length of `x`.
    pub(crate) fn rms_norm(self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        assert_eq!(w.len(), x.len(), "rms_norm: weight length");
        assert_eq!(out.len(), x.len(), "rms_norm: output length");
        if x.is_empty() {
            return;
        }
        // SAFETY: `self` proves AVX2/FMA/F16C; `x` and `out` hold `x.len()` f32.
        let acc = unsafe { sum_squares_entry(x.as_ptr(), x.len()) };
        let mean = (acc / x.len() as f64) as f32;
        let r: f32 = 1.0f32 / (mean + eps).sqrt();
        // SAFETY: as above; `w` has the length of `x` (asserted).
        unsafe { scale_entry(x.as_ptr(), w.as_ptr(), r, out.as_mut_ptr(), x.len()) }
    }
}

/// `Σ f64(f32(x[i]·x[i]))`, added in index order.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable for `n` f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_squares_entry(x: *const f32, n: usize) -> f64 {
    // SAFETY: the caller guarantees the features and `n` readable f32; full vectors read
    // `i .. i+8` with `i + 8 ≤ n`, the tail reads single elements below `n`.
    unsafe {
        let n8 = n - n % 8;
        let mut acc = 0.0f64;
        let mut i = 0;
        while i < n8 {
            let v = _mm256_loadu_ps(x.add(i));
            let sq = _mm256_mul_ps(v, v);
            let mut d = [0.0f64; 8];
            _mm256_storeu_pd(d.as_mut_ptr(), _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
            _mm256_storeu_pd(d.as_mut_ptr().add(4), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(sq)));
            for v in d {
                acc += v;
            }
            i += 8;
        }
        for j in n8..n {
            let v = *x.add(j);
            let sq: f32 = v * v;
            acc += f64::from(sq);
        }
        acc
    }
}

/// `out[i] = f32(f32(x[i]·r)·w[i])`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` and `w` must be readable and `out`
/// writable for `n` f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_entry(x: *const f32, w: *const f32, r: f32, out: *mut f32, n: usize) {
    // SAFETY: the caller guarantees the features and the `n`-element ranges; full vectors
    // touch `i .. i+8` with `i + 8 ≤ n`, the tail single elements below `n`.
    unsafe {
        let rv = _mm256_set1_ps(r);
        let n8 = n - n % 8;
        let mut i = 0;
        while i < n8 {
            let y = _mm256_mul_ps(_mm256_loadu_ps(x.add(i)), rv);
            _mm256_storeu_ps(out.add(i), _mm256_mul_ps(y, _mm256_loadu_ps(w.add(i))));
            i += 8;
        }
        for j in n8..n {
            let y: f32 = *x.add(j) * r;
            *out.add(j) = y * *w.add(j);
        }
    }
}
