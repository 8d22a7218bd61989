//! bitnet-graph's AVX-512 backend: the scalar reference's numerics (`backend-scalar`), bit
//! for bit, with AVX-512 F/BW/VL/VNNI kernels (and AMX-INT8 tiles for prompt-sized I2_S
//! products) chosen at run time, for the ops where they pay; every other op is left to the
//! next backend of the executor's list (AVX2, then scalar).
//!
//! - [`Avx512Backend::new`] returns `None` unless the CPU has AVX2, FMA, F16C and AVX-512
//!   F, BW, VL and VNNI (detected once, cached) and `BITNET_DISABLE_AVX512` is not set
//!   (read once). Owning an [`Avx512Backend`] is the proof that its kernels can run, so its
//!   API is safe.
//! - AMX-INT8 is used where CPUID reports AMX-TILE and AMX-INT8, Linux grants the process
//!   the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, asked once) and
//!   `BITNET_DISABLE_AMX` is not set (read once).
//! - No `-C target-cpu`: kernels enable their features per function (`#[target_feature]`
//!   on entry points only); on other targets the crate compiles and `new` returns `None`.
//! - All `unsafe` code lives in `src/x86_64/`.
//!
//! Where the kernels differ from the AVX2 backend's, and why, is in [`Avx512Backend`]'s
//! table; the work split and the token-tile walk are the shared driver of
//! [`graph::tiling`].
#![deny(missing_docs)]
// Off x86-64 the kernels compile out and only `new` (returning `None`) is reachable.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
#![deny(unsafe_code)]

use std::sync::OnceLock;

use graph::backend::{Backend, Kernel};
#[cfg(target_arch = "x86_64")]
use graph::DType;
#[cfg(target_arch = "x86_64")]
use graph::Dim;
use graph::{Op, TensorFact};

#[cfg(target_arch = "x86_64")]
mod attention;
#[cfg(target_arch = "x86_64")]
mod eval;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Whether the CPU has the features this backend needs (AVX2, FMA, F16C, AVX-512 F, BW, VL,
/// VNNI). Detected once and cached; ignores `BITNET_DISABLE_AVX512`.
pub fn is_available() -> bool {
    cpu_has_avx512()
}

/// The cached CPU feature check behind [`is_available`].
fn cpu_has_avx512() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether AMX-INT8 can be used: the CPU reports it and the OS granted the tile state (asked
/// once, the first time; never asked when `BITNET_DISABLE_AMX` is set).
fn amx_permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            !amx_disabled_by_env() && x86_64::cpuid_has_amx_int8() && x86_64::request_amx_permission()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Reads a `BITNET_DISABLE_*` knob: set to something other than empty or `0`.
fn knob(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether `BITNET_DISABLE_AVX512` is set to something other than empty or `0` (read once).
pub fn disabled_by_env() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| knob("BITNET_DISABLE_AVX512"))
}

/// Whether `BITNET_DISABLE_AMX` is set to something other than empty or `0` (read once):
/// the backend then never asks for the tile state and uses its VNNI GEMM for prompts.
pub fn amx_disabled_by_env() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| knob("BITNET_DISABLE_AMX"))
}

