//! The I2_S GEMM on AMX-INT8 tiles (`gemm_i2s_i8_32x32_amx`): a block of 32 weight rows ×
//! 32 tokens per call, as 2 × 2 tiles of 16 × 16 i32 accumulated by `tdpbusd`.
//!
//! - **A tiles** (unsigned bytes, 16 rows × 64): the weight codes, one byte per code (0..3),
//!   unpacked per block of 32 rows into a scratch buffer ([`Amx::unpack_rows`]) in the
//!   *pair order* of the AVX-512 kernels (`super::i2s` module notes): 64-byte step `4p + s`
//!   of a row holds sub-block `s` of groups `2p` and `2p+1`.
//! - **B tiles** (signed bytes, 16 rows × 64): the activations in the same K order
//!   (`super::i2s::permute_acts`), repacked as `tdpbusd` wants them ([`pack_b`]): row `i`
//!   of the tile of step `kb` holds, for each of 16 tokens, the four activations
//!   `64·kb + 4i .. +4`.
//! - `tdpbusd` adds, per (row, token) and step, sixteen sums of four u8 × i8 products into
//!   an i32 accumulator: the exact integer Σ c·q (far from 2³¹: |Σ| ≤ 3·128·k). That is
//!   the scalar's `vec_dot_i2s_i8` for a token whose i16 lanes cannot wrap
//!   (`Isa::i2s_cannot_wrap`); the caller computes the other tokens with the exact kernel.
//!   The order of K inside the sum is free (integer addition), so any permutation shared by
//!   A and B gives the same result.
//!
//! Rows past the matrix are unpacked as zero codes and tokens past the step are zero
//! activations; their results are never stored. Each call configures the tiles, computes
//! and releases them (`ldtilecfg` … `tilerelease`) inside one `asm!` block, so no tile state
//! lives between blocks of Rust code.

use std::arch::asm;
use std::arch::x86_64::*;

use super::i2s::{load_pair, permuted_len, GROUP, PAIR};
use super::Amx;

/// Weight rows and tokens per call (2 × 2 tiles of 16).
pub(crate) const BLOCK: usize = 32;
/// Rows (and columns) of one tile.
const TILE: usize = 16;
/// Bytes of K per tile step (one A row, one B row).
const KSTEP: usize = 64;
/// Bytes of one packed B tile (16 rows × 64).
pub(crate) const B_TILE_BYTES: usize = TILE * KSTEP;

/// The `ldtilecfg` operand: palette 1, every tile 16 rows × 64 bytes.
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

/// Bytes of the packed B tiles of one block of 16 tokens for rows of `k` activations.
pub(crate) fn b_block_bytes(k: usize) -> usize {
    permuted_len(k) / KSTEP * B_TILE_BYTES
}

impl Amx {
    /// Packs `t` permuted activation rows (`xp[n·xp_stride ..]`, [`permuted_len`]`(k)` bytes
    /// each) into B tiles: `ceil(t/16)` blocks of [`b_block_bytes`]`(k)`, block `j` holding
    /// tokens `16j .. 16j+16` (zero past `t`), step `kb`'s tile at `kb·1024`, where row `i`
    /// holds token `n`'s bytes `64·kb + 4i .. +4` at `4n`: a 16 × 16 transpose of 4-byte
    /// words per block and step.
    ///
    /// # Panics
    /// If a row reaches past `xp` or `out` does not have `ceil(t/16)` blocks.
    pub(crate) fn pack_b(self, xp: &[u8], xp_stride: usize, t: usize, k: usize, out: &mut [u8]) {
        let kp = permuted_len(k);
        let block = b_block_bytes(k);
        assert!(t == 0 || (t - 1) * xp_stride + kp <= xp.len(), "pack_b: {t} rows exceed the activations");
        assert_eq!(out.len(), t.div_ceil(TILE) * block, "pack_b: output length");
        use rayon::prelude::*;
        out.par_chunks_exact_mut(block).enumerate().for_each(|(j, blk)| {
            let n = (t - TILE * j).min(TILE);
            // SAFETY: `self` proves the AVX-512 features; the block's `n ≤ 16` rows start at
            // `xp + (16j + i)·xp_stride` and hold `kp` bytes each (asserted above: the last
            // token's row ends inside `xp`), and `blk` holds `kp/64` tiles of 1024 bytes.
            unsafe { pack_entry(xp.as_ptr().add(TILE * j * xp_stride), xp_stride, n, kp / KSTEP, blk.as_mut_ptr()) }
        });
    }

    /// Unpacks `n_rows ≤ 32` rows of I2_S codes (`codes[r·row_bytes ..]`, `k/4` bytes each)
    /// into `u`: 32 rows of [`permuted_len`]`(k)` bytes, one code per byte in pair order,
    /// rows `n_rows ..` zero.
    ///
    /// # Panics
    /// If `k` is not a multiple of 128, a row reaches past `codes`, or `u` is not
    /// `32 · permuted_len(k)` long.
    pub(crate) fn unpack_rows(self, codes: &[u8], row_bytes: usize, n_rows: usize, k: usize, u: &mut [u8]) {
        let kp = permuted_len(k);
        assert!(k.is_multiple_of(GROUP) && n_rows <= BLOCK, "unpack_rows: k = {k}, {n_rows} rows");
        assert!(n_rows == 0 || (n_rows - 1) * row_bytes + k / 4 <= codes.len(), "unpack_rows: rows exceed the codes");
        assert_eq!(u.len(), BLOCK * kp, "unpack_rows: scratch length");
        u[n_rows * kp..].fill(0);
        // SAFETY: `self` proves the AVX-512 features; the asserts keep every row read (`k/4`
        // bytes, `row_bytes` apart) inside `codes` and every row written (`kp` bytes, `kp`
        // apart, `n_rows ≤ 32`) inside `u`.
        unsafe { unpack_entry(codes.as_ptr(), row_bytes, n_rows, k / GROUP, u.as_mut_ptr()) }
    }

