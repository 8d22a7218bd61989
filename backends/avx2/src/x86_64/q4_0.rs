//! Q4_0 head: the Q4_0 × Q8_0 block dot product as an `R × N` tile
//! (`vec_dot_q4_0_q8_0_avx2`), bit-exact with scalar `vec_dot_q4_0_q8_0`
//! (shared/reference/README-more-models.md §4.3). Activations come from
//! [`Isa::quantize_q8_0_act`].
//!
//! Per block and row: the 16 nibble bytes become 32 bytes (`bytes_from_nibbles_32`: low
//! nibbles of bytes 0..15 are elements 0..15, high nibbles elements 16..31), minus 8
//! (`x` in −8..7). The rest is the Q8_0 head's tile body (`q8_0::block_dots_body`, which
//! takes the weight format as a parameter): `|x|` (`abs_epi8`) times `sign(q, x)`
//! (`sign_epi8`) with `maddubs` + `madd(·, 1)` gives i32 lane `L` = the scalar's `S` of
//! elements `4L .. 4L+3`; `acc[L] = fma(D, f32(S), acc[L])` with `D = f32(d_w)·f32(d_a)`
//! (formed eight blocks at a time, exactly); the final reduction is the scalar's
//! `(r0 + r2) + (r1 + r3)` on the stored lanes.

use std::arch::x86_64::*;

use super::q8_0::{block_dots_body, WeightBlocks, BLOCK_BYTES as Q8_0_BLOCK_BYTES};
use super::Isa;

/// Bytes per Q4_0 block (f16 scale + 16 nibble bytes).
pub(crate) const BLOCK_BYTES: usize = 18;

impl Isa {
    /// `out[r][n] = vec_dot_q4_0_q8_0(row r, activation n)` over `nb` blocks.
    ///
    /// Row `r` starts at byte `r·row_bytes` of `w` (`nb` blocks of 18 bytes), activation
    /// `n` at byte `n·a_stride` of `a` (`nb` Q8_0 blocks of 34 bytes).
    ///
    /// # Panics
    /// If a row or activation reaches past its slice.
    pub(crate) fn q4_0_dots<const R: usize, const N: usize>(
        self,
        w: &[u8],
        row_bytes: usize,
        a: &[u8],
        a_stride: usize,
        nb: usize,
    ) -> [[f32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        assert!((R - 1) * row_bytes + nb * BLOCK_BYTES <= w.len(), "q4_0_dots: {R} rows of {nb} blocks exceed the slice");
        assert!(
            (N - 1) * a_stride + nb * Q8_0_BLOCK_BYTES <= a.len(),
            "q4_0_dots: {N} activations of {nb} blocks exceed the slice"
        );
        // SAFETY: `self` proves AVX2/FMA/F16C; the asserts keep the R weight rows (`18·nb`
        // bytes each) and the N activation rows (`34·nb` bytes each) inside their slices.
        unsafe { q4_0_dots_entry::<R, N>(w.as_ptr(), row_bytes, a.as_ptr(), a_stride, nb) }
    }
}

/// Entry point of [`Isa::q4_0_dots`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w + r·row_bytes` must be readable for
/// `18·nb` bytes for every `r < R`, and `a + n·a_stride` for `34·nb` bytes for every
/// `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_dots_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { block_dots_body::<Q4_0Blocks, R, N>(w, row_bytes, a, a_stride, nb) }
}

/// Q4_0 weights: 16 nibble bytes after the scale (`bytes_from_nibbles_32`: low nibbles of
/// bytes 0..15 are elements 0..15, high nibbles elements 16..31), minus 8.
pub(crate) struct Q4_0Blocks;

impl WeightBlocks for Q4_0Blocks {
    const BYTES: usize = BLOCK_BYTES;

    #[inline(always)]
    unsafe fn quants(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees AVX2 and the 18 readable bytes (unaligned load of
        // the 16 nibble bytes at +2).
        unsafe {
            let nib = _mm_loadu_si128(p.add(2).cast::<__m128i>());
            let bytes = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(nib), nib), _mm256_set1_epi8(15));
            _mm256_sub_epi8(bytes, _mm256_set1_epi8(8))
        }
    }
}
