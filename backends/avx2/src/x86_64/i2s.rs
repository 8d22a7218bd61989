//! I2_S × int8 integer dot products, a tile of `R` weight rows × `N` tokens per call
//! (`vec_dot_i2s_i8_avx2`), bit-exact with scalar `vec_dot_i2s_i8` including its 16-bit
//! lane wrap (docs/format.md §2.2, §4.2).
//!
//! Per 128-element group (32 code bytes) and per sub-block `s` in 0..4, the codes of
//! elements `b + 32s` (b = byte index 0..31) are `(byte >> (6 − 2s)) & 3`, unpacked with a
//! 16-bit shift and a byte mask. `_mm256_maddubs_epi16(codes, q)` gives i16 lane `j` =
//! `c[2j]·q[2j] + c[2j+1]·q[2j+1]` (saturating, never reached: |pair| ≤ 2·3·128), which is
//! the scalar's `pair` for e = 128g + 32s + 2j. All four sub-blocks of every group of a
//! chunk of ≤ 32 groups are added into the same i16 accumulator with wrapping
//! `_mm256_add_epi16`, exactly the scalar's `lane[j]`; after each chunk (and the final
//! partial one) `_mm256_madd_epi16(acc, 1)` widens adjacent lanes to i32 (exact), and the
//! i32 lanes are summed with wrapping adds, which is the scalar's `total` (integer
//! addition mod 2³², so the order does not matter).
//!
//! The tile shares each loaded activation vector between its `R` rows and each unpacked
//! code vector between its `N` tokens (the GEMM case, T > 1), so prefill does `R·N`
//! `maddubs` per `R` code loads and `N` activation loads.

use std::arch::x86_64::*;

use super::{hsum_epi32, Isa};

/// Elements per I2_S group.
pub(crate) const GROUP: usize = 128;
/// Groups accumulated in i16 lanes before widening (bitnet.cpp's chunk of 32 groups).
const GROUPS_PER_CHUNK: usize = 32;

impl Isa {
    /// `out[r][n] = vec_dot_i2s_i8(row r, token n)` for an `R × N` tile.
    ///
    /// Row `r`'s `k/4` code bytes start at `codes[r·row_bytes]`; token `n`'s `k` int8
    /// activations start at `xq[n·x_stride]` (q8_tok rows: `x_stride = k + 8`).
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or a row or token reaches past its slice.
    pub(crate) fn i2s_dots<const R: usize, const N: usize>(
        self,
        codes: &[u8],
        row_bytes: usize,
        xq: &[u8],
        x_stride: usize,
        k: usize,
    ) -> [[i32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        assert!(k.is_multiple_of(GROUP), "i2s_dots: k = {k} is not a multiple of {GROUP}");
        assert!((R - 1) * row_bytes + k / 4 <= codes.len(), "i2s_dots: {R} rows of {k} codes exceed the weight slice");
        assert!((N - 1) * x_stride + k <= xq.len(), "i2s_dots: {N} tokens of {k} activations exceed the slice");
        // SAFETY: `self` proves AVX2/FMA/F16C; the asserts above keep the R code rows
        // (`k/4` bytes each, `row_bytes` apart) inside `codes` and the N activation rows
        // (`k` bytes each, `x_stride` apart) inside `xq`.
        unsafe { i2s_dots_entry::<R, N>(codes.as_ptr(), row_bytes, xq.as_ptr(), x_stride, k / GROUP) }
    }
}

/// Entry point of [`Isa::i2s_dots`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `codes + r·row_bytes` must be readable for
/// `32·n_groups` bytes for every `r < R`, and `xq + n·x_stride` for `128·n_groups` bytes for
/// every `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i2s_dots_entry<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xq: *const u8,
    x_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { i2s_dots_body::<R, N>(codes, row_bytes, xq, x_stride, n_groups) }
}

