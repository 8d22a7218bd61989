//! I2_S × int8 integer dot products on 512-bit registers, a tile of `R` weight rows × `N`
//! tokens per call, bit-exact with scalar `vec_dot_i2s_i8` including its 16-bit lane wrap
//! (docs/format.md §2.2, §4.2).
//!
//! ## Pairs of groups
//! An I2_S row is groups of 128 elements, 32 code bytes each; byte `b` of group `g` holds
//! the codes of elements `128g + 32s + b` for `s` in 0..4 at bit `6 − 2s`. A 512-bit load
//! takes two groups (a *pair*, 64 code bytes), so sub-block `s` of both groups is one
//! shift-and-mask of the whole register: its low 32 bytes are group `2p`'s elements
//! `32s .. 32s+32`, its high 32 bytes group `2p+1`'s. The activations are rearranged once
//! per token to match ([`permute_acts`]): the permuted row holds, per pair `p` and
//! sub-block `s`, 64 bytes = group `2p`'s 32 activations of sub-block `s`, then group
//! `2p+1`'s. A row with an odd number of groups ends with a half pair: its codes are read
//! with a masked load (no byte past the row is touched) and its missing activations are
//! zero.
//!
//! ## The exact kernel (`vec_dot_i2s_i8_avx512`)
//! `_mm512_maddubs_epi16(codes, q)` gives i16 lane `j` of each half = `c[2j]·q[2j] +
//! c[2j+1]·q[2j+1]` (never saturating: |pair| ≤ 2·3·128), the scalar's `pair` for that half's
//! group. Lanes are added with wrapping `_mm512_add_epi16` over the pairs of a chunk of 32
//! groups (16 pairs: chunks never split a pair); at the chunk's end the two halves are
//! added with a wrapping i16 add, which is the scalar's `lane[j]` (its wrapped sum over
//! the chunk's groups and sub-blocks: addition mod 2¹⁶ in any order), then widened with
//! `madd(·, 1)` and added into i32 lanes (the scalar's `total`, mod 2³²).
//!
//! ## VNNI kernels (`vec_dot_i2s_i8_avx512vnni`)
//! `vpdpbusd` adds four u8 × i8 products into an i32 lane, so it reproduces the scalar only
//! where no i16 lane can wrap: [`Isa::i2s_cannot_wrap`] proves that from the activations
//! alone (per lane and chunk Σ|q| ≤ 10922, so 3·Σ ≤ 32767 whatever the codes; the AVX2
//! backend's proof, `backend-avx2` `x86_64/i2s.rs`). The one-token kernel masks each
//! sub-block's codes in place (`raw & (3 << (6 − 2s))`, no shift), so accumulator `s` holds
//! `4^(3−s)` times its exact sum (never near 2³¹ for `k` ≤ [`VNNI_MAX_K`]); an arithmetic
//! shift undoes the factor exactly. The multi-token kernel unpacks codes once per row and
//! sub-block and shares them between its tokens.

use std::arch::x86_64::*;

use super::Isa;

/// Elements per I2_S group.
pub(crate) const GROUP: usize = 128;
/// Groups accumulated in i16 lanes before widening (bitnet.cpp's chunk of 32 groups).
const GROUPS_PER_CHUNK: usize = 32;
/// Bytes of a permuted activation row per pair of groups.
pub(crate) const PAIR: usize = 256;
/// The largest per-lane Σ|q| of a chunk for which no i16 lane can wrap (3 · 10922 ≤ 32767).
const NO_WRAP_ABS_SUM: i16 = 10922;
/// Largest `k` the VNNI kernels take: the masked-in-place accumulators of the one-token
/// kernel hold up to `4 · 192 · 128 = 98304` per pair and lane, `(k/256 + 1) · 98304 < 2³¹`.
pub(crate) const VNNI_MAX_K: usize = 1 << 20;
/// Low 32 bytes of a 64-byte load (the half pair at the end of an odd row).
const LOW_HALF: __mmask64 = 0xFFFF_FFFF;

