//! Q8_0 head: the activation quantizer (`quantize_row_q8_0_act_avx512`) and the block dot
//! product as an `R × N` tile (`vec_dot_q8_0_q8_0_avx512vnni`), bit-exact with the scalar
//! `quantize_row_q8_0_act` / `vec_dot_q8_0_q8_0` (../shared/docs/format.md §4.6.2).
//!
//! Quantizer, per block of 32: `amax` is the lane-wise maximum of `|x|` reduced over the
//! lanes (every order gives the same maximum of non-NaN values); a block holding a NaN takes
//! the scalar's sequential `amax = amax > a ? amax : a`. `d` and `m` as the scalar;
//! `q = cvt_roundps_epi32(x·m, nearest)` (NaN and overflow give `i32::MIN`) narrowed with
//! signed saturation, which is the scalar's `clamp(−128, 127)`.
//!
//! Dot, per block: the scalar's lane `j` (of 8) gets `fma(D, f32(S_j), acc[j])` with
//! `S_j = Σ_{t<4} |qw|·sign(qa, qw)` over elements `4j .. 4j+3` and `D = f32(d_w)·f32(d_a)`.
//! `vpdpbusd(0, |qw|, qa with qw's sign moved onto it)` forms exactly `S_j` in i32 lane `j`:
//! the AVX2 kernel's `maddubs` never saturates on these operands (|pair| ≤ 2·128·128 and
//! ≥ −2·128·128 only when both are −128·(−128 wrapped), which fits), and the sign transfer
//! is a masked `0 − qa` where `qw < 0` (so `−(−128)` wraps to −128 as `sign_epi8` does; where
//! `qw = 0`, `|qw| = 0` zeroes the product as `sign_epi8` would). Two weight rows share a
//! register: row `r` in lanes 0..8, row `r+1` in lanes 8..16, each lane its own FMA chain;
//! the final reduction is the scalar's `(r0 + r2) + (r1 + r3)` per row.

use std::arch::x86_64::*;

use super::Isa;

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
        // SAFETY: `self` proves the AVX-512 features; `x` holds `nb·32` f32 and `out` `nb·34`
        // bytes (asserted above).
        unsafe { quantize_entry(x.as_ptr(), out.as_mut_ptr(), x.len() / 32) }
    }

    /// `out[r][n] = vec_dot_q8_0_q8_0(row r, activation n)` over `nb` blocks.
    ///
    /// Row `r` starts at byte `r·row_bytes` of `w`, activation `n` at byte `n·a_stride` of `a`.
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
        // SAFETY: `self` proves the AVX-512 features; the asserts keep the R weight rows and
        // the N activation rows (`34·nb` bytes each) inside their slices.
        unsafe { dots_entry::<R, N>(w.as_ptr(), row_bytes, a.as_ptr(), a_stride, nb) }
    }
}

/// Entry point of [`Isa::quantize_q8_0_act`].
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `x` must be readable for `32·nb` f32 and
/// `out` writable for `34·nb` bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quantize_entry(x: *const f32, out: *mut u8, nb: usize) {
    // SAFETY: block `b < nb` reads f32 `32b .. 32b+32` of `x` and writes bytes
    // `34b .. 34b+34` of `out` (unaligned).
    unsafe {
        let sign = _mm512_set1_ps(-0.0);
        for b in 0..nb {
            let xb = x.add(32 * b);
            let v = [_mm512_loadu_ps(xb), _mm512_loadu_ps(xb.add(16))];
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[0], v[0]) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[1], v[1]);
            let amax = if nan != 0 {
                // The scalar's sequential maximum (a NaN resets it to the next value).
                let mut amax = 0.0f32;
                for i in 0..32 {
                    let a = (*xb.add(i)).abs();
                    amax = if amax > a { amax } else { a };
                }
                amax
            } else {
                _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v[0]), _mm512_andnot_ps(sign, v[1])))
            };
            let d: f32 = amax / 127.0;
            let ob = out.add(BLOCK_BYTES * b);
            let d16 = half::f16::from_f32(d).to_le_bytes();
            ob.write(d16[0]);
            ob.add(1).write(d16[1]);
            let m: f32 = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mv = _mm512_set1_ps(m);
            for (h, vh) in v.iter().enumerate() {
                let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(*vh, mv));
                _mm_storeu_si128(ob.add(2 + 16 * h).cast(), _mm512_cvtsepi32_epi8(q));
            }
        }
    }
}

