//! Q8_0 head: the activation quantizer (`quantize_row_q8_0_act_avx2`) and the block dot
//! product as an `R × N` tile (`vec_dot_q8_0_q8_0_avx2`), bit-exact with the scalar
//! `quantize_row_q8_0_act` / `vec_dot_q8_0_q8_0` (../shared/docs/format.md §4.6.2).
//!
//! Quantizer, per block of 32: `amax` is the lane-wise `max_ps` of `|x|` reduced over the
//! lanes (exact: every order gives the same maximum of non-NaN values); a block holding a
//! NaN takes the scalar's sequential `amax = amax > a ? amax : a` instead, so even NaN
//! blocks match. `d = f16(f32(amax/127))` and `m = 127/amax` are computed as in the scalar;
//! `q = cvtps2dq(round_ps(x·m, nearest))` (NaN and overflow give `i32::MIN`) is narrowed
//! with the saturating packs, which is the scalar's `clamp(−128, 127)`.
//!
//! Dot, per block and row: `|qw|` (`abs_epi8`: |−128| = 128 as u8) times `sign(qa, qw)`
//! (`sign_epi8`: −(−128) wraps) with `maddubs` (i16 pairs, saturating) and
//! `madd(·, 1)` gives i32 lane `j` = the four products `4j .. 4j+3`, exactly the scalar's
//! `S`; `acc[j] = fma(D, f32(S), acc[j])` with `D = f32(d_w)·f32(d_a)`; the final
//! reduction is the scalar's `(r0 + r2) + (r1 + r3)` on the stored lanes.

use std::arch::x86_64::*;

use super::{hmax_ps, lanes, load_f16x1, Isa};

/// Bytes per Q8_0 block (f16 scale + 32 × i8).
pub(crate) const BLOCK_BYTES: usize = 34;

impl Isa {
    /// Quantizes `x` (a multiple of 32 long) into `x.len()/32` Q8_0 blocks in `out`.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of 32 or `out.len() != x.len()/32·34`.
    pub(crate) fn quantize_q8_0_act(self, x: &[f32], out: &mut [u8]) {
        assert!(x.len().is_multiple_of(32), "quantize_q8_0_act: length {} is not a multiple of 32", x.len());
        assert_eq!(out.len(), x.len() / 32 * BLOCK_BYTES, "quantize_q8_0_act: output length");
        // SAFETY: `self` proves AVX2/FMA/F16C; `x` holds `nb·32` f32 and `out` `nb·34`
        // bytes (asserted above).
        unsafe { quantize_entry(x.as_ptr(), out.as_mut_ptr(), x.len() / 32) }
    }

    /// `out[r][n] = vec_dot_q8_0_q8_0(row r, activation n)` over `nb` blocks.
    ///
    /// Row `r` starts at byte `r·row_bytes` of `w`, activation `n` at byte `n·a_stride`
    /// of `a`.
    ///
    /// # Panics
    /// If a row or activation reaches past its slice.
    pub(crate) fn q8_0_dots<const R: usize, const N: usize>(
        self,
        w: &[u8],
        row_bytes: usize,
        a: &[u8],
        a_stride: usize,
        nb: usize,
    ) -> [[f32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        assert!((R - 1) * row_bytes + nb * BLOCK_BYTES <= w.len(), "q8_0_dots: {R} rows of {nb} blocks exceed the slice");
        assert!((N - 1) * a_stride + nb * BLOCK_BYTES <= a.len(), "q8_0_dots: {N} rows of {nb} blocks exceed the slice");
        // SAFETY: `self` proves AVX2/FMA/F16C; the asserts keep the R weight rows and the
        // N activation rows (`34·nb` bytes each) inside their slices.
        unsafe { q8_0_dots_entry::<R, N>(w.as_ptr(), row_bytes, a.as_ptr(), a_stride, nb) }
    }
}

/// Entry point of [`Isa::quantize_q8_0_act`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must be readable for `32·nb` f32 and
/// `out` writable for `34·nb` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_entry(x: *const f32, out: *mut u8, nb: usize) {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { quantize_body(x, out, nb) }
}

