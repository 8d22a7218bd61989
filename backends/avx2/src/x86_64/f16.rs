//! The two F16 dot products (../shared/docs/format.md §4.3) as row tiles, and f32 → f16 rounding.
//!
//! - `dot16` ([`Isa::dot16_tile`], `vec_dot_f16_avx2`): four 8-lane accumulators over
//!   32-element blocks, `acc[a] = fma(w[base+8a..], x[base+8a..], acc[a])`, which is the
//!   scalar `vec_dot_f16`'s lane assignment and FMA chain exactly (it was written after
//!   this very AVX2 loop). The final reduction is done on the stored lanes with the
//!   scalar's expression. The activation is passed already widened to f32 (an f16 widened
//!   to f32 is exact, so `fma(w, f32(x16), acc)` is the scalar's product). Elements past
//!   the last multiple of 32 are the caller's (the scalar adds them in f64 afterwards).
//! - `dotblas` ([`Isa::dotblas_tile`], `vec_dot_f16_f32_avx2`): one 8-lane accumulator,
//!   `acc = fma(w[i..i+8], x[i..i+8], acc)`, lane = index mod 8 like the scalar. A tail of
//!   fewer than 8 elements goes through the same FMA on zero-padded copies and is blended
//!   into the lanes it owns only, so untouched lanes keep their exact bits (even a −0).
//!
//! Both tiles share every activation load between their rows.

use std::arch::x86_64::*;

use super::{first_lanes, lanes, load_f16x8, Isa};

impl Isa {
    /// `dot16` without its f64 tail for an `R × N` tile: `R` f16 rows against `N`
    /// activation rows (f32 values that are exact f16s), the reduced lanes of the first
    /// `32·(k/32)` elements of each pair.
    ///
    /// Row `r` starts at byte `r·row_stride` of `w` (little-endian f16); token `n` at element
    /// `n·x_stride` of `x`.
    ///
    /// # Panics
    /// If a row or token reaches past its slice.
    pub(crate) fn dot16_tile<const R: usize, const N: usize>(
        self,
        w: &[u8],
        row_stride: usize,
        x: &[f32],
        x_stride: usize,
        k: usize,
    ) -> [[f32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        let nb = k / 32;
        assert!((R - 1) * row_stride + 64 * nb <= w.len(), "dot16_tile: {R} rows of {} f16 exceed the slice", 32 * nb);
        assert!((N - 1) * x_stride + 32 * nb <= x.len(), "dot16_tile: {N} tokens of {} f32 exceed the slice", 32 * nb);
        // SAFETY: `self` proves AVX2/FMA/F16C; the asserts keep `R` rows of `32·nb` f16
        // (`64·nb` bytes, `row_stride` apart) inside `w`, and `N` rows of `32·nb` f32
        // (`x_stride` apart) inside `x`.
        unsafe { dot16_entry::<R, N>(w.as_ptr(), row_stride, x.as_ptr(), x_stride, nb) }
    }

    /// `dotblas` for an `R × N` tile: `out[r][n] = Σ w_r[i]·x_n[i]` over `n_elems`
    /// elements, the scalar `vec_dot_f16_f32`'s lanes and reduction.
    ///
    /// Row `r` starts at byte `r·row_stride` of `w` (f16); token `n` at element
    /// `n·x_stride` of `x`.
    ///
    /// # Panics
    /// If a row or token reaches past its slice.
    pub(crate) fn dotblas_tile<const R: usize, const N: usize>(
        self,
        w: &[u8],
        row_stride: usize,
        x: &[f32],
        x_stride: usize,
        n_elems: usize,
    ) -> [[f32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        assert!((R - 1) * row_stride + 2 * n_elems <= w.len(), "dotblas_tile: {R} rows of {n_elems} f16 exceed the slice");
        assert!((N - 1) * x_stride + n_elems <= x.len(), "dotblas_tile: {N} rows of {n_elems} f32 exceed the slice");
        // SAFETY: `self` proves AVX2/FMA/F16C; the asserts keep the R weight rows
        // (`2·n_elems` bytes each) inside `w` and the N activation rows inside `x`.
        unsafe { dotblas_entry::<R, N>(w.as_ptr(), row_stride, x.as_ptr(), x_stride, n_elems) }
    }

    /// `out[i] = f32(f16(x[i]))`: rounds to the nearest f16, ties to even (`vcvtps2ph`
    /// with immediate 0, what `half::f16::from_f32` does on an F16C CPU), widened back
    /// (exact).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn round_f16(self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), out.len(), "round_f16: lengths");
        // SAFETY: `self` proves AVX2/FMA/F16C; both slices hold `x.len()` f32.
        unsafe { round_f16_entry(x.as_ptr(), out.as_mut_ptr(), x.len()) }
    }

    /// `out[i] = f16(x[i])`, nearest even (as [`Isa::round_f16`], without widening).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn to_f16(self, x: &[f32], out: &mut [half::f16]) {
        assert_eq!(x.len(), out.len(), "to_f16: lengths");
        // SAFETY: `self` proves AVX2/FMA/F16C; `x` holds `x.len()` f32 and `out` as many
        // f16 (2 bytes each, written unaligned).
        unsafe { to_f16_entry(x.as_ptr(), out.as_mut_ptr().cast::<u8>(), x.len()) }
    }
}