/// Entry point of [`Isa::q8_0_dots`].
///
/// # Safety
/// The CPU must support the features of [`Isa`]; `w + r·row_bytes` must be readable for
/// `34·nb` bytes for every `r < R`, and `a + n·a_stride` for every `n < N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dots_entry<const R: usize, const N: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: the preconditions are this function's own, forwarded unchanged.
    unsafe { dots_body::<R, N>(w, row_bytes, a, a_stride, nb) }
}

/// The f16 scales of eight consecutive blocks of `stride` bytes starting at `p`, as f32.
///
/// # Safety
/// F16C must be available and bytes `p + stride·j .. +2` readable for `j < 8`.
#[inline(always)]
unsafe fn scales8(p: *const u8, stride: usize) -> __m256 {
    // SAFETY: the caller guarantees F16C and the eight 2-byte reads (unaligned).
    unsafe {
        let h = |j: usize| p.add(stride * j).cast::<i16>().read_unaligned();
        _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)))
    }
}

/// The integer lanes of one block of a row pair (`qw`: row `2p` low, `2p+1` high) against
/// activation quants `qa` (broadcast to both halves), as f32: `S_j` per lane (module notes).
///
/// # Safety
/// The CPU must support AVX-512 F/BW and VNNI.
#[inline(always)]
unsafe fn lanes(qw: __m512i, qa: __m512i) -> __m512 {
    // SAFETY: the caller guarantees the features; register-only operations.
    unsafe {
        let zero = _mm512_setzero_si512();
        let neg = _mm512_movepi8_mask(qw);
        let sy = _mm512_mask_sub_epi8(qa, neg, zero, qa);
        _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, _mm512_abs_epi8(qw), sy))
    }
}

/// The quants of block `blk` of rows `2p` (low half) and `2p+1` (high half; row `R − 1`
/// again when `2p + 1 = R`).
///
/// # Safety
/// The CPU must support AVX-512 F; both blocks must be readable.
#[inline(always)]
unsafe fn pair_quants<const R: usize>(w: *const u8, row_bytes: usize, p: usize, blk: usize) -> __m512i {
    // SAFETY: the caller guarantees the feature and the two readable 34-byte blocks (the 32
    // quants after the scale are read).
    unsafe {
        let r0 = w.add(2 * p * row_bytes + BLOCK_BYTES * blk + 2);
        let r1 = w.add((2 * p + 1).min(R - 1) * row_bytes + BLOCK_BYTES * blk + 2);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(r0.cast())), _mm256_loadu_si256(r1.cast()))
    }
}

/// The quants of block `blk` of activation `n`, broadcast to both halves.
///
/// # Safety
/// The CPU must support AVX-512 F; the block must be readable.
#[inline(always)]
unsafe fn act_quants(a: *const u8, a_stride: usize, n: usize, blk: usize) -> __m512i {
    // SAFETY: the caller guarantees the feature and the readable block (32 quants read).
    unsafe { _mm512_broadcast_i64x4(_mm256_loadu_si256(a.add(n * a_stride + BLOCK_BYTES * blk + 2).cast())) }
}

/// The f16 at `p` (little-endian, unaligned) as f32.
///
/// # Safety
/// `p` must be readable for 2 bytes.
#[inline(always)]
unsafe fn f16_at_ptr(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees the two readable bytes.
    half::f16::from_bits(unsafe { p.cast::<u16>().read_unaligned() }).to_f32()
}

