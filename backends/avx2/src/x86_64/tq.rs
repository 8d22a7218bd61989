//! TQ2_0 / TQ1_0 × Q8_K block dot products for one weight row and `N` tokens
//! (`vec_dot_tq2_0_q8_k_avx2`, `vec_dot_tq1_0_q8_k_avx2`), bit-exact with scalar
//! `vec_dot_tq2_0_q8_k` / `vec_dot_tq1_0_q8_k` (shared/reference/README-more-models.md
//! §2.3, §4.2).
//!
//! Per block, the weight codes are unpacked into eight vectors: vector `j` holds the codes
//! of elements `32j .. 32j+32` in byte order.
//! - TQ2_0: `qs[32h + m]` bits `2l+1..2l` is element `128h + 32l + m`, so vector `4h + l`
//!   is `(qs[32h..32h+32] >> 2l) & 3` (16-bit shift, byte mask).
//! - TQ1_0: trit `n` of byte `B` is `((B·3ⁿ mod 256)·3) >> 8`. The byte products `B·3ⁿ
//!   mod 256` are formed with wrapping byte adds (`·3 = v + v + v`) and a masked 16-bit
//!   shift (`·9 = ((v << 3) & 0xF8) + v`); the trit is `(avg(v', avg(v', 0)) >> 6) & 3`
//!   with `v' = subs_epu8(v, 1)`, equal to `(v·3) >> 8` for every byte (the scalar's
//!   `tq1_trit_equals_avx2_extraction` test), so every byte, canonical or not, gives the
//!   scalar's code. Vectors 0..4: trits 0..4 of `qs[0..32]`; vector 5: trits 0 | 1 of
//!   `qs[32..48]` (low | high 16 bytes), vector 6: trits 2 | 3, vector 7: trit 4 | the
//!   16 bytes `trit n of qh[j]` at `4n + j`.
//!
//! Integer part, per block and token: `maddubs(codes_j, q_j)` (u8 code × i8 q, i16 pairs;
//! |pair| ≤ 2·3·128) added over the eight vectors in i16 (|sum| ≤ 8·768, no wrap), then
//! `madd(·, 1)`: i32 lane `L` = `Σ_{(i mod 32) div 4 = L} c_i·q_i` exactly; minus lane
//! `L` of the token's precomputed chunk sums `Σ_{i=32L..32L+31} q_i` (exact), which is the
//! scalar's `S_L`. Float part: `acc = add(acc, mul(f32(S), D))` with `D = f32(d_a·d_w)`
//! — a separate multiply and add, no fma — blocks in order, then the scalar's
//! `((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7))` on the stored lanes.

use std::arch::x86_64::*;

use super::q8_k::BLOCK_BYTES as Q8K_BLOCK_BYTES;
use super::{hsum_float_8_each, load_f16x1, Isa};

/// Bytes per TQ2_0 block: `qs[64]`, f16 `d`.
pub(crate) const TQ2_0_BLOCK_BYTES: usize = 66;
/// Bytes per TQ1_0 block: `qs[48]`, `qh[4]`, f16 `d`.
pub(crate) const TQ1_0_BLOCK_BYTES: usize = 54;

/// The two ternary weight formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TqKind {
    /// TQ2_0 (2-bit codes).
    Tq2,
    /// TQ1_0 (base-3 packed).
    Tq1,
    /// Q6_K (the Q6_K LM head; [`super::q6k`], which needs no chunk sums).
    Q6k,
}

impl TqKind {
    /// Bytes per 256-element weight block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            TqKind::Tq2 => TQ2_0_BLOCK_BYTES,
            TqKind::Tq1 => TQ1_0_BLOCK_BYTES,
            TqKind::Q6k => super::q6k::Q6K_BLOCK_BYTES,
        }
    }
}

