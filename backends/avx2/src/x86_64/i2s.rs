//! I2_S × int8 integer dot products, a tile of `R` weight rows × `N` tokens per call
//! (`vec_dot_i2s_i8_avx2`), bit-exact with scalar `vec_dot_i2s_i8` including its 16-bit
//! lane wrap (../shared/docs/format.md §2.2, §4.2).
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

use super::{hsum_epi32, Isa, Vnni};

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
    unsafe { i2s_dots_body::<R, N, false>(codes, row_bytes, xq, x_stride, n_groups) }
}

/// One sub-block `s` (shift `SH = 6 − 2s`) of one group for the whole tile: unpack each
/// row's codes once, `maddubs` them with each token's 32 activations, add into the i16
/// accumulators (wrapping); with `V`, one `vpdpbusd` into i32 accumulators instead.
///
/// # Safety
/// The CPU must support AVX2 (and AVX-VNNI if `V`); `codes + r·row_bytes` must be readable
/// for 32 bytes for every `r < R`, and `xq + n·x_stride` for 32 bytes for every `n < N`.
#[inline(always)]
unsafe fn sub_block<const R: usize, const N: usize, const SH: i32, const V: bool>(
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
                *a = if V { _mm256_dpbusd_avx_epi32(*a, c, q) } else { _mm256_add_epi16(*a, _mm256_maddubs_epi16(c, q)) };
            }
        }
    }
}