/// Bytes of the permuted form of a row of `k` activations (whole pairs).
pub(crate) fn permuted_len(k: usize) -> usize {
    k.div_ceil(PAIR) * PAIR
}

/// Rearranges the `k` activations of a q8 row (`x[..k]`) into the pair order of the module
/// notes: `out[256p + 64s + h·32 + j] = x[128(2p + h) + 32s + j]`, zero past `k`.
///
/// # Panics
/// If `k` is not a multiple of 128, `x` is shorter than `k` or `out` is not
/// [`permuted_len`]`(k)` long.
pub(crate) fn permute_acts(x: &[u8], k: usize, out: &mut [u8]) {
    assert!(k.is_multiple_of(GROUP) && x.len() >= k, "permute_acts: k = {k}, {} bytes", x.len());
    assert_eq!(out.len(), permuted_len(k), "permute_acts: output length");
    for (p, dst) in out.chunks_exact_mut(PAIR).enumerate() {
        for s in 0..4 {
            for h in 0..2 {
                let g = 2 * p + h;
                let d = &mut dst[64 * s + 32 * h..64 * s + 32 * h + 32];
                if g * GROUP < k {
                    d.copy_from_slice(&x[GROUP * g + 32 * s..GROUP * g + 32 * s + 32]);
                } else {
                    d.fill(0);
                }
            }
        }
    }
}

impl Isa {
    /// `out[r][n] = vec_dot_i2s_i8(row r, token n)` for an `R × N` tile, exact (i16 lane
    /// wrap included).
    ///
    /// Row `r`'s `k/4` code bytes start at `codes[r·row_bytes]`; token `n`'s permuted
    /// activations ([`permute_acts`]) at `xp[n·xp_stride]`.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or a row or token reaches past its slice.
    pub(crate) fn i2s_dots<const R: usize, const N: usize>(
        self,
        codes: &[u8],
        row_bytes: usize,
        xp: &[u8],
        xp_stride: usize,
        k: usize,
    ) -> [[i32; N]; R] {
        check_tile::<R, N>(codes, row_bytes, xp, xp_stride, k);
        // SAFETY: `self` proves AVX2/FMA/F16C/AVX-512 F/BW/VL/VNNI; `check_tile` keeps the R
        // code rows (`k/4` bytes, `row_bytes` apart) inside `codes` and the N permuted rows
        // (`permuted_len(k)` bytes, `xp_stride` apart) inside `xp`.
        unsafe { exact_entry::<R, N>(codes.as_ptr(), row_bytes, xp.as_ptr(), xp_stride, k / GROUP) }
    }

    /// The same tile with `vpdpbusd`: exact only when [`Isa::i2s_cannot_wrap`] holds for
    /// every token of the tile (the caller's duty; the result is otherwise the unwrapped
    /// sum).
    ///
    /// # Panics
    /// As [`Isa::i2s_dots`], and if `k` exceeds [`VNNI_MAX_K`].
    pub(crate) fn i2s_dots_vnni<const R: usize, const N: usize>(
        self,
        codes: &[u8],
        row_bytes: usize,
        xp: &[u8],
        xp_stride: usize,
        k: usize,
    ) -> [[i32; N]; R] {
        check_tile::<R, N>(codes, row_bytes, xp, xp_stride, k);
        assert!(k <= VNNI_MAX_K, "i2s_dots_vnni: k = {k} exceeds {VNNI_MAX_K}");
        // SAFETY: as in `i2s_dots`.
        unsafe {
            if N == 1 {
                let one = vnni_gemv_entry::<R>(codes.as_ptr(), row_bytes, xp.as_ptr(), k / GROUP);
                let mut out = [[0i32; N]; R];
                for (o, v) in out.iter_mut().zip(one) {
                    o[0] = v;
                }
                out
            } else {
                vnni_gemm_entry::<R, N>(codes.as_ptr(), row_bytes, xp.as_ptr(), xp_stride, k / GROUP)
            }
        }
    }