    /// `c[r][n] = Σ_k u[r][k] · b[n][k]` over `kp = permuted_len(k)` for a block of 32
    /// unpacked rows (`u`, [`Amx::unpack_rows`]) and 32 tokens: `b0` and `b1` are two
    /// packed blocks of 16 tokens ([`pack_b`]).
    ///
    /// # Panics
    /// If the slices do not have the sizes of `k`.
    pub(crate) fn block_dots(self, u: &[u8], b0: &[u8], b1: &[u8], k: usize) -> [[i32; BLOCK]; BLOCK] {
        let kp = permuted_len(k);
        assert!(kp >= KSTEP && u.len() == BLOCK * kp, "block_dots: scratch of {} bytes for k = {k}", u.len());
        assert!(b0.len() == b_block_bytes(k) && b1.len() == b_block_bytes(k), "block_dots: B blocks");
        let mut c = [[0i32; BLOCK]; BLOCK];
        // SAFETY: `self` proves AMX-TILE/AMX-INT8 and the tile-state permission. The loop
        // runs `kp/64` steps; step `kb` loads 16 rows of 64 bytes at `u + kb·64` and
        // `u + 16·kp + kb·64` (stride `kp`: inside `u`, 32 rows of `kp`) and 16 rows of 64 at
        // `b + kb·1024` (stride 64: inside each B block of `kp/64 · 1024` bytes). The four
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
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
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
                a0 = inout(reg) u.as_ptr() => _,
                a1 = inout(reg) u.as_ptr().add(TILE * kp) => _,
                b0 = inout(reg) b0.as_ptr() => _,
                b1 = inout(reg) b1.as_ptr() => _,
                n = inout(reg) kp / KSTEP => _,
                sa = in(reg) kp,
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

/// Entry point of [`Amx::pack_b`] for one block of `n ≤ 16` tokens.
///
/// # Safety
/// The CPU must support the features of `super::Isa`; `xp + i·xp_stride` must be readable
/// for `64·steps` bytes for every `i < n`, and `out` writable for `1024·steps` bytes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack_entry(xp: *const u8, xp_stride: usize, n: usize, steps: usize, out: *mut u8) {
    // SAFETY: row `i < n` is read at bytes `64·kb .. 64·kb+64` (kb < steps) of its range;
    // rows `n..16` are zero registers; tile `kb` is written at `out + 1024·kb`, 16 rows of 64.
    unsafe {
        for kb in 0..steps {
            let mut rows = [_mm512_setzero_si512(); TILE];
            for (i, r) in rows.iter_mut().enumerate().take(n) {
                *r = _mm512_loadu_si512(xp.add(i * xp_stride + KSTEP * kb).cast());
            }
            let cols = super::transpose16(rows);
            for (i, c) in cols.iter().enumerate() {
                _mm512_storeu_si512(out.add(B_TILE_BYTES * kb + KSTEP * i).cast(), *c);
            }
        }
    }
}

/// Entry point of [`Amx::unpack_rows`] (AVX-512 code).
///
/// # Safety
/// The CPU must support the features of `super::Isa`; `codes + r·row_bytes` must be readable
/// for `32·n_groups` bytes and `u + r·permuted_len(128·n_groups)` writable for that many
/// bytes, for every `r < n_rows`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_entry(codes: *const u8, row_bytes: usize, n_rows: usize, n_groups: usize, u: *mut u8) {
    // SAFETY: row `r < n_rows`, pair `p` (`2p < n_groups`) reads through `load_pair` inside
    // the row's `32·n_groups` bytes and writes bytes `256p .. 256p+256` of the row's
    // `permuted_len` bytes of `u`.
    unsafe {
        let mask = _mm512_set1_epi8(3);
        let kp = n_groups.div_ceil(2) * PAIR;
        for r in 0..n_rows {
            let row = codes.add(r * row_bytes);
            let dst = u.add(r * kp);
            for p in 0..n_groups.div_ceil(2) {
                let raw = load_pair(row, p, n_groups);
                let d = dst.add(PAIR * p);
                _mm512_storeu_si512(d.cast(), _mm512_and_si512(_mm512_srli_epi16::<6>(raw), mask));
                _mm512_storeu_si512(d.add(64).cast(), _mm512_and_si512(_mm512_srli_epi16::<4>(raw), mask));
                _mm512_storeu_si512(d.add(128).cast(), _mm512_and_si512(_mm512_srli_epi16::<2>(raw), mask));
                _mm512_storeu_si512(d.add(192).cast(), _mm512_and_si512(raw, mask));
            }
        }
    }
}