impl Isa {
    /// `out[n] = vec_dot_{tq2_0,tq1_0,q6_k}_q8_k(w, activation n)` over `nb` blocks.
    ///
    /// `w` is one weight row (`nb` blocks of `kind.block_bytes()`); activation `n` starts
    /// at byte `n·a_stride` of `a` (`nb` Q8_K blocks of 260 bytes); its chunk sums
    /// (`8·nb` i32: block `b`, chunk `L` at `8b + L`) at `bsums[n·bs_stride]`.
    ///
    /// # Panics
    /// If the row, an activation or its chunk sums reach past their slices.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tq_dots<const N: usize>(
        self,
        kind: TqKind,
        w: &[u8],
        a: &[u8],
        a_stride: usize,
        bsums: &[i32],
        bs_stride: usize,
        nb: usize,
    ) -> [f32; N] {
        const { assert!(N > 0) };
        assert!(nb * kind.block_bytes() <= w.len(), "tq_dots: {nb} blocks exceed the weight row");
        assert!((N - 1) * a_stride + nb * Q8K_BLOCK_BYTES <= a.len(), "tq_dots: {N} activations of {nb} blocks exceed the slice");
        assert!((N - 1) * bs_stride + nb * 8 <= bsums.len(), "tq_dots: {N} chunk-sum rows of {nb} blocks exceed the slice");
        // SAFETY: `self` proves AVX2/FMA/F16C; the asserts keep the weight row, the N
        // activation rows (`260·nb` bytes each) and the N chunk-sum rows (`8·nb` i32 each)
        // inside their slices.
        unsafe {
            match kind {
                TqKind::Tq2 => tq_dots_entry::<Tq2, N>(w.as_ptr(), a.as_ptr(), a_stride, bsums.as_ptr(), bs_stride, nb),
                TqKind::Tq1 => tq_dots_entry::<Tq1, N>(w.as_ptr(), a.as_ptr(), a_stride, bsums.as_ptr(), bs_stride, nb),
                TqKind::Q6k => super::q6k::q6k_dots_entry::<N>(w.as_ptr(), a.as_ptr(), a_stride, nb),
            }
        }
    }
}

/// A ternary block format: its size, where its f16 scale is, how to unpack its codes.
trait TqBlock {
    /// Bytes per block.
    const BYTES: usize;
    /// Byte offset of the f16 scale `d`.
    const D_OFFSET: usize;
    /// The codes of the block at `blk`: vector `j` holds elements `32j .. 32j+32`.
    ///
    /// # Safety
    /// The CPU must support AVX2, and `blk` must be readable for [`Self::BYTES`] bytes.
    unsafe fn codes(blk: *const u8) -> [__m256i; 8];
}

/// TQ2_0 blocks.
struct Tq2;
/// TQ1_0 blocks.
struct Tq1;

impl TqBlock for Tq2 {
    const BYTES: usize = TQ2_0_BLOCK_BYTES;
    const D_OFFSET: usize = 64;

    #[inline(always)]
    unsafe fn codes(blk: *const u8) -> [__m256i; 8] {
        // SAFETY: the caller guarantees AVX2 and 66 readable bytes at `blk`; the two
        // unaligned loads read bytes 0..32 and 32..64.
        unsafe {
            let m3 = _mm256_set1_epi8(3);
            let lo = _mm256_loadu_si256(blk.cast::<__m256i>());
            let hi = _mm256_loadu_si256(blk.add(32).cast::<__m256i>());
            [
                _mm256_and_si256(lo, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(lo), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(lo), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(lo), m3),
                _mm256_and_si256(hi, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(hi), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(hi), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(hi), m3),
            ]
        }
    }
}

/// Bytewise `v·3 mod 256`.
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn mul3(v: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX2; register-only operations.
    unsafe { _mm256_add_epi8(v, _mm256_add_epi8(v, v)) }
}

/// Bytewise `v·9 mod 256`: `((v << 3) & 0xF8) + v` (the mask drops the bits a 16-bit
/// shift carries into the high byte).
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn mul9(v: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX2; register-only operations.
    unsafe { _mm256_add_epi8(_mm256_and_si256(_mm256_slli_epi16::<3>(v), _mm256_set1_epi8(-8)), v) }
}

/// Bytewise trit `(v·3) >> 8` of already multiplied bytes (see the module docs).
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn trit(v: __m256i) -> __m256i {
    // SAFETY: the caller guarantees AVX2; register-only operations.
    unsafe {
        let v = _mm256_subs_epu8(v, _mm256_set1_epi8(1));
        let t = _mm256_avg_epu8(v, _mm256_avg_epu8(v, _mm256_setzero_si256()));
        _mm256_and_si256(_mm256_srli_epi16::<6>(t), _mm256_set1_epi8(3))
    }
}