/// Entry point of [`Isa::dot16_tile`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w + r·row_stride` must be readable for
/// `64·nb` bytes for every `r < R`, and `x + n·x_stride` for `32·nb` f32 for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot16_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { dot16_body::<R, N>(w, row_stride, x, x_stride, nb) }
}

/// Body of [`Isa::dot16_tile`].
///
/// # Safety
/// As [`dot16_entry`].
#[inline(always)]
unsafe fn dot16_body<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: the caller guarantees the features and that block `b < nb` (elements
    // `32b .. 32b+32`, bytes `64b .. 64b+64` of each row; the same elements of each token)
    // is readable.
    unsafe {
        let mut acc = [[[_mm256_setzero_ps(); 4]; N]; R];
        for b in 0..nb {
            // One row tile streams once (the LM head): prefetch this block (64 bytes, one
            // line) of the next tile's rows into L1 and of the tile after three more into
            // L2, as the I2_S GEMV does. Hints only, never dereferenced, so addresses past
            // the slice are fine. (`bench --profile`, 2B shape, 2 threads, Xeon VM, A/B ×3:
            // LM head 25.0 → 21.8 ms/token median, decode 17.3 → 18.9 tok/s.)
            for r in 0..R {
                let near = w.wrapping_add((R + r) * row_stride + 64 * b);
                _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                let far = w.wrapping_add((4 * R + r) * row_stride + 64 * b);
                _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
            }
            for a in 0..4 {
                let i = 32 * b + 8 * a;
                let mut wv = [_mm256_setzero_ps(); R];
                for (r, v) in wv.iter_mut().enumerate() {
                    *v = load_f16x8(w.add(r * row_stride + 2 * i));
                }
                for n in 0..N {
                    let xv = _mm256_loadu_ps(x.add(n * x_stride + i));
                    for (acc_r, v) in acc.iter_mut().zip(&wv) {
                        acc_r[n][a] = _mm256_fmadd_ps(*v, xv, acc_r[n][a]);
                    }
                }
            }
        }
        let mut out = [[0.0f32; N]; R];
        for (o_r, acc_r) in out.iter_mut().zip(&acc) {
            for (o, acc_rn) in o_r.iter_mut().zip(acc_r) {
                let a = [lanes(acc_rn[0]), lanes(acc_rn[1]), lanes(acc_rn[2]), lanes(acc_rn[3])];
                let mut s = [0.0f32; 8];
                for (l, sl) in s.iter_mut().enumerate() {
                    *sl = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
                }
                let t = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
                *o = (t[0] + t[1]) + (t[2] + t[3]);
            }
        }
        out
    }
}

