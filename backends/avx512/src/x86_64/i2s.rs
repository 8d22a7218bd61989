//! I2_S × int8 integer dot products on 512-bit registers over the `i2s_r16` weight layout,
//! bit-exact with scalar `vec_dot_i2s_i8` including its 16-bit lane wrap (../shared/docs/format.md
//! §2.2, §4.2).
//!
//! ## The `i2s_r16` layout
//! An I2_S row is groups of 128 elements, 32 code bytes each; byte `b` of group `g` holds
//! the codes of elements `128g + 32s + b` for `s` in 0..4 at bit `6 − 2s`. The layout keeps
//! those bytes and interleaves 16 rows at 4-byte granularity ([`prepare_r16`], once, when
//! the weights are bound): for each block of 16 rows, group `g` and 4-byte word `d` (0..8),
//! 64 bytes hold word `d` of group `g` of each of the 16 rows (row `r` at bytes `4r..4r+4`).
//! A block of 16 rows is one contiguous stream; rows past the matrix are zero codes; the
//! 32-byte trailer (the scale) follows the last block. So a 64-byte *chunk* `(g, d)`
//! shifted right by `6 − 2s` and masked to 2 bits holds, at byte `4r + i`, the code of row
//! `r` and element `128g + 32s + 4d + i`: sixteen rows × four consecutive elements, the
//! operand layout of `vpdpbusd` (one i32 lane per row) and of an AMX B tile.
//!
//! ## VNNI kernels (`vec_dot_i2s_i8_16xN_avx512vnni`)
//! `vpdpbusd(acc, codes, broadcast of the four activations)` adds row `r`'s four products
//! into lane `r`: sixteen rows per register, no horizontal sums. It sums in i32, so it
//! reproduces the scalar only where no i16 lane can wrap: [`Isa::i2s_cannot_wrap`] proves
//! that from the activations alone (per lane and chunk of 32 groups Σ|q| ≤ 10922, so
//! 3·Σ ≤ 32767 whatever the codes; the AVX2 backend's proof, `backend-avx2`
//! `x86_64/i2s.rs`). The one-token kernel masks the codes in place (`chunk & (3 << (6 −
//! 2s))`, no shift): accumulator `s` holds `4^(3−s)` times its exact sum (far from 2³¹ for
//! `k` ≤ [`VNNI_MAX_K`]) and an arithmetic shift undoes the factor exactly. The
//! multi-token kernel shifts the codes once per chunk and sub-block and shares them.
//!
//! ## The exact kernel (`vec_dot_i2s_i8_16x1_avx512`)
//! `_mm512_maddubs_epi16(codes, activations)` gives i16 lane `2r + h` = row `r`'s pair of
//! elements `128g + 32s + 4d + 2h + {0, 1}`, which is the scalar's lane `j = 2d + h`
//! (element `e` belongs to lane `(e mod 32) / 2`). Chunk word `d` therefore always feeds
//! the same two scalar lanes: eight i16 accumulators (one per `d`) collect, with wrapping
//! adds, exactly the scalar's `lane[2d]` and `lane[2d+1]` of each row over a chunk of 32
//! groups; at the chunk's end `madd(·, 1)` widens and adds each pair into i32 lane `r`, and
//! the chunk totals add in i32 (the scalar's `total`, mod 2³²).

use std::arch::x86_64::*;

use super::Isa;

/// Elements per I2_S group.
pub(crate) const GROUP: usize = 128;
/// Rows per block of the `i2s_r16` layout.
pub(crate) const ROWS: usize = 16;
/// Bytes of one group of one 16-row block (8 chunks of 64).
pub(crate) const GROUP_BYTES: usize = 512;
/// Groups accumulated in i16 lanes before widening (bitnet.cpp's chunk of 32 groups).
const GROUPS_PER_CHUNK: usize = 32;
/// Largest `k` the VNNI kernels take: the masked-in-place accumulators of the one-token
/// kernel add up to `4 · 192 · 128 = 98304` per group and lane, `(k/128) · 98304 < 2³¹`.
pub(crate) const VNNI_MAX_K: usize = 1 << 20;
/// One-token kernel: bytes ahead of the current chunk prefetched into L1 (the next
/// blocks of the same stream).
const PREFETCH_NEAR: usize = 1024;