/// One sub-block `s` (shift `SH = 6 − 2s`) of one group for the whole tile: unpack each
/// row's codes once, `maddubs` them with each token's 32 activations, add into the i16
/// accumulators (wrapping).
///
/// # Safety
/// The CPU must support AVX2; `codes + r·row_bytes` must be readable for 32 bytes for every
/// `r < R`, and `xq + n·x_stride` for 32 bytes for every `n < N`.
#[inline(always)]
unsafe fn sub_block<const R: usize, const N: usize, const SH: i32>(
    acc: &mut [[__m256i; N]; R],
    codes: *const u8,
    row_bytes: usize,
    xq: *const u8,
    x_stride: usize,
) {
    // SAFETY: the caller guarantees AVX2 and that every pointer formed here (row r < R,
    // token n < N) is readable for the 32 bytes loaded (unaligned loads).
    unsafe {
        let mask = _mm256_set1_epi8(3);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let raw = _mm256_loadu_si256(codes.add(r * row_bytes).cast::<__m256i>());
            let c = _mm256_and_si256(_mm256_srli_epi16::<SH>(raw), mask);
            for (n, a) in acc_r.iter_mut().enumerate() {
                let q = _mm256_loadu_si256(xq.add(n * x_stride).cast::<__m256i>());
                *a = _mm256_add_epi16(*a, _mm256_maddubs_epi16(c, q));
            }
        }
    }
}

/// Body of [`Isa::i2s_dots`] (see the module docs for the arithmetic).
///
/// # Safety
/// As [`i2s_dots_entry`].
#[inline(always)]
unsafe fn i2s_dots_body<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xq: *const u8,
    x_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: the caller guarantees AVX2 and the readable ranges; group `g < n_groups`
    // reads code bytes `32g .. 32g+32` of each row and activation bytes
    // `128g .. 128g+128` of each token, inside those ranges.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut wide = [[_mm256_setzero_si256(); N]; R];
        let mut g0 = 0;
        while g0 < n_groups {
            let g1 = (g0 + GROUPS_PER_CHUNK).min(n_groups);
            let mut acc = [[_mm256_setzero_si256(); N]; R];
            for g in g0..g1 {
                if N == 1 {
                    // GEMV streams the weights once: prefetch the same bytes of the next
                    // tile's rows into L1 and of the tile after three more into L2. Hints
                    // only, never dereferenced (prefetches do not fault), so a wrapping
                    // address past the slice is fine. (`avx2_kernel_throughput`, 2-vCPU
                    // Xeon VM, 2 threads, 6912×2560 GEMV over 1 GiB of weights: no
                    // prefetch 8.5 GB/s, L1 only 14.8, L1 + L2 15.5; read bandwidth 21.)
                    for r in 0..R {
                        let near = codes.wrapping_add((R + r) * row_bytes + 32 * g);
                        _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                        let far = codes.wrapping_add((4 * R + r) * row_bytes + 32 * g);
                        _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
                    }
                }
                let c = codes.add(32 * g);
                let q = xq.add(GROUP * g);
                sub_block::<R, N, 6>(&mut acc, c, row_bytes, q, x_stride);
                sub_block::<R, N, 4>(&mut acc, c, row_bytes, q.add(32), x_stride);
                sub_block::<R, N, 2>(&mut acc, c, row_bytes, q.add(64), x_stride);
                sub_block::<R, N, 0>(&mut acc, c, row_bytes, q.add(96), x_stride);
            }
            for (w_r, a_r) in wide.iter_mut().zip(&acc) {
                for (w, a) in w_r.iter_mut().zip(a_r) {
                    *w = _mm256_add_epi32(*w, _mm256_madd_epi16(*a, ones));
                }
            }
            g0 = g1;
        }
        let mut out = [[0i32; N]; R];
        for (o_r, w_r) in out.iter_mut().zip(&wide) {
            for (o, w) in o_r.iter_mut().zip(w_r) {
                *o = hsum_epi32(*w);
            }
        }
        out
    }
}