/// Entry point of [`Isa::dotblas_tile`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w + r·row_stride` must be readable for
/// `2·n` bytes for every `r < R`, and `x + j·x_stride` for `n` f32 for every `j < N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dotblas_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    n: usize,
) -> [[f32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { dotblas_body::<R, N>(w, row_stride, x, x_stride, n) }
}

/// Body of [`Isa::dotblas_tile`].
///
/// # Safety
/// As [`dotblas_entry`].
#[inline(always)]
unsafe fn dotblas_body<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    n: usize,
) -> [[f32; N]; R] {
    // SAFETY: the caller guarantees the features and the readable ranges; the main loop
    // reads elements `i .. i+8` with `i + 8 ≤ n`, and the tail copies the last `n − n8`
    // elements into local zero-padded buffers before loading from those.
    unsafe {
        let n8 = n - n % 8;
        let mut acc = [[_mm256_setzero_ps(); N]; R];
        let mut i = 0;
        while i < n8 {
            let mut wv = [_mm256_setzero_ps(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = load_f16x8(w.add(r * row_stride + 2 * i));
            }
            for j in 0..N {
                let xv = _mm256_loadu_ps(x.add(j * x_stride + i));
                for (acc_r, v) in acc.iter_mut().zip(&wv) {
                    acc_r[j] = _mm256_fmadd_ps(*v, xv, acc_r[j]);
                }
            }
            i += 8;
        }
        let rem = n - n8;
        if rem > 0 {
            let keep = _mm256_castsi256_ps(first_lanes(rem));
            let mut wv = [_mm256_setzero_ps(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                let mut buf = [0u8; 16];
                std::ptr::copy_nonoverlapping(w.add(r * row_stride + 2 * n8), buf.as_mut_ptr(), 2 * rem);
                *v = load_f16x8(buf.as_ptr());
            }
            for j in 0..N {
                let mut buf = [0.0f32; 8];
                std::ptr::copy_nonoverlapping(x.add(j * x_stride + n8), buf.as_mut_ptr(), rem);
                let xv = _mm256_loadu_ps(buf.as_ptr());
                for (acc_r, v) in acc.iter_mut().zip(&wv) {
                    acc_r[j] = _mm256_blendv_ps(acc_r[j], _mm256_fmadd_ps(*v, xv, acc_r[j]), keep);
                }
            }
        }
        let mut out = [[0.0f32; N]; R];
        for (o_r, acc_r) in out.iter_mut().zip(&acc) {
            for (o, a) in o_r.iter_mut().zip(acc_r) {
                let l = lanes(*a);
                let t = [l[4] + l[0], l[5] + l[1], l[6] + l[2], l[7] + l[3]];
                *o = (t[0] + t[2]) + (t[1] + t[3]);
            }
        }
        out
    }
}

/// Entry point of [`Isa::round_f16`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable and `out` writable for
/// `n` f32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_f16_entry(x: *const f32, out: *mut f32, n: usize) {
    // SAFETY: the caller guarantees the features and that elements `i < n` of `x` and
    // `out` are valid; full vectors cover `i + 8 ≤ n`, the tail goes through a local buffer.
    unsafe {
        let n8 = n - n % 8;
        let mut i = 0;
        while i < n8 {
            _mm256_storeu_ps(out.add(i), round_f16x8(_mm256_loadu_ps(x.add(i))));
            i += 8;
        }
        if n8 < n {
            let mut buf = [0.0f32; 8];
            std::ptr::copy_nonoverlapping(x.add(n8), buf.as_mut_ptr(), n - n8);
            _mm256_storeu_ps(buf.as_mut_ptr(), round_f16x8(_mm256_loadu_ps(buf.as_ptr())));
            std::ptr::copy_nonoverlapping(buf.as_ptr(), out.add(n8), n - n8);
        }
    }
}

/// `f32(f16(v))` per lane, nearest even.
///
/// # Safety
/// The CPU must support AVX and F16C.
#[inline(always)]
unsafe fn round_f16x8(v: __m256) -> __m256 {
    // SAFETY: the caller guarantees F16C; register-only operations.
    unsafe { _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
}

/// Entry point of [`Isa::to_f16`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable for `n` f32 and `out`
/// writable for `2·n` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn to_f16_entry(x: *const f32, out: *mut u8, n: usize) {
    // SAFETY: the caller guarantees the features and the valid ranges; full vectors cover
    // `i + 8 ≤ n` (16 output bytes at `2i`), the tail goes through local buffers.
    unsafe {
        let n8 = n - n % 8;
        let mut i = 0;
        while i < n8 {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.add(i)));
            _mm_storeu_si128(out.add(2 * i).cast::<__m128i>(), h);
            i += 8;
        }
        if n8 < n {
            let mut buf = [0.0f32; 8];
            std::ptr::copy_nonoverlapping(x.add(n8), buf.as_mut_ptr(), n - n8);
            let mut hb = [0u8; 16];
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(buf.as_ptr()));
            _mm_storeu_si128(hb.as_mut_ptr().cast::<__m128i>(), h);
            std::ptr::copy_nonoverlapping(hb.as_ptr(), out.add(2 * n8), 2 * (n - n8));
        }
    }
}
