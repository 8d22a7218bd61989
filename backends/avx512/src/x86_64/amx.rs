//! The I2_S GEMM on AMX-INT8 tiles (`gemm_i2s_i8_32x32_amx`): 32 tokens × 32 weight rows
//! per call, as 2 × 2 tiles of 16 × 16 i32 accumulated by `tdpbsud` (signed × unsigned
//! bytes).
//!
//! - **A tiles** (signed bytes, 16 rows × 64): the activations, 16 tokens × 64 consecutive
//!   elements, loaded straight from the step's rows (their natural element order).
//! - **B tiles** (unsigned bytes, 16 rows × 64): the codes of 16 weight rows for the same
//!   64 elements, row `i` of the tile holding at bytes `4r .. 4r+4` weight row `r`'s codes
//!   of elements `4i .. 4i+4`. With the `i2s_r16` layout (`super::i2s` module notes) that is
//!   chunk `(g, d)` shifted by `6 − 2s` and masked: tile `t` of group `g` (elements
//!   `128g + 64t .. +64`) is, row `8(s − 2t) + d`, sub-block `s ∈ {2t, 2t+1}` of word `d`.
//!   [`Amx::unpack_b`] writes every tile of a 16-row block once per call; all token blocks
//!   reuse them.
//! - `tdpbsud` adds, per (token, row) and tile step, sixteen sums of four i8 × u8 products
//!   into an i32 accumulator: the exact integer Σ c·q (|Σ| ≤ 3·128·k, far from 2³¹). That is
//!   the scalar's `vec_dot_i2s_i8` for a token whose i16 lanes cannot wrap
//!   (`Isa::i2s_cannot_wrap`); the caller computes the other tokens with the exact kernel.
//! - The results are tokens × rows, the output's own orientation: each token's row of 32
//!   results is contiguous for the epilogue.
//!
//! Each call configures the tiles, computes and releases them (`ldtilecfg` … `tilerelease`)
//! inside one `asm!` block, so no tile state lives between blocks of Rust code.

use std::arch::asm;
use std::arch::x86_64::*;

use super::i2s::{unpack4, GROUP, GROUP_BYTES, ROWS};
use super::Amx;

/// Tokens and weight rows per call (2 × 2 tiles of 16).
pub(crate) const BLOCK: usize = 32;
/// Bytes of K per tile step (one A row, one B row).
const KSTEP: usize = 64;
/// Bytes of one B tile (16 rows × 64).
const B_TILE_BYTES: usize = 16 * KSTEP;

/// The `ldtilecfg` operand: palette 1, tiles 0..8 of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Bytes of the unpacked B tiles of one 16-row block for rows of `k` elements.
pub(crate) fn b_block_bytes(k: usize) -> usize {
    k / KSTEP * B_TILE_BYTES
}

impl Amx {
    /// Unpacks one 16-row block of the `i2s_r16` layout (`block`, `k/4 · 16` bytes) into its
    /// B tiles (`out`, [`b_block_bytes`]`(k)` bytes): tile `2g + t` at `1024·(2g + t)`.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128 or the slices are too short.
    pub(crate) fn unpack_b(self, block: &[u8], k: usize, out: &mut [u8]) {
        assert!(k.is_multiple_of(GROUP), "unpack_b: k = {k}");
        assert!(block.len() >= k / 4 * ROWS && out.len() == b_block_bytes(k), "unpack_b: slices for k = {k}");
        // SAFETY: `self` proves the AVX-512 features; the asserts keep the `k/128` groups of
        // 512 bytes read inside `block` and the `k/64` tiles of 1024 bytes written inside
        // `out`.
        unsafe { unpack_entry(block.as_ptr(), k / GROUP, out.as_mut_ptr()) }
    }

    /// `c[n][r] = Σ_e x_n[e] · code_r[e]` for 32 tokens and 32 rows: `x` holds the tokens'
    /// activations (`k` bytes each, `x_stride` apart), `b0` and `b1` the B tiles of two
    /// 16-row blocks ([`Amx::unpack_b`]).
    ///
    /// # Panics
    /// If the slices do not have the sizes of `k`.
    pub(crate) fn block_dots(self, x: &[u8], x_stride: usize, b0: &[u8], b1: &[u8], k: usize) -> [[i32; BLOCK]; BLOCK] {
        assert!(k.is_multiple_of(GROUP) && k > 0 && x_stride >= k, "block_dots: k = {k}, stride {x_stride}");
        assert!(x.len() >= (BLOCK - 1) * x_stride + k, "block_dots: {} bytes of activations", x.len());
        assert!(b0.len() == b_block_bytes(k) && b1.len() == b_block_bytes(k), "block_dots: B tiles");
        let mut c = [[0i32; BLOCK]; BLOCK];
        // SAFETY: `self` proves AMX-TILE/AMX-INT8 and the tile-state permission. The loop
        // runs `k/64` steps; step `j` loads 16 rows of 64 bytes at `x + 64j` and
        // `x + 16·x_stride + 64j` (stride `x_stride`: inside the 32 rows of `x`, asserted)
        // and 16 rows of 64 at `b + 1024j` (stride 64: inside each block's tiles). The four
        // stores write 16 rows of 64 bytes at `c`, `c + 64`, `c + 2048`, `c + 2112` with
        // stride 128: the four 16 × 16 quarters of the 32 × 32 i32 array `c`. The tiles are
        // configured, used and released inside this block (their registers are clobbers).
        unsafe {
            asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbsud tmm0, tmm4, tmm6",
                "tdpbsud tmm1, tmm4, tmm7",
                "tdpbsud tmm2, tmm5, tmm6",
                "tdpbsud tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c} + {sc}*1], tmm0",
                "tilestored [{c} + {sc}*1 + 64], tmm1",
                "tilestored [{c} + {sc}*1 + 2048], tmm2",
                "tilestored [{c} + {sc}*1 + 2112], tmm3",
                "tilerelease",
                cfg = in(reg) &CONFIG,
                a0 = inout(reg) x.as_ptr() => _,
                a1 = inout(reg) x.as_ptr().add(16 * x_stride) => _,
                b0 = inout(reg) b0.as_ptr() => _,
                b1 = inout(reg) b1.as_ptr() => _,
                n = inout(reg) k / KSTEP => _,
                sa = in(reg) x_stride,
                sb = in(reg) KSTEP,
                c = in(reg) c.as_mut_ptr(),
                sc = in(reg) 4 * BLOCK,
                out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
                out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
                options(nostack),
            );
        }
        c
    }
}

/// Entry point of [`Amx::unpack_b`] (AVX-512 code).
///
/// # Safety
/// The CPU must support the features of `super::Isa`; `block` must be readable for
/// `512·n_groups` bytes and `out` writable for `2048·n_groups`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_entry(block: *const u8, n_groups: usize, out: *mut u8) {
    // SAFETY: group `g` reads bytes `512g .. 512g+512` of `block` and writes bytes
    // `2048g .. 2048g+2048` of `out` (its two tiles).
    unsafe {
        for g in 0..n_groups {
            let (src, dst) = (block.add(GROUP_BYTES * g), out.add(2 * B_TILE_BYTES * g));
            for d in 0..8 {
                let codes = unpack4(_mm512_loadu_si512(src.add(64 * d).cast()));
                // Sub-block s → tile s/2, row 8·(s % 2) + d.
                for (s, c) in codes.iter().enumerate() {
                    _mm512_storeu_si512(dst.add(B_TILE_BYTES * (s / 2) + KSTEP * (8 * (s % 2) + d)).cast(), *c);
                }
            }
        }
    }
}
