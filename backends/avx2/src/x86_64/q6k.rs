//! Q6_K × Q8_K block dot products for one weight row and `N` tokens
//! (`vec_dot_q6_k_q8_k_avx2`, the Q6_K LM head), bit-exact with scalar `vec_dot_q6_k_q8_k`
//! (shared/reference/README.md §7.1).
//!
//! Per block, the weight is unpacked once into eight vectors of unsigned 6-bit values
//! `u = q + 32` (vector `j` holds elements `32j .. 32j+32` in order: per half `h`, the low
//! nibbles of `ql[64h..64h+32]` and `ql[64h+32..64h+64]`, then their high nibbles, each or-ed
//! with two bits of `qh[32h..32h+32]` shifted to bits 4-5) and eight 16-bit scale vectors
//! (lanes 0..8 the scale of elements `32j..32j+16`, lanes 8..16 that of `32j+16..32j+32`).
//!
//! Integer part, per block and token: `maddubs(u_j, a_j) − maddubs(32, a_j)` (i16 pairs,
//! |pair| ≤ 2·63·128, no saturation), `madd` with the scale vector (i32 lane `L` gathers
//! elements `32j + 4L .. 32j + 4L + 4`), summed over `j`: lane `L` is the scalar's exact
//! `S_L`. Float part: `acc = fma(D, f32(S), acc)` with `D = f32(d_a·d_w)`, blocks in order,
//! then `((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7))` on the stored lanes.

use std::arch::x86_64::*;

use super::q8_k::BLOCK_BYTES as Q8K_BLOCK_BYTES;
use super::{hsum_float_8_each, load_f16x1};

/// Bytes per Q6_K block: `ql[128]`, `qh[64]`, `scales[16]`, f16 `d`.
pub(crate) const Q6K_BLOCK_BYTES: usize = 210;

/// Entry point of the Q6_K arm of [`super::Isa::tq_dots`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must be readable for `210·nb` bytes and
/// `a + n·a_stride` for `260·nb` bytes for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6k_dots_entry<const N: usize>(w: *const u8, a: *const u8, a_stride: usize, nb: usize) -> [f32; N] {
    // SAFETY: the caller guarantees the features and that block `b < nb` of the weight row
    // (bytes `210b .. 210b+210`) and of every activation (bytes `260b .. 260b+260`) is
    // readable; every load below is unaligned and inside those blocks.
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let m2 = _mm256_set1_epi8(3);
        let m32 = _mm256_set1_epi8(32);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let wb = w.add(Q6K_BLOCK_BYTES * b);
            let dw = load_f16x1(wb.add(208));
            let mut u = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let l1 = _mm256_loadu_si256(wb.add(64 * h).cast::<__m256i>());
                let l2 = _mm256_loadu_si256(wb.add(64 * h + 32).cast::<__m256i>());
                let qh = _mm256_loadu_si256(wb.add(128 + 32 * h).cast::<__m256i>());
                let hi = |s: i32| -> __m256i {
                    let v = match s {
                        0 => qh,
                        2 => _mm256_srli_epi16::<2>(qh),
                        4 => _mm256_srli_epi16::<4>(qh),
                        _ => _mm256_srli_epi16::<6>(qh),
                    };
                    _mm256_slli_epi16::<4>(_mm256_and_si256(v, m2))
                };
                u[4 * h] = _mm256_or_si256(_mm256_and_si256(l1, m4), hi(0));
                u[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l2, m4), hi(2));
                u[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4), hi(4));
                u[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l2), m4), hi(6));
            }
            let sc = wb.add(192).cast::<i8>();
            let mut scale = [_mm256_setzero_si256(); 8];
            for (j, s) in scale.iter_mut().enumerate() {
                let lo = _mm_set1_epi16(i16::from(sc.add(2 * j).read()));
                let hi = _mm_set1_epi16(i16::from(sc.add(2 * j + 1).read()));
                *s = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
            }
            for (n, acc_n) in acc.iter_mut().enumerate() {
                let ab = a.add(n * a_stride + Q8K_BLOCK_BYTES * b);
                let da = ab.cast::<f32>().read_unaligned();
                let q = ab.add(4);
                let mut s = _mm256_setzero_si256();
                for j in 0..8 {
                    let qj = _mm256_loadu_si256(q.add(32 * j).cast::<__m256i>());
                    let p = _mm256_sub_epi16(_mm256_maddubs_epi16(u[j], qj), _mm256_maddubs_epi16(m32, qj));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(scale[j], p));
                }
                let d: f32 = da * dw;
                *acc_n = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), *acc_n);
            }
        }
        hsum_float_8_each(&acc)
    }
}