/// Bytes of the `i2s_r16` form of an I2_S matrix `[m, k]`: the rows padded to a multiple
/// of 16, then the 32-byte trailer. `None` if `k` is not a multiple of 128 or the size
/// overflows.
pub(crate) fn r16_len(m: usize, k: usize) -> Option<usize> {
    if !k.is_multiple_of(GROUP) {
        return None;
    }
    m.div_ceil(ROWS).checked_mul(ROWS)?.checked_mul(k / 4)?.checked_add(32)
}

/// Writes the `i2s_r16` form ([`r16_len`] bytes) of the I2_S matrix `[m, k]` in `src` (its
/// file layout, codes then the 32-byte trailer) to `dst` (module notes). Safe code, blocks
/// in parallel.
///
/// # Panics
/// If the lengths do not fit `m` and `k`.
pub(crate) fn prepare_r16(src: &[u8], m: usize, k: usize, dst: &mut [u8]) {
    use rayon::prelude::*;
    let row_bytes = k / 4;
    assert!(src.len() >= m * row_bytes + 32 && Some(dst.len()) == r16_len(m, k), "prepare_r16: sizes");
    let groups = k / GROUP;
    let (blocks, trailer) = dst.split_at_mut(dst.len() - 32);
    trailer.copy_from_slice(&src[m * row_bytes..m * row_bytes + 32]);
    if groups == 0 {
        return;
    }
    blocks.par_chunks_mut(groups * GROUP_BYTES).enumerate().for_each(|(rb, block)| {
        for (g, grp) in block.chunks_exact_mut(GROUP_BYTES).enumerate() {
            for (d, chunk) in grp.chunks_exact_mut(64).enumerate() {
                for (r, word) in chunk.chunks_exact_mut(4).enumerate() {
                    let row = rb * ROWS + r;
                    if row < m {
                        let at = row * row_bytes + 32 * g + 4 * d;
                        word.copy_from_slice(&src[at..at + 4]);
                    } else {
                        word.fill(0);
                    }
                }
            }
        }
    });
}

impl Isa {
    /// `out[n][r] = vec_dot_i2s_i8(row r, token n)` for one 16-row block of the `i2s_r16`
    /// layout (`block`, `k/4 · 16` bytes) and `N` tokens, with `vpdpbusd`: exact only when
    /// [`Isa::i2s_cannot_wrap`] holds for every token (the caller's duty).
    ///
    /// Token `n`'s `k` activations start at `xq[n·x_stride]`.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or above [`VNNI_MAX_K`], or the block or a token
    /// reaches past its slice.
    pub(crate) fn r16_dots_vnni<const N: usize>(self, block: &[u8], xq: &[u8], x_stride: usize, k: usize) -> [[i32; ROWS]; N] {
        const { assert!(N > 0) };
        assert!(k.is_multiple_of(GROUP) && k <= VNNI_MAX_K, "r16_dots_vnni: k = {k}");
        assert!(block.len() >= k / 4 * ROWS, "r16_dots_vnni: block of {} bytes for k = {k}", block.len());
        assert!((N - 1) * x_stride + k <= xq.len(), "r16_dots_vnni: {N} tokens of {k} activations exceed the slice");
        // SAFETY: `self` proves the AVX-512 features; the asserts keep the block's
        // `k/128 · 512` bytes inside `block` and the N rows of `k` activations inside `xq`.
        unsafe {
            if N == 1 {
                let mut out = [[0i32; ROWS]; N];
                out[0] = gemv_entry(block.as_ptr(), xq.as_ptr(), k / GROUP);
                out
            } else {
                gemm_entry::<N>(block.as_ptr(), xq.as_ptr(), x_stride, k / GROUP)
            }
        }
    }

    /// The same for one token, exact (i16 lane wrap included), for tokens the VNNI kernels
    /// may not take.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or the block or the token reaches past its slice.
    pub(crate) fn r16_dots_exact(self, block: &[u8], xq: &[u8], k: usize) -> [i32; ROWS] {
        assert!(k.is_multiple_of(GROUP), "r16_dots_exact: k = {k}");
        assert!(block.len() >= k / 4 * ROWS && xq.len() >= k, "r16_dots_exact: slices too short for k = {k}");
        // SAFETY: as in `r16_dots_vnni`, one token.
        unsafe { exact_entry(block.as_ptr(), xq.as_ptr(), k / GROUP) }
    }