/// Body of [`Isa::i2s_dots`] (see the module docs for the arithmetic) and, with `V`, of
/// the VNNI tiles: i32 accumulators fed by `vpdpbusd`, added as they are at each chunk's end
/// (exact, see the VNNI notes below).
///
/// # Safety
/// As [`i2s_dots_entry`], and AVX-VNNI if `V`.
#[inline(always)]
unsafe fn i2s_dots_body<const R: usize, const N: usize, const V: bool>(
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
                sub_block::<R, N, 6, V>(&mut acc, c, row_bytes, q, x_stride);
                sub_block::<R, N, 4, V>(&mut acc, c, row_bytes, q.add(32), x_stride);
                sub_block::<R, N, 2, V>(&mut acc, c, row_bytes, q.add(64), x_stride);
                sub_block::<R, N, 0, V>(&mut acc, c, row_bytes, q.add(96), x_stride);
            }
            for (w_r, a_r) in wide.iter_mut().zip(&acc) {
                for (w, a) in w_r.iter_mut().zip(a_r) {
                    *w = _mm256_add_epi32(*w, if V { *a } else { _mm256_madd_epi16(*a, ones) });
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

// ---------------------------------------------------------------------------------------
// AVX-VNNI variant.
//
// `vpdpbusd` adds four u8 × i8 products into an i32 lane in one instruction, where the
// exact kernel above needs `maddubs` + an i16 add. It sums in i32, so it reproduces the
// scalar's i16 lane wrap only when no lane can wrap. [`Isa::i2s_cannot_wrap`] proves that
// from the activations alone: an i16 lane `j` of a chunk sums, over the chunk's groups and
// sub-blocks, `c[e]·q[e] + c[e+1]·q[e+1]` (e = 128g + 32s + 2j) with codes c ≤ 3, so its
// magnitude is at most `3 · A_j` with `A_j = Σ (|q[e]| + |q[e+1]|)`. If every `A_j` of every
// chunk is ≤ 10922 (3 · 10922 ≤ 32767), each lane's exact sum is its wrapped sum, the
// scalar's `total` is the exact integer Σ c·q, and any exact summation (the VNNI kernels
// below) gives the same i32. Tokens that fail the test use the exact kernel.
// ---------------------------------------------------------------------------------------

/// Largest `k` the VNNI kernels take: their unshifted-code accumulators hold up to
/// `4 · 192 · 128` per group and lane (`(k/128) · 98304 < 2³¹` needs k < 2.8 M).
const VNNI_MAX_K: usize = 1 << 20;

impl Isa {
    /// Whether `vec_dot_i2s_i8` of this q8 row (its first `k` bytes) with any I2_S codes
    /// can never wrap an i16 lane (module notes above), so that the VNNI kernels give its
    /// exact result. Also false for `k` above the VNNI kernels' limit.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or `xq` is shorter than `k`.
    pub(crate) fn i2s_cannot_wrap(self, xq: &[u8], k: usize) -> bool {
        assert!(k.is_multiple_of(GROUP) && k <= xq.len(), "i2s_cannot_wrap: k = {k}, {} bytes", xq.len());
        if k > VNNI_MAX_K {
            return false;
        }
        // SAFETY: `self` proves AVX2; the assert keeps the `k` bytes read inside `xq`.
        unsafe { cannot_wrap_entry(xq.as_ptr(), k / GROUP) }
    }
}

/// Entry point of [`Isa::i2s_cannot_wrap`].
///
/// # Safety
/// The CPU must support AVX2; `xq` must be readable for `128·n_groups` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cannot_wrap_entry(xq: *const u8, n_groups: usize) -> bool {
    // SAFETY: group `g < n_groups` reads bytes `128g .. 128g+128`, inside the caller's range.
    unsafe {
        let ones = _mm256_set1_epi8(1);
        let limit = _mm256_set1_epi16(graph::quant::I2S_NO_WRAP_ABS_SUM as i16);
        let mut g0 = 0;
        while g0 < n_groups {
            let g1 = (g0 + GROUPS_PER_CHUNK).min(n_groups);
            // u16 lanes: ≤ 128 terms of |q[e]| + |q[e+1]| ≤ 256, so ≤ 32768, no wrap.
            let mut a = _mm256_setzero_si256();
            for off in (GROUP * g0..GROUP * g1).step_by(32) {
                // |−128| = 0x80 = 128 read as unsigned by maddubs.
                let q = _mm256_abs_epi8(_mm256_loadu_si256(xq.add(off).cast::<__m256i>()));
                a = _mm256_add_epi16(a, _mm256_maddubs_epi16(q, ones));
            }
            // Non-zero lane ⇔ that lane's sum exceeds the limit (unsigned saturating sub).
            let over = _mm256_subs_epu16(a, limit);
            if _mm256_testz_si256(over, over) == 0 {
                return false;
            }
            g0 = g1;
        }
        true
    }
}

impl Vnni {
    /// `out[r][n] = vec_dot_i2s_i8(row r, token n)` for an `R × N` tile, with `vpdpbusd`.
    /// Same layout and arguments as [`Isa::i2s_dots`]. Exact only when
    /// [`Isa::i2s_cannot_wrap`] holds for every token of the tile (the caller's duty; the
    /// result is otherwise the unwrapped sum).
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or above the VNNI limit, or a row or token reaches
    /// past its slice.
    pub(crate) fn i2s_dots<const R: usize, const N: usize>(
        self,
        codes: &[u8],
        row_bytes: usize,
        xq: &[u8],
        x_stride: usize,
        k: usize,
    ) -> [[i32; N]; R] {
        const { assert!(R > 0 && N > 0) };
        assert!(k.is_multiple_of(GROUP) && k <= VNNI_MAX_K, "vnni i2s_dots: k = {k}");
        assert!((R - 1) * row_bytes + k / 4 <= codes.len(), "vnni i2s_dots: {R} rows of {k} codes exceed the weight slice");
        assert!((N - 1) * x_stride + k <= xq.len(), "vnni i2s_dots: {N} tokens of {k} activations exceed the slice");
        // SAFETY: `self` proves AVX2/FMA/F16C/AVX-VNNI; the asserts keep every row (`k/4`
        // bytes, `row_bytes` apart) and token (`k` bytes, `x_stride` apart) read inside its
        // slice, as both entry points need.
        unsafe {
            if N == 1 {
                let one = vnni_gemv_entry::<R>(codes.as_ptr(), row_bytes, xq.as_ptr(), k / GROUP);
                let mut out = [[0i32; N]; R];
                for (o, v) in out.iter_mut().zip(one) {
                    o[0] = v;
                }
                out
            } else {
                vnni_gemm_entry::<R, N>(codes.as_ptr(), row_bytes, xq.as_ptr(), x_stride, k / GROUP)
            }
        }
    }
}

/// One token: each sub-block's codes are masked in place (`raw & (3 << (6 − 2s))`, no
/// shift), so sub-block `s`'s accumulator holds `4^(3−s)` times its exact sum (never more
/// than `VNNI_MAX_K / 128 · 98304 < 2³¹` in a lane); an arithmetic shift right by `6 − 2s`
/// undoes the factor exactly before the four are added.
///
/// # Safety
/// The CPU must support AVX2 and AVX-VNNI; `codes + r·row_bytes` must be readable for
/// `32·n_groups` bytes for every `r < R`, and `xq` for `128·n_groups` bytes.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn vnni_gemv_entry<const R: usize>(codes: *const u8, row_bytes: usize, xq: *const u8, n_groups: usize) -> [i32; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { vnni_gemv_body::<R>(codes, row_bytes, xq, n_groups) }
}

