//! I2_S × int8 integer dot products, a tile of `R` weight rows × `N` tokens per call, on the
//! file layout, bit-exact with scalar `vec_dot_i2s_i8` including its 16-bit lane wrap
//! (../shared/docs/format.md §2.2, §4.2).
//!
//! Per 128-element group (32 code bytes, two 16-byte vectors) and sub-block `s` in 0..4, the
//! code of element `32s + b` (b = byte 0..31) is `(byte b >> (6 − 2s)) & 3` (`ushl` by a
//! negative count, `and`): a u8 in 0..3, the same bits as a non-negative i8.
//!
//! ## The exact kernel (`vec_dot_i2s_i8_RxN_neon`)
//! The scalar's i16 lane `j` (element bytes `2j`, `2j+1`) adds, with wrapping i16 adds, the
//! products `c·q` of those two bytes over every sub-block of every group of a chunk of ≤ 32
//! groups (a pair never saturates: `|pair| ≤ 2·3·128`). Its value is therefore the sum of
//! its products modulo 2¹⁶, read as i16, in whatever order they are added. The kernel keeps
//! one i16 lane per *byte* (four `int16x8_t`, bytes 0..7, 8..15, 16..23, 24..31) and adds
//! each product with `smlal`/`smlal2` (i8 × i8 → i16, wrapping add); at the chunk's end
//! `addp` adds byte lanes `2j` and `2j+1` (wrapping, i16): lane `j`, equal to the scalar's
//! modulo 2¹⁶, hence equal. `saddlp` widens the lanes exactly into i32 and the chunk total
//! is added to the row total with wrapping i32 adds (the scalar's `total`, mod 2³²).
//!
//! ## The `sdot` kernel (`vec_dot_i2s_i8_RxN_neon_dotprod`)
//! `sdot` adds four i8 × i8 products into each i32 lane: the exact integer `Σ c·q` (mod
//! 2³²). It equals the scalar only where no i16 lane can wrap, which
//! [`Isa::i2s_cannot_wrap`] proves from the activations alone (per lane and chunk
//! `Σ|q| ≤` [`graph::quant::I2S_NO_WRAP_ABS_SUM`]; the proof is that constant's). Tokens
//! that fail the test take the exact kernel.
//!
//! Both kernels unpack each row's codes once per sub-block and share them between the `N`
//! tokens, and share each activation vector between the `R` rows.

use std::arch::aarch64::*;

use super::{sdot, Isa};

/// Elements per I2_S group.
pub(crate) const GROUP: usize = 128;
/// Groups accumulated in i16 lanes before widening (bitnet.cpp's chunk of 32 groups).
const GROUPS_PER_CHUNK: usize = 32;

impl Isa {
    /// `out[r][n] = vec_dot_i2s_i8(row r, token n)` for an `R × N` tile, with `sdot` when
    /// `sdot` is set and this `Isa` has it (the caller then guarantees
    /// [`Isa::i2s_cannot_wrap`] for every token of the tile), else with the exact kernel.
    ///
    /// Row `r`'s `k/4` code bytes start at `codes[r·row_bytes]`; token `n`'s `k` int8
    /// activations start at `xq[n·x_stride]` (q8_tok rows: `x_stride = k + 8`).
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or a row or token reaches past its slice.
    pub(crate) fn i2s_dots<const R: usize, const N: usize>(
        self,
        sdot: bool,
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
        let (c, x, g) = (codes.as_ptr(), xq.as_ptr(), k / GROUP);
        if sdot && self.dotprod {
            // SAFETY: `self.dotprod` proves the CPU has `sdot`; the asserts above keep the R
            // code rows (`k/4` bytes, `row_bytes` apart) inside `codes` and the N activation
            // rows (`k` bytes, `x_stride` apart) inside `xq`.
            unsafe { sdot_entry::<R, N>(c, row_bytes, x, x_stride, g) }
        } else {
            // SAFETY: NEON is the aarch64 baseline; the slices are checked as above.
            unsafe { exact_body::<R, N>(c, row_bytes, x, x_stride, g) }
        }
    }

    /// Whether `vec_dot_i2s_i8` of this q8 row (its first `k` bytes) with any I2_S codes can
    /// never wrap an i16 lane ([`graph::quant::I2S_NO_WRAP_ABS_SUM`]), so that the `sdot`
    /// kernel gives its exact result.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or `xq` is shorter than `k`.
    pub(crate) fn i2s_cannot_wrap(self, xq: &[u8], k: usize) -> bool {
        assert!(k.is_multiple_of(GROUP) && k <= xq.len(), "i2s_cannot_wrap: k = {k}, {} bytes", xq.len());
        // SAFETY: NEON is the baseline; group `g < k/128` reads bytes `128g .. 128g+128`,
        // inside the `k` bytes the assert checked.
        unsafe {
            let x = xq.as_ptr();
            let n_groups = k / GROUP;
            let mut g0 = 0;
            while g0 < n_groups {
                let g1 = (g0 + GROUPS_PER_CHUNK).min(n_groups);
                // u16 lane j of `a0` (bytes 2j, 2j+1 of 0..15) and `a1` (16..31): ≤ 128 terms
                // of |q[e]| + |q[e+1]| ≤ 256, so ≤ 32768, no wrap.
                let (mut a0, mut a1) = (vdupq_n_u16(0), vdupq_n_u16(0));
                for off in (GROUP * g0..GROUP * g1).step_by(32) {
                    // |−128| = −128 = 0x80, which reads as 128 unsigned.
                    let q0 = vreinterpretq_u8_s8(vabsq_s8(vld1q_s8(x.add(off).cast())));
                    let q1 = vreinterpretq_u8_s8(vabsq_s8(vld1q_s8(x.add(off + 16).cast())));
                    a0 = vpadalq_u8(a0, q0);
                    a1 = vpadalq_u8(a1, q1);
                }
                if vmaxvq_u16(vmaxq_u16(a0, a1)) > graph::quant::I2S_NO_WRAP_ABS_SUM {
                    return false;
                }
                g0 = g1;
            }
            true
        }
    }
}