    /// Whether `vec_dot_i2s_i8` of this q8 row (its first `k` bytes) with any I2_S codes can
    /// never wrap an i16 lane (module notes), so that the VNNI and AMX kernels give its exact
    /// result. False for `k` above [`VNNI_MAX_K`].
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or `xq` is shorter than `k`.
    pub(crate) fn i2s_cannot_wrap(self, xq: &[u8], k: usize) -> bool {
        assert!(k.is_multiple_of(GROUP) && k <= xq.len(), "i2s_cannot_wrap: k = {k}, {} bytes", xq.len());
        if k > VNNI_MAX_K {
            return false;
        }
        // SAFETY: `self` proves AVX-512 BW; the assert keeps the `k` bytes read inside `xq`.
        unsafe { cannot_wrap_entry(xq.as_ptr(), k / GROUP) }
    }
}

/// The four activations of element `e .. e+4`, broadcast to every i32 lane.
///
/// # Safety
/// The CPU must support AVX-512 F; `x + e` must be readable for 4 bytes.
#[inline(always)]
unsafe fn bcast4(x: *const u8, e: usize) -> __m512i {
    // SAFETY: the caller guarantees the feature and the 4 readable bytes (unaligned read).
    unsafe { _mm512_set1_epi32(x.add(e).cast::<i32>().read_unaligned()) }
}

/// The four sub-blocks of a chunk: `(chunk >> (6 − 2s)) & 3` for `s` in 0..4, one code
/// per byte.
///
/// # Safety
/// The CPU must support AVX-512 F/BW.
#[inline(always)]
pub(crate) unsafe fn unpack4(chunk: __m512i) -> [__m512i; 4] {
    // SAFETY: the caller guarantees the features; register-only operations.
    unsafe {
        let mask = _mm512_set1_epi8(3);
        [
            _mm512_and_si512(_mm512_srli_epi16::<6>(chunk), mask),
            _mm512_and_si512(_mm512_srli_epi16::<4>(chunk), mask),
            _mm512_and_si512(_mm512_srli_epi16::<2>(chunk), mask),
            _mm512_and_si512(chunk, mask),
        ]
    }
}

/// Entry point of the one-token VNNI kernel.
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `block` must be readable for
/// `512·n_groups` bytes and `x` for `128·n_groups`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemv_entry(block: *const u8, x: *const u8, n_groups: usize) -> [i32; ROWS] {
    // SAFETY: group `g` reads chunk bytes `512g .. 512g+512` and activation bytes
    // `128g .. 128g+128`, inside the caller's ranges; prefetches are hints that never
    // fault, so addresses past the block (formed with `wrapping_add`) are fine.
    unsafe {
        let masks = [_mm512_set1_epi8(0xC0u8 as i8), _mm512_set1_epi8(0x30), _mm512_set1_epi8(0x0C), _mm512_set1_epi8(0x03)];
        let mut acc = [_mm512_setzero_si512(); 4];
        for g in 0..n_groups {
            let grp = block.add(GROUP_BYTES * g);
            let xg = x.add(GROUP * g);
            for d in 0..8 {
                _mm_prefetch::<_MM_HINT_T0>(grp.wrapping_add(64 * d + PREFETCH_NEAR).cast::<i8>());
                let chunk = _mm512_loadu_si512(grp.add(64 * d).cast());
                for (s, (a, &m)) in acc.iter_mut().zip(&masks).enumerate() {
                    *a = _mm512_dpbusd_epi32(*a, _mm512_and_si512(chunk, m), bcast4(xg, 32 * s + 4 * d));
                }
            }
        }
        let hi = _mm512_add_epi32(_mm512_srai_epi32::<6>(acc[0]), _mm512_srai_epi32::<4>(acc[1]));
        let lo = _mm512_add_epi32(_mm512_srai_epi32::<2>(acc[2]), acc[3]);
        let mut out = [0i32; ROWS];
        _mm512_storeu_si512(out.as_mut_ptr().cast(), _mm512_add_epi32(hi, lo));
        out
    }
}

