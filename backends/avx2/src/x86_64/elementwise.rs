//! Elementwise f32 ops (`add_f32_avx2`, `mul_f32_avx2`, `relu_f32_avx2`, `sqr_f32_avx2`,
//! `silu_f32_avx2`), bit-exact with the scalar backend: each lane performs the scalar's
//! single f32 operation (`a + b`, `a·b`, `x > 0 ? x : 0` as `max_ps(x, 0)`, `x·x`,
//! `x / (1 + vexp(−x))` with the same [`vexp8`]). A tail shorter than 8 goes through the
//! same vector code on zero-padded copies.

use std::arch::x86_64::*;

use super::softmax::vexp8;
use super::Isa;

/// Which elementwise op to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elementwise {
    /// `a + b`.
    Add,
    /// `a·b`.
    Mul,
    /// `max(x, 0)`: `x > 0 ? x : 0` (NaN and −0 give +0).
    Relu,
    /// `x·x`.
    Sqr,
    /// `x / (1 + vexp(−x))`.
    Silu,
}

impl Isa {
    /// `out[i] = op(a[i], b[i])` for binary ops, `op(a[i])` for unary ones (`b` ignored).
    ///
    /// # Panics
    /// If `a` and `out` differ in length, or `op` is binary and `b` does too.
    pub(crate) fn elementwise(self, op: Elementwise, a: &[f32], b: &[f32], out: &mut [f32]) {
        assert_eq!(a.len(), out.len(), "elementwise: lengths");
        let binary = matches!(op, Elementwise::Add | Elementwise::Mul);
        if binary {
            assert_eq!(b.len(), out.len(), "elementwise: lengths");
        }
        // A unary op never reads `b`; give it `a` so the pointer is valid regardless.
        let b = if binary { b } else { a };
        // SAFETY: `self` proves AVX2/FMA/F16C; `a`, `b` and `out` hold `out.len()` f32.
        unsafe {
            match op {
                Elementwise::Add => add_entry(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), out.len()),
                Elementwise::Mul => mul_entry(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), out.len()),
                Elementwise::Relu => relu_entry(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), out.len()),
                Elementwise::Sqr => sqr_entry(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), out.len()),
                Elementwise::Silu => silu_entry(a.as_ptr(), b.as_ptr(), out.as_mut_ptr(), out.len()),
            }
        }
    }
}

/// Applies `f` to every 8 lanes of `a`, `b` into `out`, the tail through padded copies.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a`, `b` must be readable and `out` writable for `n`
/// f32; `f` must be safe to call given AVX2 and FMA.
#[inline(always)]
unsafe fn map8(a: *const f32, b: *const f32, out: *mut f32, n: usize, f: impl Fn(__m256, __m256) -> __m256) {
    // SAFETY: the caller guarantees the features and the `n`-element ranges; full vectors
    // touch `i .. i+8` with `i + 8 ≤ n`, the tail goes through local buffers.
    unsafe {
        let n8 = n - n % 8;
        let mut i = 0;
        while i < n8 {
            _mm256_storeu_ps(out.add(i), f(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i))));
            i += 8;
        }
        if n8 < n {
            let (mut ab, mut bb) = ([0.0f32; 8], [0.0f32; 8]);
            std::ptr::copy_nonoverlapping(a.add(n8), ab.as_mut_ptr(), n - n8);
            std::ptr::copy_nonoverlapping(b.add(n8), bb.as_mut_ptr(), n - n8);
            let r = f(_mm256_loadu_ps(ab.as_ptr()), _mm256_loadu_ps(bb.as_ptr()));
            _mm256_storeu_ps(ab.as_mut_ptr(), r);
            std::ptr::copy_nonoverlapping(ab.as_ptr(), out.add(n8), n - n8);
        }
    }
}

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, |$x:ident, $y:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C; `a`, `b` must be readable and `out`
        /// writable for `n` f32.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(a: *const f32, b: *const f32, out: *mut f32, n: usize) {
            // SAFETY: the caller guarantees the features and the `n`-element ranges; the
            // closure only uses register operations of those features.
            unsafe { map8(a, b, out, n, |$x: __m256, $y: __m256| $body) }
        }
    };
}

entry!(
    /// `a + b`.
    add_entry, |x, y| _mm256_add_ps(x, y)
);
entry!(
    /// `a·b`.
    mul_entry, |x, y| _mm256_mul_ps(x, y)
);
entry!(
    /// `x > 0 ? x : 0`.
    relu_entry, |x, _y| _mm256_max_ps(x, _mm256_setzero_ps())
);
entry!(
    /// `x·x`.
    sqr_entry, |x, _y| _mm256_mul_ps(x, x)
);
entry!(
    /// `x / (1 + vexp(−x))`.
    silu_entry, |x, _y| _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), vexp8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0)))))
);
