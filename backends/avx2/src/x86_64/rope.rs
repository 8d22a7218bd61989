//! Rotary position embedding (`rope_neox_f32_avx2`, `rope_norm_f32_avx2`), bit-exact with
//! the scalar `rope_f32` (../shared/docs/format.md §4.2): the angles come from the same scalar f32
//! code (ggml's iterative θ, `cosf`/`sinf` through std, the very functions the scalar
//! backend calls), and every pair is rotated with the scalar's operations,
//! `x1s = x1·s`, `x1c = x1·c` (each rounded), `out_a = fma(x0, c, −x1s)`,
//! `out_b = fma(x0, s, x1c)`. NeoX pairs `(i, i + n_rot/2)` are two contiguous runs, so
//! eight pairs go in one vector (`vfmsub` is `fma(x0, c, −x1s)`: negating is exact); the
//! normal style's adjacent pairs and the tails use the scalar expressions themselves.

use std::arch::x86_64::*;

use super::Isa;

impl Isa {
    /// Rotates one token's heads in place: `x` is `[n_head, head_dim]` (any number of
    /// whole heads), `n_rot ≤ head_dim` even; dims past `n_rot` are left as they are.
    ///
    /// # Panics
    /// If `x` is not whole heads or `n_rot` is odd or above `head_dim`.
    pub(crate) fn rope_token(self, x: &mut [f32], head_dim: usize, n_rot: usize, pos: i32, freq_base: f32, neox: bool) {
        assert!(head_dim > 0 && x.len().is_multiple_of(head_dim), "rope_token: {} values, head_dim {head_dim}", x.len());
        assert!(n_rot <= head_dim && n_rot.is_multiple_of(2), "rope_token: n_rot = {n_rot}, head_dim = {head_dim}");
        let half = n_rot / 2;
        let theta_scale: f32 = freq_base.powf(-2.0f32 / n_rot as f32);
        let (mut cos, mut sin) = (Vec::with_capacity(half), Vec::with_capacity(half));
        let mut theta = pos as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= theta_scale;
        }
        for head in x.chunks_exact_mut(head_dim) {
            if neox {
                let (lo, hi) = head[..n_rot].split_at_mut(half);
                let vec_end = half - half % 8;
                // SAFETY: `self` proves AVX2/FMA; `lo`, `hi`, `cos` and `sin` all hold
                // `half ≥ vec_end` f32.
                unsafe { neox_entry(lo.as_mut_ptr(), hi.as_mut_ptr(), cos.as_ptr(), sin.as_ptr(), vec_end) };
                for i in vec_end..half {
                    rotate(&mut lo[i], &mut hi[i], cos[i], sin[i]);
                }
            } else {
                for (i, pair) in head[..n_rot].chunks_exact_mut(2).enumerate() {
                    let (a, b) = pair.split_at_mut(1);
                    rotate(&mut a[0], &mut b[0], cos[i], sin[i]);
                }
            }
        }
    }
}

/// The scalar rotation of one pair.
#[inline(always)]
fn rotate(a: &mut f32, b: &mut f32, c: f32, s: f32) {
    let (x0, x1) = (*a, *b);
    let x1s: f32 = x1 * s;
    let x1c: f32 = x1 * c;
    *a = x0.mul_add(c, -x1s);
    *b = x0.mul_add(s, x1c);
}

/// Entry point of the NeoX vector loop.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `lo`, `hi` (read and written), `cos` and `sin` must
/// hold `n` f32, `n` a multiple of 8, and `lo`, `hi` must not overlap.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn neox_entry(lo: *mut f32, hi: *mut f32, cos: *const f32, sin: *const f32, n: usize) {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { neox_body(lo, hi, cos, sin, n) }
}

/// Body of [`neox_entry`].
///
/// # Safety
/// As [`neox_entry`].
#[inline(always)]
unsafe fn neox_body(lo: *mut f32, hi: *mut f32, cos: *const f32, sin: *const f32, n: usize) {
    // SAFETY: the caller guarantees the features and that elements `i .. i+8` (i < n, step
    // 8) of the four arrays are valid; loads and stores are unaligned.
    unsafe {
        for i in (0..n).step_by(8) {
            let x0 = _mm256_loadu_ps(lo.add(i));
            let x1 = _mm256_loadu_ps(hi.add(i));
            let c = _mm256_loadu_ps(cos.add(i));
            let s = _mm256_loadu_ps(sin.add(i));
            let x1s = _mm256_mul_ps(x1, s);
            let x1c = _mm256_mul_ps(x1, c);
            _mm256_storeu_ps(lo.add(i), _mm256_fmsub_ps(x0, c, x1s));
            _mm256_storeu_ps(hi.add(i), _mm256_fmadd_ps(x0, s, x1c));
        }
    }
}
