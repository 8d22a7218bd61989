//! bitnet-graph's NEON backend for aarch64 (ARM CPUs: Apple M-series under Linux, Graviton,
//! Ampere, Raspberry Pi 5, RK3588, phones): the scalar reference's numerics
//! (`backend-scalar`), bit for bit, with NEON kernels and `sdot` where the CPU has the
//! dot-product extension, for the ops where they pay; every other op is left to the next
//! backend of the executor's list (scalar).
//!
//! - [`NeonBackend::new`] returns `None` off aarch64, without NEON, or when
//!   `BITNET_DISABLE_NEON` is set (read once). `dotprod` is detected at run time
//!   (`is_aarch64_feature_detected!`) and not used when `BITNET_DISABLE_DOTPROD` is set.
//! - No `-C target-cpu`: NEON is the aarch64 baseline; the `sdot` kernels enable `dotprod`
//!   per function (`#[target_feature]`) and issue `sdot` with `asm!` (its intrinsic is not
//!   stable).
//! - All `unsafe` code lives in `src/aarch64/`; on other targets the crate compiles to a
//!   backend that is never available.
#![deny(missing_docs)]
#![deny(unsafe_code)]

use std::sync::OnceLock;

use graph::backend::{Backend, Kernel};
#[cfg(target_arch = "aarch64")]
use graph::DType;
#[cfg(target_arch = "aarch64")]
use graph::Dim;
use graph::{Op, TensorFact};

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod aarch64;
#[cfg(target_arch = "aarch64")]
mod attention;
#[cfg(target_arch = "aarch64")]
mod eval;

/// Reads a `BITNET_DISABLE_*` knob: set to something other than empty or `0`.
fn knob(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether `BITNET_DISABLE_NEON` is set to something other than empty or `0` (read once).
pub fn disabled_by_env() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| knob("BITNET_DISABLE_NEON"))
}

/// Whether `BITNET_DISABLE_DOTPROD` is set to something other than empty or `0` (read
/// once): the backend then uses its plain NEON I2_S kernels.
pub fn dotprod_disabled_by_env() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| knob("BITNET_DISABLE_DOTPROD"))
}

/// Tile shapes: the kernels use them and [`Backend::plan`] names the kernels after them.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) mod tiles {
    /// I2_S, one token: rows per tile.
    pub const I2S_ROWS_1: usize = 4;
    /// I2_S, prompts: rows per tile.
    pub const I2S_ROWS: usize = 2;
    /// I2_S, prompts: tokens per tile.
    pub const I2S_TOKENS: usize = 4;
    /// F16: rows per tile (one token).
    pub const F16_ROWS: usize = 2;
    /// Q8_0 / Q4_0: rows per tile.
    pub const Q8_0_ROWS: usize = 2;
    /// Q8_0 / Q4_0: tokens per tile.
    pub const Q8_0_TOKENS: usize = 4;
}

/// The NEON backend.
///
/// Every op it plans reproduces the scalar backend bit for bit, for any thread count (work
/// is split over output rows only, by the shared driver of [`graph::tiling`]).
///
/// | op | kernel | vs scalar |
/// |---|---|---|
/// | QuantizeI8 | `quantize_row_i8_neon` | bit-exact (integers exact) |
/// | MatMulI2S | `vec_dot_i2s_i8_RxN_neon_dotprod` (`sdot`) for tokens whose i16 lanes provably cannot wrap, where the CPU has dotprod; else `vec_dot_i2s_i8_RxN_neon` (`smlal` into i16 lanes, the scalar's wrap reproduced) | bit-exact, incl. i16 lane wrap |
/// | MatMulF16 | `vec_dot_f16_2x1_neon` (dot16: the scalar's four 8-lane accumulators as eight 4-lane registers) for a sequence's only row, `vec_dot_f16_f32_2x1_neon` (dotblas) otherwise | bit-exact |
/// | MatMulQ8_0 (Q8_0, Q4_0 weights) | `quantize_row_q8_0_act_neon` + `vec_dot_{q8_0,q4_0}_q8_0_neon` (`sdot` for activation rows without −128, where the CPU has dotprod; else AVX2's `maddubs` steps reproduced) | bit-exact |
/// | Attention | `attn_f16kv_neon`: f16 KV store (`fcvtn`), dot16 scores, `softmax_f32_neon` (ggml's `vexp`, lane for lane), dot16 / dotblas values | bit-exact |
///
/// Other ops are not planned: the executor runs them on the next backend (scalar).
#[derive(Clone, Copy, Debug)]
pub struct NeonBackend {
    #[cfg(target_arch = "aarch64")]
    isa: aarch64::Isa,
    #[cfg(not(target_arch = "aarch64"))]
    never: std::convert::Infallible,
}

