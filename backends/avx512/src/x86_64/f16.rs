//! The two F16 dot products (../shared/docs/format.md §4.3) as row tiles on 512-bit registers, and
//! f32 → f16 rounding, bit-exact with scalar `vec_dot_f16` / `vec_dot_f16_f32`.
//!
//! - `dot16` ([`Isa::dot16_tile`], `vec_dot_f16_avx512`): the scalar keeps four 8-lane
//!   accumulators over 32-element blocks (`acc[a][l]` gets element `32b + 8a + l`). Here
//!   register 0 holds `acc[0] | acc[1]` (elements `32b .. 32b+16`) and register 1 holds
//!   `acc[2] | acc[3]`: the same FMA chain per lane. The reduction adds the two registers
//!   (lanes `acc[0]+acc[2] | acc[1]+acc[3]`, the scalar's inner sums), then the halves (the
//!   scalar's `s_l`), then the scalar's expression on the stored lanes. Elements past the
//!   last multiple of 32 are added in f64 afterwards, one at a time, as the scalar does.
//!   The activation is passed already rounded to f16 and widened (exact).
//! - `dotblas` ([`Isa::dotblas_tile`], `vec_dot_f16_f32_avx512`): one 8-lane accumulator
//!   per row, lane = index mod 8, in index order. Two rows share a register (row `r` in
//!   lanes 0..8, row `r+1` in lanes 8..16, the activations broadcast to both halves), so a
//!   512-bit FMA advances two chains. A tail of fewer than 8 elements is a masked FMA: the
//!   lanes it does not own keep their exact bits.

use std::arch::x86_64::*;

use super::Isa;

impl Isa {
    /// `dot16` of an `R × N` tile: `R` f16 rows against `N` activation rows (f32 values
    /// that are exact f16s), over `k` elements, the f64 tail included.
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
        assert!((R - 1) * row_stride + 2 * k <= w.len(), "dot16_tile: {R} rows of {k} f16 exceed the slice");
        assert!((N - 1) * x_stride + k <= x.len(), "dot16_tile: {N} tokens of {k} f32 exceed the slice");
        // SAFETY: `self` proves the AVX-512 features; the asserts keep `R` rows of `k` f16
        // (`row_stride` bytes apart) inside `w` and `N` rows of `k` f32 inside `x`.
        let mut out = unsafe { dot16_entry::<R, N>(w.as_ptr(), row_stride, x.as_ptr(), x_stride, k / 32) };
        if !k.is_multiple_of(32) {
            for (r, o_r) in out.iter_mut().enumerate() {
                for (n, o) in o_r.iter_mut().enumerate() {
                    // The scalar's ending: f32(f64(r) + Σ_tail f64(f32(w·x))).
                    let mut sum = f64::from(*o);
                    for i in k - k % 32..k {
                        let b = r * row_stride + 2 * i;
                        let p: f32 = half::f16::from_le_bytes([w[b], w[b + 1]]).to_f32() * x[n * x_stride + i];
                        sum += f64::from(p);
                    }
                    *o = sum as f32;
                }
            }
        }
        out
    }

    /// `dotblas` of an `R × N` tile: `out[r][n] = Σ w_r[i]·x_n[i]` over `k` elements, the
    /// scalar `vec_dot_f16_f32`'s lanes and reduction.
    ///
    /// # Panics
    /// If a row or token reaches past its slice.
    pub(crate) fn dotblas_tile<const R: usize, const N: usize>(
        self,
        w: &[u8],
        row_stride: usize,
        x: &[f32],
        x_stride: usize,
        k: usize,
    ) -> [[f32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        assert!((R - 1) * row_stride + 2 * k <= w.len(), "dotblas_tile: {R} rows of {k} f16 exceed the slice");
        assert!((N - 1) * x_stride + k <= x.len(), "dotblas_tile: {N} rows of {k} f32 exceed the slice");
        // SAFETY: as in `dot16_tile`.
        unsafe { dotblas_entry::<R, N>(w.as_ptr(), row_stride, x.as_ptr(), x_stride, k) }
    }

    /// `out[i] = f16(x[i])`, nearest even (as [`Isa::round_f16`], without widening).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn to_f16(self, x: &[f32], out: &mut [half::f16]) {
        assert_eq!(x.len(), out.len(), "to_f16: lengths");
        // SAFETY: `self` proves the AVX-512 features; `x` holds `x.len()` f32 and `out` as
        // many f16 (2 bytes each).
        unsafe { to_f16_entry(x.as_ptr(), out.as_mut_ptr().cast(), x.len()) }
    }

    /// `out[i] = f32(f16(x[i]))`, nearest even (`vcvtps2ph` with immediate 0, what
    /// `half::f16::from_f32` does), widened back (exact).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn round_f16(self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), out.len(), "round_f16: lengths");
        // SAFETY: `self` proves the AVX-512 features; both slices hold `x.len()` f32.
        unsafe { round_f16_entry(x.as_ptr(), out.as_mut_ptr(), x.len()) }
    }
}