/// Body of [`Isa::quantize_q8_0_act`].
///
/// # Safety
/// As [`quantize_entry`].
#[inline(always)]
unsafe fn quantize_body(x: *const f32, out: *mut u8, nb: usize) {
    // SAFETY: the caller guarantees the features and that block `b < nb` reads f32
    // `32b .. 32b+32` of `x` and writes bytes `34b .. 34b+34` of `out` (unaligned).
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        for b in 0..nb {
            let xb = x.add(32 * b);
            let v = [_mm256_loadu_ps(xb), _mm256_loadu_ps(xb.add(8)), _mm256_loadu_ps(xb.add(16)), _mm256_loadu_ps(xb.add(24))];
            let mut mx = _mm256_andnot_ps(sign, v[0]);
            let mut nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[0]);
            for vi in &v[1..] {
                mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, *vi));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(*vi, *vi));
            }
            let amax = if _mm256_movemask_ps(nan) != 0 {
                // The scalar's sequential maximum (a NaN resets it to the next value).
                let mut amax = 0.0f32;
                for i in 0..32 {
                    let a = (*xb.add(i)).abs();
                    amax = if amax > a { amax } else { a };
                }
                amax
            } else {
                hmax_ps(mx)
            };
            let d: f32 = amax / 127.0;
            let ob = out.add(BLOCK_BYTES * b);
            let d16 = half::f16::from_f32(d).to_le_bytes();
            ob.write(d16[0]);
            ob.add(1).write(d16[1]);
            let m: f32 = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mv = _mm256_set1_ps(m);
            let mut q = [_mm256_setzero_si256(); 4];
            for (qi, vi) in q.iter_mut().zip(&v) {
                let p = _mm256_mul_ps(*vi, mv);
                *qi = _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p));
            }
            let q8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            let q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(ob.add(2).cast::<__m256i>(), q8);
        }
    }
}

/// A weight format of the block dot products against Q8_0 activations: blocks of 32
/// weights, each an f16 scale at byte 0 followed by its quants.
pub(crate) trait WeightBlocks {
    /// Bytes per block.
    const BYTES: usize;

    /// The block's 32 weights as i8 lanes, in element order.
    ///
    /// # Safety
    /// The CPU must support AVX2; the block at `p` (`BYTES` bytes) must be readable.
    unsafe fn quants(p: *const u8) -> __m256i;
}

/// Q8_0 weights: 32 × i8 after the scale.
pub(crate) struct Q8_0Blocks;

impl WeightBlocks for Q8_0Blocks {
    const BYTES: usize = BLOCK_BYTES;

    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees AVX2 and the 34 readable bytes (unaligned load).
        unsafe { _mm256_loadu_si256(p.add(2).cast::<__m256i>()) }
    }
}

/// The f16 scales of eight consecutive blocks of `stride` bytes starting at `p`, as f32.
///
/// # Safety
/// F16C must be available and bytes `p + stride·j .. +2` readable for `j < 8`.
#[inline(always)]
unsafe fn load_f16x8_strided(p: *const u8, stride: usize) -> __m256 {
    // SAFETY: the caller guarantees F16C and the eight 2-byte reads (unaligned).
    unsafe {
        let h = |j: usize| p.add(stride * j).cast::<i16>().read_unaligned();
        _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)))
    }
}

/// Entry point of [`Isa::q8_0_dots`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w + r·row_bytes` must be readable for
/// `34·nb` bytes for every `r < R`, and `a + n·a_stride` for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_dots_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { block_dots_body::<Q8_0Blocks, R, N>(w, row_bytes, a, a_stride, nb) }
}