/// Body of [`vnni_gemv_entry`].
///
/// # Safety
/// As [`vnni_gemv_entry`].
#[inline(always)]
unsafe fn vnni_gemv_body<const R: usize>(codes: *const u8, row_bytes: usize, xq: *const u8, n_groups: usize) -> [i32; R] {
    // SAFETY: group `g < n_groups` reads code bytes `32g .. 32g+32` of each row and
    // activation bytes `128g .. 128g+128`, inside the caller's ranges; prefetches are hints
    // that never fault (as in `i2s_dots_body`).
    unsafe {
        let masks = [_mm256_set1_epi8(0xC0u8 as i8), _mm256_set1_epi8(0x30), _mm256_set1_epi8(0x0C), _mm256_set1_epi8(0x03)];
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        for g in 0..n_groups {
            for r in 0..R {
                let near = codes.wrapping_add((R + r) * row_bytes + 32 * g);
                _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                let far = codes.wrapping_add((4 * R + r) * row_bytes + 32 * g);
                _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
            }
            let q = xq.add(GROUP * g);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let raw = _mm256_loadu_si256(codes.add(r * row_bytes + 32 * g).cast::<__m256i>());
                for (s, a) in acc_r.iter_mut().enumerate() {
                    let x = _mm256_loadu_si256(q.add(32 * s).cast::<__m256i>());
                    *a = _mm256_dpbusd_avx_epi32(*a, _mm256_and_si256(raw, masks[s]), x);
                }
            }
        }
        let mut out = [0i32; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            let hi = _mm256_add_epi32(_mm256_srai_epi32::<6>(a[0]), _mm256_srai_epi32::<4>(a[1]));
            let lo = _mm256_add_epi32(_mm256_srai_epi32::<2>(a[2]), a[3]);
            *o = hsum_epi32(_mm256_add_epi32(hi, lo));
        }
        out
    }
}

/// Several tokens: the exact kernel's body with `V` = true: codes unpacked once per row
/// and sub-block, shared by the tile's tokens, one `vpdpbusd` per row, token and
/// sub-block into an i32 accumulator (exact: a lane adds at most `3·128·4` per sub-block).
///
/// # Safety
/// As [`vnni_gemv_entry`], and `xq + n·x_stride` readable for `128·n_groups` bytes for
/// every `n < N`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn vnni_gemm_entry<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xq: *const u8,
    x_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { i2s_dots_body::<R, N, true>(codes, row_bytes, xq, x_stride, n_groups) }
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
    fn cannot_wrap_bound_is_tight_and_needed() {
        let (Some(isa), Some(vnni)) = (Isa::detect(), Vnni::detect()) else {
            println!("skipped: no AVX2 + AVX-VNNI on this CPU");
            return;
        };
        let k = 4096;
        let codes = vec![0xFFu8; 2 * k / 4]; // code 3 everywhere: the bound's worst case
                                             // Σ|q| per lane = 10922: lanes reach 3 · 10922 = 32766, no wrap, same integer.
        let x = acts(5461);
        assert!(isa.i2s_cannot_wrap(&x, k));
        assert_eq!(isa.i2s_dots::<2, 1>(&codes, k / 4, &x, k, k), vnni.i2s_dots::<2, 1>(&codes, k / 4, &x, k, k));
        assert_eq!(isa.i2s_dots::<2, 1>(&codes, k / 4, &x, k, k)[0][0], 3 * 2 * 16 * 5461);
        // 10924: refused, and rightly: the lanes wrap, so the VNNI sum would differ.
        let x = acts(5462);
        assert!(!isa.i2s_cannot_wrap(&x, k));
        assert_ne!(isa.i2s_dots::<2, 1>(&codes, k / 4, &x, k, k), vnni.i2s_dots::<2, 1>(&codes, k / 4, &x, k, k));
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

    #[test]
    fn vnni_tiles_match_exact_kernel() {
        let (Some(isa), Some(vnni)) = (Isa::detect(), Vnni::detect()) else {
            println!("skipped: no AVX2 + AVX-VNNI on this CPU");
            return;
        };
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for groups in [1usize, 20, 33, 54] {
            let k = 128 * groups;
            let row_bytes = k / 4 + 3; // rows not contiguous
            let codes: Vec<u8> = (0..4 * row_bytes).map(|_| next() as u8).collect();
            let x_stride = k + 8;
            let xq: Vec<u8> = (0..4 * x_stride).map(|_| ((next() % 81) as i32 - 40) as i8 as u8).collect();
            for n in 0..4 {
                assert!(isa.i2s_cannot_wrap(&xq[n * x_stride..], k));
            }
            assert_eq!(
                isa.i2s_dots::<2, 1>(&codes, row_bytes, &xq, x_stride, k),
                vnni.i2s_dots::<2, 1>(&codes, row_bytes, &xq, x_stride, k)
            );
            assert_eq!(
                isa.i2s_dots::<1, 1>(&codes, row_bytes, &xq, x_stride, k),
                vnni.i2s_dots::<1, 1>(&codes, row_bytes, &xq, x_stride, k)
            );
            assert_eq!(
                isa.i2s_dots::<2, 4>(&codes, row_bytes, &xq, x_stride, k),
                vnni.i2s_dots::<2, 4>(&codes, row_bytes, &xq, x_stride, k)
            );
            assert_eq!(
                isa.i2s_dots::<3, 3>(&codes, row_bytes, &xq, x_stride, k),
                vnni.i2s_dots::<3, 3>(&codes, row_bytes, &xq, x_stride, k)
            );
        }
    }
}