/// Entry point of [`Isa::dot16_tile`] (whole blocks of 32 only).
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `w + r·row_stride` must be readable for
/// `64·nb` bytes for every `r < R`, and `x + n·x_stride` for `32·nb` f32 for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot16_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: block `b < nb` reads bytes `64b .. 64b+64` of each row and f32 `32b .. 32b+32`
    // of each token, inside the caller's ranges; prefetches are hints that never fault, so
    // addresses past the slice (formed with `wrapping_add`) are fine.
    unsafe {
        let mut acc = [[[_mm512_setzero_ps(); 2]; N]; R];
        for b in 0..nb {
            // The AVX2 head's prefetch: this line of the next tile's rows into L1, of the
            // tile after three more into L2.
            for r in 0..R {
                let near = w.wrapping_add((R + r) * row_stride + 64 * b);
                _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                let far = w.wrapping_add((4 * R + r) * row_stride + 64 * b);
                _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
            }
            let mut wv = [[_mm512_setzero_ps(); 2]; R];
            for (r, v) in wv.iter_mut().enumerate() {
                let p = w.add(r * row_stride + 64 * b);
                v[0] = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
                v[1] = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast()));
            }
            for n in 0..N {
                let xp = x.add(n * x_stride + 32 * b);
                let (x0, x1) = (_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)));
                for (acc_r, v) in acc.iter_mut().zip(&wv) {
                    acc_r[n][0] = _mm512_fmadd_ps(v[0], x0, acc_r[n][0]);
                    acc_r[n][1] = _mm512_fmadd_ps(v[1], x1, acc_r[n][1]);
                }
            }
        }
        let mut out = [[0.0f32; N]; R];
        for (o_r, acc_r) in out.iter_mut().zip(&acc) {
            for (o, a) in o_r.iter_mut().zip(acc_r) {
                // Lanes l | 8+l: acc[0]+acc[2] | acc[1]+acc[3]; then s_l = the two added.
                let inner = _mm512_add_ps(a[0], a[1]);
                let s8 = _mm256_add_ps(
                    _mm512_castps512_ps256(inner),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(inner))),
                );
                let mut s = [0.0f32; 8];
                _mm256_storeu_ps(s.as_mut_ptr(), s8);
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
/// The CPU must support the features of [`Isa`]; `w + r·row_stride` must be readable for
/// `2·k` bytes for every `r < R`, and `x + n·x_stride` for `k` f32 for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dotblas_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    k: usize,
) -> [[f32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { dotblas_body::<R, N>(w, row_stride, x, x_stride, k) }
}

/// Eight f16 of row `p` and eight of row `q` (16 bytes each, the first `len ≤ 8` elements,
/// the rest zero) widened: lanes 0..8 from `p`, 8..16 from `q`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL; `p` and `q` must be readable for `2·len` bytes.
#[inline(always)]
unsafe fn load_two_rows(p: *const u8, q: *const u8, len: usize) -> __m512 {
    // SAFETY: masked loads read only the `2·len` bytes kept by the mask (masked-out bytes
    // never fault); a full load reads exactly 16 bytes.
    unsafe {
        let (a, b) = if len == 8 {
            (_mm_loadu_si128(p.cast()), _mm_loadu_si128(q.cast()))
        } else {
            let m: __mmask16 = (1u32 << (2 * len)) as u16 - 1;
            (_mm_maskz_loadu_epi8(m, p.cast()), _mm_maskz_loadu_epi8(m, q.cast()))
        };
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(a), b))
    }
}