impl TqBlock for Tq1 {
    const BYTES: usize = TQ1_0_BLOCK_BYTES;
    const D_OFFSET: usize = 52;

    #[inline(always)]
    unsafe fn codes(blk: *const u8) -> [__m256i; 8] {
        // SAFETY: the caller guarantees AVX2 and 54 readable bytes at `blk`; the unaligned
        // loads read bytes 0..32 (`qs[0..32]`), 32..48 (`qs[32..48]`) and 48..52 (`qh`).
        unsafe {
            let x0 = _mm256_loadu_si256(blk.cast::<__m256i>());
            let x9 = mul9(x0);
            let y = _mm_loadu_si128(blk.add(32).cast::<__m128i>());
            let qh = blk.add(48).cast::<u32>().read_unaligned();
            // [qh qh qh qh] in both halves; the low half is the one used.
            let h0 = _mm256_set1_epi32(qh as i32);
            let h3 = mul3(h0);
            let h9 = mul9(h0);
            let h27 = mul3(h9);
            // Dword n of `h` holds qh·3ⁿ: bytes 4n + j give trit n of qh[j].
            let h = _mm256_blend_epi32::<0b1000_1000>(
                _mm256_blend_epi32::<0b0100_0100>(_mm256_blend_epi32::<0b0010_0010>(h0, h3), h9),
                h27,
            );
            let y1 = _mm256_broadcastsi128_si256(y);
            let y9 = mul9(y1);
            let y81 = mul9(y9);
            // Vector 7: trit 4 of qs[32..48] (low half), the qh trits (high half).
            let v7 = _mm256_permute2x128_si256::<0x20>(y81, h);
            [
                trit(x0),
                trit(mul3(x0)),
                trit(x9),
                trit(mul3(x9)),
                trit(mul9(x9)),
                trit(_mm256_blend_epi32::<0b1111_0000>(y1, mul3(y1))),
                trit(_mm256_blend_epi32::<0b1111_0000>(y9, mul3(y9))),
                trit(v7),
            ]
        }
    }
}

/// Entry point of [`Isa::tq_dots`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must be readable for `nb·B::BYTES`
/// bytes, `a + n·a_stride` for `260·nb` bytes and `bsums + n·bs_stride` for `8·nb` i32
/// for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tq_dots_entry<B: TqBlock, const N: usize>(
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    bsums: *const i32,
    bs_stride: usize,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { tq_dots_body::<B, N>(w, a, a_stride, bsums, bs_stride, nb) }
}

/// Body of [`Isa::tq_dots`].
///
/// # Safety
/// As [`tq_dots_entry`].
#[inline(always)]
unsafe fn tq_dots_body<B: TqBlock, const N: usize>(
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    bsums: *const i32,
    bs_stride: usize,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller guarantees the features and that block `b < nb` of the weight row
    // (bytes `b·B::BYTES ..` + `B::BYTES`), of every activation (bytes `260b .. 260b+260`)
    // and of every chunk-sum row (i32 `8b .. 8b+8`) is readable (unaligned loads).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let wb = w.add(B::BYTES * b);
            let dw = load_f16x1(wb.add(B::D_OFFSET));
            let c = B::codes(wb);
            for (n, acc_n) in acc.iter_mut().enumerate() {
                let ab = a.add(n * a_stride + Q8K_BLOCK_BYTES * b);
                let da = ab.cast::<f32>().read_unaligned();
                let q = ab.add(4);
                let mut s16 = _mm256_maddubs_epi16(c[0], _mm256_loadu_si256(q.cast::<__m256i>()));
                for (j, cj) in c.iter().enumerate().skip(1) {
                    let qj = _mm256_loadu_si256(q.add(32 * j).cast::<__m256i>());
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(*cj, qj));
                }
                let bs = _mm256_loadu_si256(bsums.add(n * bs_stride + 8 * b).cast::<__m256i>());
                let s = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), bs);
                let d: f32 = da * dw;
                *acc_n = _mm256_add_ps(*acc_n, _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d)));
            }
        }
        hsum_float_8_each(&acc)
    }
}