/// The AVX-512 backend.
///
/// Every op it plans reproduces the scalar backend bit for bit, for any thread count (work
/// is split over output rows only, by the shared driver of [`graph::tiling`]).
///
/// | op | kernel | vs scalar |
/// |---|---|---|
/// | RmsNorm | `rms_norm_f32_8rows_avx512`: eight rows' sequential f64 sums side by side (one register lane per row) | bit-exact |
/// | QuantizeI8 | `quantize_row_i8_avx512` | bit-exact (integers exact) |
/// | MatMulI2S, one token | `vec_dot_i2s_i8_16x1_avx512vnni` on the `i2s_r16` weight layout (16 rows interleaved, prepared at load): `vpdpbusd` with one i32 lane per row, for tokens whose i16 lanes provably cannot wrap; the exact `maddubs` kernel otherwise | bit-exact, incl. i16 lane wrap |
/// | MatMulI2S, prompts | `gemm_i2s_i8_32x32_amx` (AMX-INT8 `tdpbsud`, 2 × 2 tiles, activations straight from the step's rows) where the CPU has it, else 512-bit VNNI tiles of 16 rows × 4 tokens; the exact kernel for tokens that could wrap | bit-exact |
/// | MatMulF16 | `vec_dot_f16_avx512` (dot16: the scalar's four 8-lane accumulators as two 16-lane registers) for a sequence's only row, `vec_dot_f16_f32_avx512` (dotblas: two rows per register) otherwise | bit-exact |
/// | Attention | `attn_f16kv_gqa_avx512`: f16 KV store, dot16 scores, `softmax_f32_avx512`, dot16 / dotblas values; the query heads of one KV head share each key and value row load | bit-exact |
/// | MatMulQ8_0 (Q8_0 weights) | `quantize_row_q8_0_act_avx512` + `vec_dot_q8_0_q8_0_avx512vnni` (`vpdpbusd`, two rows per register) | bit-exact |
///
/// Other ops are not planned: the executor runs them on the next backend.
#[derive(Clone, Copy, Debug)]
pub struct Avx512Backend {
    #[cfg(target_arch = "x86_64")]
    isa: x86_64::Isa,
    #[cfg(target_arch = "x86_64")]
    amx: Option<x86_64::Amx>,
    #[cfg(not(target_arch = "x86_64"))]
    never: std::convert::Infallible,
}

impl Avx512Backend {
    /// The backend, or `None` if this CPU lacks one of the features of [`is_available`] or
    /// `BITNET_DISABLE_AVX512` is set (both checked once per process).
    pub fn new() -> Option<Avx512Backend> {
        if disabled_by_env() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let isa = x86_64::Isa::detect()?;
            let amx = if amx_permitted() { x86_64::Amx::detect() } else { None };
            Some(Avx512Backend { isa, amx })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// Whether prompt-sized I2_S products use AMX-INT8 tiles.
    pub fn uses_amx(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.amx.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self.never {}
        }
    }

    /// The same backend without AMX (its 512-bit VNNI GEMM instead; for tests and A/B
    /// timing).
    pub fn without_amx(self) -> Avx512Backend {
        #[cfg(target_arch = "x86_64")]
        {
            Avx512Backend { amx: None, ..self }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self
        }
    }
}

/// The fixed innermost dimension of an input, if it has one.
#[cfg(target_arch = "x86_64")]
fn fixed_last(inputs: &[&TensorFact], i: usize) -> Option<usize> {
    match inputs.get(i)?.shape.last()? {
        Dim::Fixed(n) => Some(n),
        Dim::Sym(_) => None,
    }
}

/// Tile shapes: the kernels use them and [`Backend::plan`] names the kernels after them.
pub(crate) mod tiles {
    /// I2_S, VNNI tiles: tokens per tile (rows: one 16-row block of the `i2s_r16` layout).
    pub const I2S_TOKENS: usize = 4;
    /// I2_S: tokens from which a step takes the AMX GEMM (when the CPU has it).
    pub const AMX_MIN_TOKENS: usize = 16;
    /// F16 and Q8_0: elements from which a row counts as long (the heads of the 2B-4T
    /// shape, K = 2560; the shared models' K = 256 rows are short).
    pub const DOT16_LONG_ROW: usize = 1024;
    /// F16 dot16, long rows: rows × tokens per tile (one row streams, up to two decoding
    /// sequences share each weight load).
    pub const DOT16_ROWS_LONG: usize = 1;
    /// F16 dot16, long rows: tokens per tile.
    pub const DOT16_TOKENS_LONG: usize = 2;
    /// F16 dot16, short rows: rows per tile (one token).
    pub const DOT16_ROWS: usize = 2;
    /// F16 dotblas: rows (two per register) × tokens per tile.
    pub const DOTBLAS_ROWS: usize = 4;
    /// F16 dotblas: tokens per tile.
    pub const DOTBLAS_TOKENS: usize = 4;
    /// Q8_0: rows per tile for one token and long rows (one register pair streams).
    pub const Q8_0_ROWS_1: usize = 2;
    /// Q8_0: rows × tokens per tile otherwise.
    pub const Q8_0_ROWS: usize = 4;
    /// Q8_0: tokens per tile.
    pub const Q8_0_TOKENS: usize = 2;
}