    /// Whether `vec_dot_i2s_i8` of this q8 row (its first `k` bytes, natural order) with
    /// any I2_S codes can never wrap an i16 lane (module notes), so that the VNNI and AMX
    /// kernels give its exact result. False for `k` above [`VNNI_MAX_K`].
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

/// The bounds every tile kernel needs.
fn check_tile<const R: usize, const N: usize>(codes: &[u8], row_bytes: usize, xp: &[u8], xp_stride: usize, k: usize) {
    const { assert!(R > 0 && N > 0) };
    assert!(k.is_multiple_of(GROUP), "i2s tile: k = {k} is not a multiple of {GROUP}");
    assert!((R - 1) * row_bytes + k / 4 <= codes.len(), "i2s tile: {R} rows of {k} codes exceed the weight slice");
    assert!((N - 1) * xp_stride + permuted_len(k) <= xp.len(), "i2s tile: {N} tokens of {k} activations exceed the slice");
}

/// The 64 code bytes of pair `p` of a row (`n_groups` groups), the high half zero when the
/// row ends in the pair's first group.
///
/// # Safety
/// The CPU must support AVX-512 BW; `row` must be readable for `32·n_groups` bytes and
/// `2p < n_groups`.
#[inline(always)]
pub(crate) unsafe fn load_pair(row: *const u8, p: usize, n_groups: usize) -> __m512i {
    // SAFETY: the caller guarantees AVX-512 BW and the readable range. A whole pair reads
    // bytes `64p .. 64p+64 ≤ 32·n_groups`; a half pair reads (masked) the 32 bytes
    // `64p .. 64p+32 ≤ 32·n_groups` and suppresses the rest (masked-out bytes never fault).
    unsafe {
        if 2 * p + 2 <= n_groups {
            _mm512_loadu_si512(row.add(64 * p).cast())
        } else {
            _mm512_maskz_loadu_epi8(LOW_HALF, row.add(64 * p).cast())
        }
    }
}

/// Entry point of [`Isa::i2s_dots`].
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `codes + r·row_bytes` must be readable for
/// `32·n_groups` bytes for every `r < R`, and `xp + n·xp_stride` for
/// `permuted_len(128·n_groups)` bytes for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn exact_entry<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xp: *const u8,
    xp_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { tile_body::<R, N, false>(codes, row_bytes, xp, xp_stride, n_groups) }
}

/// Entry point of the multi-token VNNI tile.
///
/// # Safety
/// As [`exact_entry`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_gemm_entry<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xp: *const u8,
    xp_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { tile_body::<R, N, true>(codes, row_bytes, xp, xp_stride, n_groups) }
}

/// The exact tile (`V` false: `maddubs` into wrapping i16 lanes folded per chunk) and the
/// multi-token VNNI tile (`V` true: `vpdpbusd` into i32 lanes). Codes are unpacked once per
/// row, pair and sub-block and shared by the tile's tokens.
///
/// # Safety
/// As [`exact_entry`].
#[inline(always)]
unsafe fn tile_body<const R: usize, const N: usize, const V: bool>(
    codes: *const u8,
    row_bytes: usize,
    xp: *const u8,
    xp_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: the caller guarantees the features and the readable ranges: pair `p` (with
    // `2p < n_groups`) reads code bytes through `load_pair` and permuted activation bytes
    // `256p .. 256p+256` of each token, inside `permuted_len(128·n_groups)`.
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        let mut wide = [[_mm512_setzero_si512(); N]; R];
        let n_pairs = n_groups.div_ceil(2);
        let pairs_per_chunk = GROUPS_PER_CHUNK / 2;
        let mut p0 = 0;
        while p0 < n_pairs {
            let p1 = (p0 + pairs_per_chunk).min(n_pairs);
            let mut acc = [[_mm512_setzero_si512(); N]; R];
            for p in p0..p1 {
                let mut raw = [_mm512_setzero_si512(); R];
                for (r, w) in raw.iter_mut().enumerate() {
                    *w = load_pair(codes.add(r * row_bytes), p, n_groups);
                }
                let q = xp.add(PAIR * p);
                sub_block::<R, N, 6, V>(&mut acc, &raw, mask, q, xp_stride);
                sub_block::<R, N, 4, V>(&mut acc, &raw, mask, q.add(64), xp_stride);
                sub_block::<R, N, 2, V>(&mut acc, &raw, mask, q.add(128), xp_stride);
                sub_block::<R, N, 0, V>(&mut acc, &raw, mask, q.add(192), xp_stride);
            }
            for (w_r, a_r) in wide.iter_mut().zip(&acc) {
                for (w, a) in w_r.iter_mut().zip(a_r) {
                    *w = if V {
                        _mm512_add_epi32(*w, *a)
                    } else {
                        // The chunk's lane j = (group 2p half) + (group 2p+1 half), mod 2¹⁶.
                        let lane = _mm256_add_epi16(_mm512_castsi512_si256(*a), _mm512_extracti64x4_epi64::<1>(*a));
                        _mm512_add_epi32(*w, _mm512_zextsi256_si512(_mm256_madd_epi16(lane, ones)))
                    };
                }
            }
            p0 = p1;
        }
        let mut out = [[0i32; N]; R];
        for (o_r, w_r) in out.iter_mut().zip(&wide) {
            for (o, w) in o_r.iter_mut().zip(w_r) {
                // Integer addition mod 2³²: any order gives the scalar's `total` (the exact
                // path's high half is zero: `zextsi256_si512`).
                *o = hsum_epi32(*w);
            }
        }
        out
    }
}