/// Body of [`Isa::dotblas_tile`]: rows in pairs (a lone last row shares its register with
/// itself and only its low half is used).
///
/// # Safety
/// As [`dotblas_entry`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `p` indexes the register pairs and the rows they hold
unsafe fn dotblas_body<const R: usize, const N: usize>(
    w: *const u8,
    row_stride: usize,
    x: *const f32,
    x_stride: usize,
    k: usize,
) -> [[f32; N]; R] {
    // SAFETY: element `i < k` of a row is byte `2i` of its range and of a token element `i`
    // of its range: full steps read `i .. i+8` with `i + 8 ≤ k`, the tail step reads the
    // `k − i` remaining elements through masked loads.
    unsafe {
        let pairs = R.div_ceil(2);
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let mut i = 0;
        while i < k {
            let len = (k - i).min(8);
            let keep: __mmask16 = if len == 8 { 0xFFFF } else { (((1u32 << len) - 1) * 0x101) as u16 };
            let mut xv = [_mm512_setzero_ps(); N];
            for (n, v) in xv.iter_mut().enumerate() {
                let lo = _mm256_maskz_loadu_ps(((1u32 << len) - 1) as u8, x.add(n * x_stride + i));
                *v = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(lo)));
            }
            for p in 0..pairs {
                let r0 = 2 * p;
                let r1 = (2 * p + 1).min(R - 1);
                let wv = load_two_rows(w.add(r0 * row_stride + 2 * i), w.add(r1 * row_stride + 2 * i), len);
                for (n, &xn) in xv.iter().enumerate() {
                    acc[p][n] = _mm512_mask3_fmadd_ps(wv, xn, acc[p][n], keep);
                }
            }
            i += len;
        }
        let mut out = [[0.0f32; N]; R];
        for p in 0..pairs {
            for n in 0..N {
                let mut l = [0.0f32; 16];
                _mm512_storeu_ps(l.as_mut_ptr(), acc[p][n]);
                for h in 0..2 {
                    if 2 * p + h < R {
                        let l = &l[8 * h..8 * h + 8];
                        let t = [l[4] + l[0], l[5] + l[1], l[6] + l[2], l[7] + l[3]];
                        out[2 * p + h][n] = (t[0] + t[2]) + (t[1] + t[3]);
                    }
                }
            }
        }
        out
    }
}

/// Entry point of [`Isa::round_f16`].
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` must be readable and `out` writable
/// for `n` f32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn round_f16_entry(x: *const f32, out: *mut f32, n: usize) {
    // SAFETY: step `i` touches elements `i .. i + len` (`len ≤ 16`, `i + len ≤ n`) through
    // masked loads and stores, which touch nothing outside the mask.
    unsafe {
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let m: __mmask16 = if len == 16 { 0xFFFF } else { ((1u32 << len) - 1) as u16 };
            let v = _mm512_maskz_loadu_ps(m, x.add(i));
            let r = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
            _mm512_mask_storeu_ps(out.add(i), m, r);
            i += len;
        }
    }
}

/// Entry point of [`Isa::to_f16`].
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` must be readable for `n` f32 and `out`
/// writable for `2·n` bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn to_f16_entry(x: *const f32, out: *mut u8, n: usize) {
    // SAFETY: step `i` reads f32 `i .. i + len` and writes bytes `2i .. 2(i + len)` (`i + len
    // ≤ n`) through masked loads and stores.
    unsafe {
        let mut i = 0;
        while i < n {
            let len = (n - i).min(16);
            let m: __mmask16 = if len == 16 { 0xFFFF } else { ((1u32 << len) - 1) as u16 };
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_maskz_loadu_ps(m, x.add(i)));
            _mm256_mask_storeu_epi16(out.add(2 * i).cast(), m, h);
            i += len;
        }
    }
}