impl NeonBackend {
    /// The backend, or `None` off aarch64, without NEON, or with `BITNET_DISABLE_NEON` set.
    pub fn new() -> Option<NeonBackend> {
        if disabled_by_env() {
            return None;
        }
        #[cfg(target_arch = "aarch64")]
        {
            Some(NeonBackend { isa: aarch64::Isa::detect(dotprod_disabled_by_env())? })
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            None
        }
    }

    /// Whether the I2_S kernels use `sdot` (the CPU has dotprod and
    /// `BITNET_DISABLE_DOTPROD` is not set).
    pub fn uses_dotprod(&self) -> bool {
        #[cfg(target_arch = "aarch64")]
        {
            self.isa.dotprod()
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            match self.never {}
        }
    }

    /// The same backend without `sdot` (its plain NEON I2_S kernels; for tests and A/B
    /// timing).
    pub fn without_dotprod(self) -> NeonBackend {
        #[cfg(target_arch = "aarch64")]
        {
            NeonBackend { isa: self.isa.without_dotprod() }
        }
        #[cfg(not(target_arch = "aarch64"))]
        {
            self
        }
    }
}

/// The fixed innermost dimension of an input, if it has one.
#[cfg(target_arch = "aarch64")]
fn fixed_last(inputs: &[&TensorFact], i: usize) -> Option<usize> {
    match inputs.get(i)?.shape.last()? {
        Dim::Fixed(n) => Some(n),
        Dim::Sym(_) => None,
    }
}

impl Backend for NeonBackend {
    fn name(&self) -> &'static str {
        "neon"
    }

    /// One arm per kernel: the input types it takes, its name (with its tile shapes) and the
    /// function that runs. Every other op goes to the next backend.
    #[cfg(target_arch = "aarch64")]
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel> {
        use tiles::*;
        use DType::*;
        if inputs.len() != op.arity() {
            return None;
        }
        let isa = self.isa;
        let d: Vec<DType> = inputs.iter().map(|f| f.dtype).collect();
        match op {
            Op::QuantizeI8 if d == [F32] => {
                Some(Kernel::new("quantize_row_i8_neon", move |i, o, _| eval::quantize_i8(isa, i, o)))
            }
            Op::MatMulI2S if d == [I2S, Q8Tok] && fixed_last(inputs, 0).is_some_and(|k| k % 128 == 0) => {
                let exact = format!("vec_dot_i2s_i8_{I2S_ROWS_1}x1_neon (T=1) | vec_dot_i2s_i8_{I2S_ROWS}x{I2S_TOKENS}_neon");
                let name = match isa.dotprod() {
                    true => format!(
                        "vec_dot_i2s_i8_{I2S_ROWS_1}x1_neon_dotprod (T=1) | vec_dot_i2s_i8_{I2S_ROWS}x{I2S_TOKENS}_neon_dotprod; {exact} for tokens that could wrap"
                    ),
                    false => exact,
                };
                Some(Kernel::new(name, move |i, o, _| eval::matmul_i2s(isa, i, o)))
            }
            Op::MatMulF16 if d == [F16, F32, I32] => Some(Kernel::new(
                format!("vec_dot_f16_{F16_ROWS}x1_neon (1 row per sequence) | vec_dot_f16_f32_{F16_ROWS}x1_neon"),
                move |i, o, _| eval::matmul_f16(isa, i, o),
            )),
            Op::MatMulQ8_0 if matches!(d[..], [Q8_0 | Q4_0, F32]) && fixed_last(inputs, 0).is_some_and(|k| k % 32 == 0) => {
                let w = if d[0] == Q8_0 { "q8_0" } else { "q4_0" };
                let sdot = if isa.dotprod() { "_dotprod" } else { "" };
                Some(Kernel::new(
                    format!("quantize_row_q8_0_act_neon + vec_dot_{w}_q8_0_{Q8_0_ROWS}x{Q8_0_TOKENS}_neon{sdot}"),
                    move |i, o, _| eval::matmul_q8_0(isa, i, o),
                ))
            }
            &Op::Attention { n_head, n_head_kv, head_dim, scale, .. } if d == [F32, F32, F32, I32, I32] => {
                Some(Kernel::new("attn_f16kv_neon", move |i, o, kv| {
                    let kv = kv.ok_or_else(|| eval::fail("Attention", "no KV cache"))?;
                    attention::attention(isa, i, o, kv, n_head, n_head_kv, head_dim, scale)
                }))
            }
            // Every other op, dtype or shape: the next backend.
            _ => None,
        }
    }

    #[cfg(not(target_arch = "aarch64"))]
    fn plan(&self, _op: &Op, _inputs: &[&TensorFact]) -> Option<Kernel> {
        match self.never {}
    }
}