/// Entry point of the multi-token VNNI kernel: codes shifted once per chunk and sub-block,
/// one `vpdpbusd` per token (exact in i32: a lane adds at most `4·3·128` per chunk).
///
/// # Safety
/// As [`gemv_entry`], and `x + n·x_stride` readable for `128·n_groups` bytes for every
/// `n < N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_entry<const N: usize>(block: *const u8, x: *const u8, x_stride: usize, n_groups: usize) -> [[i32; ROWS]; N] {
    // SAFETY: as in `gemv_entry`, for each of the N activation rows.
    unsafe {
        let mut acc = [_mm512_setzero_si512(); N];
        for g in 0..n_groups {
            let grp = block.add(GROUP_BYTES * g);
            for d in 0..8 {
                let chunk = _mm512_loadu_si512(grp.add(64 * d).cast());
                let codes = unpack4(chunk);
                for (n, a) in acc.iter_mut().enumerate() {
                    let xg = x.add(n * x_stride + GROUP * g);
                    for (s, &c) in codes.iter().enumerate() {
                        *a = _mm512_dpbusd_epi32(*a, c, bcast4(xg, 32 * s + 4 * d));
                    }
                }
            }
        }
        let mut out = [[0i32; ROWS]; N];
        for (o, a) in out.iter_mut().zip(&acc) {
            _mm512_storeu_si512(o.as_mut_ptr().cast(), *a);
        }
        out
    }
}

/// Entry point of [`Isa::r16_dots_exact`].
///
/// # Safety
/// As [`gemv_entry`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn exact_entry(block: *const u8, x: *const u8, n_groups: usize) -> [i32; ROWS] {
    // SAFETY: as in `gemv_entry`.
    unsafe {
        let ones = _mm512_set1_epi16(1);
        let mut wide = _mm512_setzero_si512();
        let mut g0 = 0;
        while g0 < n_groups {
            let g1 = (g0 + GROUPS_PER_CHUNK).min(n_groups);
            // acc[d]: i16 lanes 2r, 2r+1 = row r's scalar lanes 2d, 2d+1 over the chunk.
            let mut acc = [_mm512_setzero_si512(); 8];
            for g in g0..g1 {
                let grp = block.add(GROUP_BYTES * g);
                let xg = x.add(GROUP * g);
                for (d, a) in acc.iter_mut().enumerate() {
                    let chunk = _mm512_loadu_si512(grp.add(64 * d).cast());
                    let codes = unpack4(chunk);
                    for (s, &c) in codes.iter().enumerate() {
                        *a = _mm512_add_epi16(*a, _mm512_maddubs_epi16(c, bcast4(xg, 32 * s + 4 * d)));
                    }
                }
            }
            for a in acc {
                wide = _mm512_add_epi32(wide, _mm512_madd_epi16(a, ones));
            }
            g0 = g1;
        }
        let mut out = [0i32; ROWS];
        _mm512_storeu_si512(out.as_mut_ptr().cast(), wide);
        out
    }
}