impl Backend for Avx512Backend {
    fn name(&self) -> &'static str {
        "avx512"
    }

    /// One arm per kernel: the input types it takes, its name (with its tile shapes) and the
    /// function that runs. Every other op goes to the next backend.
    #[cfg(target_arch = "x86_64")]
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel> {
        use tiles::*;
        use DType::*;
        if inputs.len() != op.arity() {
            return None;
        }
        let (isa, amx) = (self.isa, self.amx);
        let d: Vec<DType> = inputs.iter().map(|f| f.dtype).collect();
        match op {
            &Op::RmsNorm { eps } if d == [F32, F32] => {
                Some(Kernel::new("rms_norm_f32_8rows_avx512", move |i, o, _| eval::rms_norm(isa, i, o, eps)))
            }
            Op::QuantizeI8 if d == [F32] => Some(Kernel::new("quantize_row_i8_avx512", move |i, o, _| eval::quantize_i8(isa, i, o))),
            Op::MatMulI2S if d == [I2S, Q8Tok] && fixed_last(inputs, 0).is_some_and(|k| k % 128 == 0) => {
                let prompt = match amx {
                    Some(_) => format!("gemm_i2s_i8_32x32_amx (T ≥ {AMX_MIN_TOKENS}) | "),
                    None => String::new(),
                };
                Some(
                    Kernel::new(
                        format!("vec_dot_i2s_i8_16x1_avx512vnni (T=1) | {prompt}vec_dot_i2s_i8_16x{I2S_TOKENS}_avx512vnni; i2s_r16 layout"),
                        move |i, o, _| eval::matmul_i2s(isa, amx, i, o),
                    )
                    .with_prepared_weight(eval::i2s_r16_prep()),
                )
            }
            Op::MatMulF16 if d == [F16, F32, I32] => Some(Kernel::new(
                format!(
                    "vec_dot_f16_{DOT16_ROWS}x1_avx512 (1 row per sequence; {DOT16_ROWS_LONG}x{DOT16_TOKENS_LONG} from K = {DOT16_LONG_ROW}) | vec_dot_f16_f32_{DOTBLAS_ROWS}x{DOTBLAS_TOKENS}_avx512"
                ),
                move |i, o, _| eval::matmul_f16(isa, i, o),
            )),
            Op::MatMulQ8_0 if d == [Q8_0, F32] && fixed_last(inputs, 0).is_some_and(|k| k % 32 == 0) => Some(Kernel::new(
                format!("vec_dot_q8_0_q8_0_{Q8_0_ROWS_1}x1_avx512vnni (T=1, K ≥ {DOT16_LONG_ROW}) | vec_dot_q8_0_q8_0_{Q8_0_ROWS}x{Q8_0_TOKENS}_avx512vnni"),
                move |i, o, _| eval::matmul_q8_0(isa, i, o),
            )),
            &Op::Attention { n_head, n_head_kv, head_dim, scale, .. } if d == [F32, F32, F32, I32, I32] => {
                Some(Kernel::new("attn_f16kv_gqa_avx512", move |i, o, kv| {
                    let kv = kv.ok_or_else(|| eval::fail("Attention", "no KV cache"))?;
                    attention::attention(isa, i, o, kv, n_head, n_head_kv, head_dim, scale)
                }))
            }
            // Every other op, dtype or shape: the next backend.
            _ => None,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn plan(&self, _op: &Op, _inputs: &[&TensorFact]) -> Option<Kernel> {
        match self.never {}
    }
}