/// Body of [`Isa::q8_0_dots`] and of `Isa::q4_0_dots` (weights of format `W`, see the
/// module docs for the arithmetic).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; block `b < nb` of every weight row
/// (`w + r·row_bytes + W::BYTES·b`, `r < R`) and of every activation (`a + n·a_stride +
/// 34·b`, `n < N`) must be readable.
#[inline(always)]
pub(crate) unsafe fn block_dots_body<W: WeightBlocks, const R: usize, const N: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: the caller guarantees the features and that block `b < nb` of every row
    // (`W::BYTES` bytes) and activation (34 bytes) is readable (unaligned loads).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); N]; R];
        // Eight blocks at a time: their f16 scales are converted together and the eight
        // products `D = f32(d_w)·f32(d_a)` formed in one multiply (exact, as the scalar's:
        // 11-bit × 11-bit significands), then lane `j` is broadcast for block `j`.
        // (`bench --lm-head q8 --profile`, 2B shape, 2 threads, Xeon VM: the Q8_0 head
        // 27.2 → 23.3 ms/token.)
        let mut b = 0;
        while b + 8 <= nb {
            let mut dav = [_mm256_setzero_ps(); N];
            for (n, d) in dav.iter_mut().enumerate() {
                *d = load_f16x8_strided(a.add(n * a_stride + BLOCK_BYTES * b), BLOCK_BYTES);
            }
            if N == 1 {
                // One token streams the weights once (the LM head): prefetch these 8 blocks
                // (Q8_0: 272 bytes, five lines) of the next tile's rows into L1 and of the
                // tile after three more into L2. Hints only, never dereferenced. (`bench
                // --lm-head q8 --profile`, 2B shape, 2 threads, A/B ×3: 23.5 → 14.2 ms/token.)
                for r in 0..R {
                    for line in 0..(8 * W::BYTES).div_ceil(64) {
                        let near = w.wrapping_add((R + r) * row_bytes + W::BYTES * b + 64 * line);
                        _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                        let far = w.wrapping_add((4 * R + r) * row_bytes + W::BYTES * b + 64 * line);
                        _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
                    }
                }
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let wr = w.add(r * row_bytes + W::BYTES * b);
                let dwv = load_f16x8_strided(wr, W::BYTES);
                let mut dprod = [_mm256_setzero_ps(); N];
                for n in 0..N {
                    dprod[n] = _mm256_mul_ps(dwv, dav[n]);
                }
                for j in 0..8 {
                    let qw = W::quants(wr.add(W::BYTES * j));
                    let ax = _mm256_abs_epi8(qw);
                    let lane = _mm256_set1_epi32(j as i32);
                    for n in 0..N {
                        let ab = a.add(n * a_stride + BLOCK_BYTES * (b + j));
                        let qa = _mm256_loadu_si256(ab.add(2).cast::<__m256i>());
                        let sy = _mm256_sign_epi8(qa, qw);
                        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                        let d = _mm256_permutevar8x32_ps(dprod[n], lane);
                        acc_r[n] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc_r[n]);
                    }
                }
            }
            b += 8;
        }
        for b in b..nb {
            let mut qa = [_mm256_setzero_si256(); N];
            let mut da = [0.0f32; N];
            for n in 0..N {
                let ab = a.add(n * a_stride + BLOCK_BYTES * b);
                da[n] = load_f16x1(ab);
                qa[n] = _mm256_loadu_si256(ab.add(2).cast::<__m256i>());
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let wb = w.add(r * row_bytes + W::BYTES * b);
                let dw = load_f16x1(wb);
                let qw = W::quants(wb);
                let ax = _mm256_abs_epi8(qw);
                for n in 0..N {
                    let sy = _mm256_sign_epi8(qa[n], qw);
                    let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                    let d: f32 = dw * da[n];
                    acc_r[n] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc_r[n]);
                }
            }
        }
        let mut out = [[0.0f32; N]; R];
        for (o_r, acc_r) in out.iter_mut().zip(&acc) {
            for (o, v) in o_r.iter_mut().zip(acc_r) {
                let l = lanes(*v);
                let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
                *o = (r[0] + r[2]) + (r[1] + r[3]);
            }
        }
        out
    }
}