/// The codes of sub-block `s` of 16 code bytes: `(c >> (6 − 2s)) & 3`.
///
/// # Safety
/// None beyond NEON.
#[inline(always)]
unsafe fn unpack(c: uint8x16_t, shift: int8x16_t) -> int8x16_t {
    // SAFETY: register-only NEON operations.
    unsafe { vreinterpretq_s8_u8(vandq_u8(vshlq_u8(c, shift), vdupq_n_u8(3))) }
}

/// The exact kernel (module notes).
///
/// # Safety
/// `codes + r·row_bytes` must be readable for `32·n_groups` bytes for every `r < R`, and
/// `xq + n·x_stride` for `128·n_groups` bytes for every `n < N`.
#[inline(always)]
unsafe fn exact_body<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xq: *const u8,
    x_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: group `g < n_groups` reads code bytes `32g .. 32g+32` of each row and
    // activations `128g .. 128g+128` of each token, inside the caller's ranges.
    unsafe {
        let mut total = [[0i32; N]; R];
        let mut g0 = 0;
        while g0 < n_groups {
            let g1 = (g0 + GROUPS_PER_CHUNK).min(n_groups);
            let mut acc = [[[vdupq_n_s16(0); 4]; N]; R];
            for g in g0..g1 {
                let mut c = [[vdupq_n_u8(0); 2]; R];
                for (r, cr) in c.iter_mut().enumerate() {
                    let p = codes.add(r * row_bytes + 32 * g);
                    *cr = [vld1q_u8(p), vld1q_u8(p.add(16))];
                }
                for s in 0..4 {
                    let shift = vdupq_n_s8(2 * s as i8 - 6);
                    let mut u = [[vdupq_n_s8(0); 2]; R];
                    for r in 0..R {
                        u[r] = [unpack(c[r][0], shift), unpack(c[r][1], shift)];
                    }
                    for n in 0..N {
                        let p = xq.add(n * x_stride + GROUP * g + 32 * s);
                        let (q0, q1) = (vld1q_s8(p.cast()), vld1q_s8(p.add(16).cast()));
                        for r in 0..R {
                            let a = &mut acc[r][n];
                            a[0] = vmlal_s8(a[0], vget_low_s8(u[r][0]), vget_low_s8(q0));
                            a[1] = vmlal_high_s8(a[1], u[r][0], q0);
                            a[2] = vmlal_s8(a[2], vget_low_s8(u[r][1]), vget_low_s8(q1));
                            a[3] = vmlal_high_s8(a[3], u[r][1], q1);
                        }
                    }
                }
            }
            for r in 0..R {
                for n in 0..N {
                    let a = &acc[r][n];
                    // Lanes j = 0..7 and 8..15 of the scalar (wrapping i16 pair adds).
                    let (l0, l1) = (vpaddq_s16(a[0], a[1]), vpaddq_s16(a[2], a[3]));
                    let wide = vaddq_s32(vpaddlq_s16(l0), vpaddlq_s16(l1));
                    total[r][n] = total[r][n].wrapping_add(vaddvq_s32(wide));
                }
            }
            g0 = g1;
        }
        total
    }
}

/// The `sdot` kernel (module notes): the exact `Σ c·q`, mod 2³².
///
/// # Safety
/// The CPU must support `dotprod`; the ranges are those of [`exact_body`].
#[target_feature(enable = "dotprod")]
unsafe fn sdot_entry<const R: usize, const N: usize>(
    codes: *const u8,
    row_bytes: usize,
    xq: *const u8,
    x_stride: usize,
    n_groups: usize,
) -> [[i32; N]; R] {
    // SAFETY: as in `exact_body`; `sdot` is available by this function's contract.
    unsafe {
        let mut acc = [[vdupq_n_s32(0); N]; R];
        for g in 0..n_groups {
            let mut c = [[vdupq_n_u8(0); 2]; R];
            for (r, cr) in c.iter_mut().enumerate() {
                let p = codes.add(r * row_bytes + 32 * g);
                *cr = [vld1q_u8(p), vld1q_u8(p.add(16))];
            }
            for s in 0..4 {
                let shift = vdupq_n_s8(2 * s as i8 - 6);
                let mut u = [[vdupq_n_s8(0); 2]; R];
                for r in 0..R {
                    u[r] = [unpack(c[r][0], shift), unpack(c[r][1], shift)];
                }
                for n in 0..N {
                    let p = xq.add(n * x_stride + GROUP * g + 32 * s);
                    let (q0, q1) = (vld1q_s8(p.cast()), vld1q_s8(p.add(16).cast()));
                    for r in 0..R {
                        acc[r][n] = sdot(sdot(acc[r][n], u[r][0], q0), u[r][1], q1);
                    }
                }
            }
        }
        let mut out = [[0i32; N]; R];
        for r in 0..R {
            for n in 0..N {
                out[r][n] = vaddvq_s32(acc[r][n]);
            }
        }
        out
    }
}