/// Wrapping sum of the sixteen i32 lanes.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[inline(always)]
unsafe fn hsum_epi32(v: __m512i) -> i32 {
    // SAFETY: the caller guarantees AVX-512 F; register-only operations.
    unsafe {
        let s = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// One sub-block (shift `SH = 6 − 2s`) of one pair for the whole tile: each row's codes
/// unpacked once, then `maddubs` + wrapping i16 add (or, with `V`, one `vpdpbusd`) per token.
///
/// # Safety
/// The CPU must support AVX-512 BW (and VNNI if `V`); `xq + n·x_stride` must be readable for
/// 64 bytes for every `n < N`.
#[inline(always)]
unsafe fn sub_block<const R: usize, const N: usize, const SH: u32, const V: bool>(
    acc: &mut [[__m512i; N]; R],
    raw: &[__m512i; R],
    mask: __m512i,
    xq: *const u8,
    x_stride: usize,
) {
    // SAFETY: the caller guarantees the features and the 64 readable bytes per token.
    unsafe {
        let mut q = [_mm512_setzero_si512(); N];
        for (n, qn) in q.iter_mut().enumerate() {
            *qn = _mm512_loadu_si512(xq.add(n * x_stride).cast());
        }
        for (acc_r, &w) in acc.iter_mut().zip(raw) {
            let c = _mm512_and_si512(_mm512_srli_epi16::<SH>(w), mask);
            for (a, &qn) in acc_r.iter_mut().zip(&q) {
                *a = if V { _mm512_dpbusd_epi32(*a, c, qn) } else { _mm512_add_epi16(*a, _mm512_maddubs_epi16(c, qn)) };
            }
        }
    }
}

/// Entry point of the one-token VNNI kernel.
///
/// # Safety
/// As [`exact_entry`] with `N` = 1.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_gemv_entry<const R: usize>(codes: *const u8, row_bytes: usize, xp: *const u8, n_groups: usize) -> [i32; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { vnni_gemv_body::<R>(codes, row_bytes, xp, n_groups) }
}

/// Body of [`vnni_gemv_entry`]: codes masked in place, four accumulators per row (module
/// notes), the next tiles' rows prefetched.
///
/// # Safety
/// As [`vnni_gemv_entry`].
#[inline(always)]
unsafe fn vnni_gemv_body<const R: usize>(codes: *const u8, row_bytes: usize, xp: *const u8, n_groups: usize) -> [i32; R] {
    // SAFETY: pair `p` (`2p < n_groups`) reads code bytes through `load_pair` and activation
    // bytes `256p .. 256p+256`, inside the caller's ranges; prefetches are hints that never
    // fault, so addresses past the slice (formed with `wrapping_add`) are fine.
    unsafe {
        let masks = [_mm512_set1_epi8(0xC0u8 as i8), _mm512_set1_epi8(0x30), _mm512_set1_epi8(0x0C), _mm512_set1_epi8(0x03)];
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        for p in 0..n_groups.div_ceil(2) {
            // One memory stream per row: the same line of the next tile's rows into L1, of
            // the tile after three more into L2 (the AVX2 GEMV's distances).
            for r in 0..R {
                let near = codes.wrapping_add((R + r) * row_bytes + 64 * p);
                _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                let far = codes.wrapping_add((4 * R + r) * row_bytes + 64 * p);
                _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
            }
            let q = xp.add(PAIR * p);
            let x = [
                _mm512_loadu_si512(q.cast()),
                _mm512_loadu_si512(q.add(64).cast()),
                _mm512_loadu_si512(q.add(128).cast()),
                _mm512_loadu_si512(q.add(192).cast()),
            ];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let raw = load_pair(codes.add(r * row_bytes), p, n_groups);
                for ((a, &m), &xs) in acc_r.iter_mut().zip(&masks).zip(&x) {
                    *a = _mm512_dpbusd_epi32(*a, _mm512_and_si512(raw, m), xs);
                }
            }
        }
        let mut out = [0i32; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            let hi = _mm512_add_epi32(_mm512_srai_epi32::<6>(a[0]), _mm512_srai_epi32::<4>(a[1]));
            let lo = _mm512_add_epi32(_mm512_srai_epi32::<2>(a[2]), a[3]);
            *o = hsum_epi32(_mm512_add_epi32(hi, lo));
        }
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
        let limit = _mm256_set1_epi16(NO_WRAP_ABS_SUM);
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

    fn permuted(x: &[u8], k: usize) -> Vec<u8> {
        let mut p = vec![0u8; permuted_len(k)];
        permute_acts(x, k, &mut p);
        p
    }

    #[test]
    fn permutation_is_the_pair_order() {
        let k = 3 * 128; // one whole pair and a half pair
        let x: Vec<u8> = (0..k).map(|i| (i % 251) as u8).collect();
        let p = permuted(&x, k);
        assert_eq!(p.len(), 512);
        for (i, &v) in p.iter().enumerate() {
            let (pair, s, h, j) = (i / 256, i % 256 / 64, i % 64 / 32, i % 32);
            let g = 2 * pair + h;
            let want = if g < 3 { x[128 * g + 32 * s + j] } else { 0 };
            assert_eq!(v, want, "byte {i}");
        }
    }

    #[test]
    fn cannot_wrap_bound_is_tight_and_needed() {
        let Some(isa) = Isa::detect() else {
            println!("skipped: no AVX-512 F/BW/VL/VNNI on this CPU");
            return;
        };
        let k = 4096;
        let codes = vec![0xFFu8; 2 * k / 4]; // code 3 everywhere: the bound's worst case
        // Σ|q| per lane = 10922: lanes reach 3 · 10922 = 32766, no wrap, same integer.
        let x = acts(5461);
        assert!(isa.i2s_cannot_wrap(&x, k));
        let xp = permuted(&x, k);
        let exact = isa.i2s_dots::<2, 1>(&codes, k / 4, &xp, xp.len(), k);
        assert_eq!(exact, isa.i2s_dots_vnni::<2, 1>(&codes, k / 4, &xp, xp.len(), k));
        assert_eq!(exact[0][0], 3 * 2 * 16 * 5461);
        // 10924: refused, and rightly: the lanes wrap, so the VNNI sum would differ.
        let x = acts(5462);
        assert!(!isa.i2s_cannot_wrap(&x, k));
        let xp = permuted(&x, k);
        assert_ne!(isa.i2s_dots::<2, 1>(&codes, k / 4, &xp, xp.len(), k), isa.i2s_dots_vnni::<2, 1>(&codes, k / 4, &xp, xp.len(), k));
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