/// Entry point of [`Isa::i2s_cannot_wrap`].
///
/// # Safety
/// The CPU must support AVX-512 BW; `xq` must be readable for `128·n_groups` bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn cannot_wrap_entry(xq: *const u8, n_groups: usize) -> bool {
    // SAFETY: a chunk reads bytes `128·g0 .. 128·g1` with `g1 ≤ n_groups`, in whole 64-byte
    // vectors (a group is two of them), inside the caller's range.
    unsafe {
        let ones = _mm512_set1_epi8(1);
        let limit = _mm256_set1_epi16(graph::quant::I2S_NO_WRAP_ABS_SUM as i16);
        let mut g0 = 0;
        while g0 < n_groups {
            let g1 = (g0 + GROUPS_PER_CHUNK).min(n_groups);
            // u16 lanes: each half sees ≤ 64 terms of |q[e]| + |q[e+1]| ≤ 256 (≤ 16384), so
            // the halves and their sum (≤ 32768) never wrap as unsigned.
            let mut a = _mm512_setzero_si512();
            for off in (GROUP * g0..GROUP * g1).step_by(64) {
                // |−128| = 0x80 = 128 read as unsigned by maddubs.
                let q = _mm512_abs_epi8(_mm512_loadu_si512(xq.add(off).cast()));
                a = _mm512_add_epi16(a, _mm512_maddubs_epi16(q, ones));
            }
            // Both halves hold the same 16 lanes j (byte offset 2j of a 32-byte sub-block).
            let lane = _mm256_add_epi16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
            // Non-zero lane ⇔ that lane's sum exceeds the limit (unsigned saturating sub).
            let over = _mm256_subs_epu16(lane, limit);
            if _mm256_testz_si256(over, over) == 0 {
                return false;
            }
            g0 = g1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One full chunk (32 groups); every byte of sub-block `s` of group `g` is `v(g, s)`, so
    /// every i16 lane's Σ|q| is `2 · Σ v`. `total` = Σ v over the 128 (g, s) pairs.
    fn acts(total: i32) -> Vec<u8> {
        let (base, extra) = (total / 128, total % 128);
        let mut x = Vec::with_capacity(4096);
        for pair in 0..128 {
            let v = base + i32::from(pair < extra);
            x.extend(std::iter::repeat_n(v as i8 as u8, 32));
        }
        x
    }

    #[test]
    fn layout_holds_each_rows_words() {
        let (m, k) = (19usize, 256usize);
        let src: Vec<u8> = (0..m * k / 4 + 32).map(|i| (i * 7 % 251) as u8).collect();
        let mut dst = vec![0xEEu8; r16_len(m, k).unwrap()];
        prepare_r16(&src, m, k, &mut dst);
        assert_eq!(dst.len(), 32 * k / 4 + 32);
        for rb in 0..2 {
            for g in 0..2 {
                for d in 0..8 {
                    for r in 0..16 {
                        for i in 0..4 {
                            let got = dst[((rb * 2 + g) * 8 + d) * 64 + 4 * r + i];
                            let row = 16 * rb + r;
                            let want = if row < m { src[row * k / 4 + 32 * g + 4 * d + i] } else { 0 };
                            assert_eq!(got, want, "block {rb} group {g} word {d} row {r} byte {i}");
                        }
                    }
                }
            }
        }
        assert_eq!(&dst[dst.len() - 32..], &src[m * k / 4..]);
    }

    #[test]
    fn cannot_wrap_bound_is_tight_and_needed() {
        let Some(isa) = Isa::detect() else {
            println!("skipped: no AVX-512 F/BW/VL/VNNI on this CPU");
            return;
        };
        let k = 4096;
        // Code 3 everywhere (the bound's worst case), 16 rows.
        let mut block = vec![0u8; r16_len(16, k).unwrap()];
        prepare_r16(&vec![0xFFu8; 16 * k / 4 + 32], 16, k, &mut block);
        // Σ|q| per lane = 10922: lanes reach 3 · 10922 = 32766, no wrap, same integer.
        let x = acts(5461);
        assert!(isa.i2s_cannot_wrap(&x, k));
        let exact = isa.r16_dots_exact(&block, &x, k);
        assert_eq!(exact, isa.r16_dots_vnni::<1>(&block, &x, k, k)[0]);
        assert_eq!(exact[0], 3 * 2 * 16 * 5461);
        // 10924: refused, and rightly: the lanes wrap, so the VNNI sum would differ.
        let x = acts(5462);
        assert!(!isa.i2s_cannot_wrap(&x, k));
        assert_ne!(isa.r16_dots_exact(&block, &x, k), isa.r16_dots_vnni::<1>(&block, &x, k, k)[0]);
        // Negative activations count by magnitude, −128 included.
        let neg: Vec<u8> = acts(5461).iter().map(|&b| (b as i8).wrapping_neg() as u8).collect();
        assert!(isa.i2s_cannot_wrap(&neg, k));
        let mut big = neg.clone();
        big[7] = 0x80;
        assert!(!isa.i2s_cannot_wrap(&big, k));
        // A second chunk is judged on its own: two chunks of 10922 each pass.
        let two = [acts(5461), acts(5461)].concat();
        assert!(isa.i2s_cannot_wrap(&two, 2 * k));
    }
}