/// Body of [`Isa::q8_0_dots`]: rows in pairs (a lone last row shares its register with
/// itself and only its low half is used), eight blocks at a time so that their scales are
/// converted and multiplied together (the AVX2 kernel's scheme), then the remaining blocks
/// one by one.
///
/// # Safety
/// As [`dots_entry`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `p` indexes the register pairs and the rows they hold
unsafe fn dots_body<const R: usize, const N: usize>(
    w: *const u8,
    row_bytes: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; N]; R] {
    // SAFETY: block `b < nb` of every weight row (`w + r·row_bytes + 34b`, `r < R`) and of
    // every activation (`a + n·a_stride + 34b`, `n < N`) is readable (unaligned loads);
    // prefetches are hints that never fault.
    unsafe {
        let pairs = R.div_ceil(2);
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        let mut b = 0;
        while b + 8 <= nb {
            let mut da = [_mm256_setzero_ps(); N];
            for (n, d) in da.iter_mut().enumerate() {
                *d = scales8(a.add(n * a_stride + BLOCK_BYTES * b), BLOCK_BYTES);
            }
            if N == 1 {
                // The AVX2 head's prefetch: these 8 blocks (272 bytes, five lines) of the next
                // tile's rows into L1 and of the tile after three more into L2.
                for r in 0..R {
                    for line in 0..5 {
                        let near = w.wrapping_add((R + r) * row_bytes + BLOCK_BYTES * b + 64 * line);
                        _mm_prefetch::<_MM_HINT_T0>(near.cast::<i8>());
                        let far = w.wrapping_add((4 * R + r) * row_bytes + BLOCK_BYTES * b + 64 * line);
                        _mm_prefetch::<_MM_HINT_T1>(far.cast::<i8>());
                    }
                }
            }
            for p in 0..pairs {
                let d0 = scales8(w.add(2 * p * row_bytes + BLOCK_BYTES * b), BLOCK_BYTES);
                let d1 = scales8(w.add((2 * p + 1).min(R - 1) * row_bytes + BLOCK_BYTES * b), BLOCK_BYTES);
                // Per token: [D(row 2p, block b+j) for j in 0..8 | D(row 2p+1, …)].
                let mut dd = [_mm512_setzero_ps(); N];
                for (n, v) in dd.iter_mut().enumerate() {
                    let lo = _mm256_mul_ps(d0, da[n]);
                    let hi = _mm256_mul_ps(d1, da[n]);
                    *v = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                        _mm256_castps_pd(hi),
                    ));
                }
                for j in 0..8 {
                    let qw = pair_quants::<R>(w, row_bytes, p, b + j);
                    // Lane l of the low half takes D[j], of the high half D[8 + j].
                    let idx = _mm512_set_epi32(
                        8 + j as i32,
                        8 + j as i32,
                        8 + j as i32,
                        8 + j as i32,
                        8 + j as i32,
                        8 + j as i32,
                        8 + j as i32,
                        8 + j as i32,
                        j as i32,
                        j as i32,
                        j as i32,
                        j as i32,
                        j as i32,
                        j as i32,
                        j as i32,
                        j as i32,
                    );
                    for n in 0..N {
                        let s = lanes(qw, act_quants(a, a_stride, n, b + j));
                        acc[p][n] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, dd[n]), s, acc[p][n]);
                    }
                }
            }
            b += 8;
        }
        for b in b..nb {
            for p in 0..pairs {
                let qw = pair_quants::<R>(w, row_bytes, p, b);
                let dw0 = f16_at_ptr(w.add(2 * p * row_bytes + BLOCK_BYTES * b));
                let dw1 = f16_at_ptr(w.add((2 * p + 1).min(R - 1) * row_bytes + BLOCK_BYTES * b));
                for n in 0..N {
                    let da = f16_at_ptr(a.add(n * a_stride + BLOCK_BYTES * b));
                    let (d0, d1): (f32, f32) = (dw0 * da, dw1 * da);
                    let dv = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
                    acc[p][n] = _mm512_fmadd_ps(dv, lanes(qw, act_quants(a, a_stride, n, b)), acc[p][n]);
                }
            }
        }
        let mut out = [[0.0f32; N]; R];
        for p in 0..pairs {
            for n in 0..N {
                let mut l = [0.0f32; 16];
                _mm512_storeu_ps(l.as_mut_ptr(), acc[p][n]);
                for h in 0..2 {
                    if 2 * p + h < R {
                        let l = &l[8 * h..8 * h + 8];
                        let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
                        out[2 * p + h][n] = (r[0] + r[2]) + (r[1] + r[3]);
                    }
                }
            }
        }
        out
    }
}
