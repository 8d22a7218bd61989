//! bitnet-graph's AVX2 backend: the scalar reference's numerics (`backend-scalar`), bit for
//! bit, with AVX2 + FMA + F16C kernels chosen at run time.
//!
//! - [`Avx2Backend::new`] returns `None` unless the CPU has AVX2, FMA and F16C (detected
//!   once, cached) and `BITNET_DISABLE_AVX2` is not set (read once). Owning an
//!   [`Avx2Backend`] is the proof that its kernels can run, so its API is safe.
//! - No `-C target-cpu`: the kernels enable their features per function
//!   (`#[target_feature]` on entry points only), so the crate builds for any x86-64 CPU;
//!   on other targets it compiles and [`Avx2Backend::new`] returns `None`.
//! - All `unsafe` code lives in `src/x86_64/` (see that module's docs for the layout).
//! - Where the CPU also has AVX-VNNI (and `BITNET_DISABLE_VNNI` is unset), the I2_S
//!   matmul uses `vpdpbusd` for every token whose activations cannot wrap an i16 lane
//!   (checked per token, `x86_64::i2s`); the result is the same integer, so the same bits.
//!
//! Supported ops (each bit-exact with the scalar backend; see [`Avx2Backend`]): RmsNorm,
//! QuantizeI8, MatMulI2S, MatMulF16, MatMulQ8_0 (Q8_0 and Q4_0 weights), QuantizeQ8K,
//! MatMulTQ (TQ2_0, TQ1_0 and Q6_K weights), Attention, Rope, Add, Mul, Relu, Sqr, Silu,
//! SelectOutputs. Embedding and every other op (Scale) run on the next backend.
#![deny(missing_docs)]
// Off x86-64 the kernels compile out and only `new` (returning `None`) is reachable.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
#![deny(unsafe_code)]

use std::sync::OnceLock;

use graph::backend::{Backend, Kernel, KvLayer, TensorMut, TensorRef};
use graph::{DType, Dim, Op, Result, TensorFact};

#[cfg(target_arch = "x86_64")]
mod attention;
#[cfg(target_arch = "x86_64")]
mod eval;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Whether the CPU has the features this backend needs (AVX2, FMA, F16C). Detected once
/// and cached; ignores `BITNET_DISABLE_AVX2` (see [`Avx2Backend::new`]).
pub fn is_available() -> bool {
    cpu_has_avx2_fma_f16c()
}

/// The cached CPU feature check behind [`is_available`].
fn cpu_has_avx2_fma_f16c() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether the CPU has AVX-VNNI (`avxvnni`), which the I2_S matmul uses when the
/// activations allow it (see [`Avx2Backend`]). Detected once and cached.
fn cpu_has_avx_vnni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avxvnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether `BITNET_DISABLE_VNNI` is set to something other than empty or `0` (read once):
/// [`Avx2Backend::new`] then leaves the AVX-VNNI kernels out.
pub fn vnni_disabled_by_env() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| std::env::var_os("BITNET_DISABLE_VNNI").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Whether `BITNET_DISABLE_AVX2` is set to something other than empty or `0` (read once).
pub fn disabled_by_env() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| std::env::var_os("BITNET_DISABLE_AVX2").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// The AVX2 + FMA + F16C backend.
///
/// Every supported op reproduces the scalar backend bit for bit (stricter than
/// [`Op::tolerance`] asks for the float ops), for any thread count: work is split over
/// output rows (and, for attention, (token, head) pairs) only, never inside a reduction.
///
/// | op | kernel | vs scalar |
/// |---|---|---|
/// | RmsNorm | `rms_norm_f32_avx2`: vector squares, sequential f64 sum | bit-exact |
/// | QuantizeI8 | `quantize_row_i8_avx2` | bit-exact (integers exact) |
/// | MatMulI2S | `vec_dot_i2s_i8_avx2`, rows × tokens tiles (sizes in `kernel_name`); with AVX-VNNI, `vpdpbusd` tiles for tokens whose activations provably cannot wrap an i16 lane | bit-exact, incl. i16 lane wrap |
/// | MatMulF16 | `vec_dot_f16_avx2` tiles on f16(x) (a sequence's only row), `vec_dot_f16_f32_avx2` tiles (sequences with ≥ 2 rows) | bit-exact |
/// | MatMulQ8_0 (Q8_0 weights) | `quantize_row_q8_0_act_avx2` + `vec_dot_q8_0_q8_0_avx2` tiles | bit-exact |
/// | MatMulQ8_0 (Q4_0 weights) | `quantize_row_q8_0_act_avx2` + `vec_dot_q4_0_q8_0_avx2` tiles | bit-exact, incl. the −128 sign quirk |
/// | QuantizeQ8K | `quantize_row_q8_k_avx2` | bit-exact (first-max sign, ties to even, non-finite scales) |
/// | MatMulTQ | `vec_dot_tq2_0_q8_k_avx2` / `vec_dot_tq1_0_q8_k_avx2`, one row × ≤ 4 tokens | bit-exact (exact integer lanes, mul then add, no fma) |
/// | MatMulTQ (Q6_K weights) | `vec_dot_q6_k_q8_k_1xN_avx2` (ggml's `maddubs`/`madd` lanes, fma) | bit-exact |
/// | Attention | f16 KV store, dot16 scores, `softmax_f32_avx2`, dot16 / dotblas values | bit-exact |
/// | Rope | `rope_neox_f32_avx2` / `rope_norm_f32_avx2`: the scalar's angles (same libm calls), 8 NeoX pairs per vector, tokens in parallel | bit-exact (mul, then fma, as the scalar) |
/// | Add, Mul, Relu, Sqr, Silu | `{op}_f32_avx2` | bit-exact |
/// | SelectOutputs (f32) | row gather | exact |
///
/// Other ops and dtypes (Embedding, Scale, SelectOutputs on i32) are not planned: the
/// executor runs them on the next backend (scalar).
#[derive(Clone, Copy, Debug)]
pub struct Avx2Backend {
    #[cfg(target_arch = "x86_64")]
    isa: x86_64::Isa,
    #[cfg(target_arch = "x86_64")]
    vnni: Option<x86_64::Vnni>,
    #[cfg(not(target_arch = "x86_64"))]
    never: std::convert::Infallible,
}

impl Avx2Backend {
    /// The backend, or `None` if this CPU lacks AVX2, FMA or F16C, or
    /// `BITNET_DISABLE_AVX2` is set (both checked once per process).
    pub fn new() -> Option<Avx2Backend> {
        if disabled_by_env() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let vnni = if vnni_disabled_by_env() { None } else { x86_64::Vnni::detect() };
            x86_64::Isa::detect().map(|isa| Avx2Backend { isa, vnni })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// Whether the I2_S matmul may use the AVX-VNNI kernels (the CPU has AVX-VNNI and
    /// `BITNET_DISABLE_VNNI` is unset). They give the same bits as the exact AVX2 kernels:
    /// they run only for tokens whose activations provably cannot wrap an i16 lane.
    pub fn uses_vnni(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.vnni.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self.never {}
        }
    }

    /// The same backend without the AVX-VNNI kernels (for tests and A/B timing).
    pub fn without_vnni(self) -> Avx2Backend {
        #[cfg(target_arch = "x86_64")]
        {
            Avx2Backend { vnni: None, ..self }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self
        }
    }
}

/// The dtypes of a node's inputs.
fn dtypes(inputs: &[&TensorFact]) -> Vec<DType> {
    inputs.iter().map(|f| f.dtype).collect()
}

/// The fixed innermost dimension of an input, if it has one.
fn fixed_last(inputs: &[&TensorFact], i: usize) -> Option<usize> {
    match inputs.get(i)?.shape.last()? {
        Dim::Fixed(n) => Some(n),
        Dim::Sym(_) => None,
    }
}

/// Tile shapes: the kernels use them and [`Backend::plan`] names the kernels after them.
///
/// Measured with `ops-tests` `avx2_kernel_throughput` (2-vCPU Xeon VM, AVX2 path, best of
/// runs): I2_S GEMM, one thread on cached weights, 4×3 → 2×4 tiles: 86 → 100 G MAC/s;
/// F16 dotblas GEMM 8192×2560, T = 128, 2 threads, 2×6 → 3×4: 53 → 72–78 G FMA/s;
/// I2_S GEMV 2 → 4 → 8 rows: no difference beyond the noise (15–17 GB/s); the VNNI GEMV
/// keeps four accumulators per row, so it takes 2 rows (4 spill). VNNI GEMM, pp128 on the
/// 2B shape: 2×4 106 tok/s, 3×4 87, 4×3 87, 2×6 68, 2×8 63.
pub(crate) mod tiles {
    /// I2_S: rows per tile for one token.
    pub const I2S_ROWS_1: usize = 2;
    /// I2_S: rows × tokens per tile for two or more tokens.
    pub const I2S_ROWS: usize = 2;
    /// I2_S: tokens per tile.
    pub const I2S_TOKENS: usize = 4;
    /// F16 dot16 (one token): rows per tile for rows shorter than [`DOT16_LONG_ROW`].
    /// (Tiny model, K = 256: 1 row per tile cost 20 % of its decode, tg64 ~500 → ~400.)
    pub const DOT16_ROWS: usize = 2;
    /// F16 dot16: rows per tile for long rows. One row at a time streams the 2B LM head
    /// (K = 2560) best (`bench --profile`, 2 threads, A/B ×4: 1 row 21.5/21.2/20.9/19.9 ms
    /// per token, 2 rows 22.6/22.9/22.9/21.5).
    pub const DOT16_ROWS_LONG: usize = 1;
    /// F16 dot16, long rows: tokens per tile (the rows of a step's sequences that each have
    /// one row, e.g. a batch of decoding sequences at the LM head, share each weight load).
    pub const DOT16_TOKENS_LONG: usize = 2;
    /// F16 dot16 and Q8_0 / Q4_0 with one token: elements from which a row counts as long.
    pub const DOT16_LONG_ROW: usize = 1024;
    /// F16 dotblas (two or more tokens): rows per tile.
    pub const DOTBLAS_ROWS: usize = 3;
    /// F16 dotblas: tokens per tile.
    pub const DOTBLAS_TOKENS: usize = 4;
    /// Q8_0 / Q4_0: rows per tile.
    pub const Q8_0_ROWS: usize = 4;
    /// Q8_0 / Q4_0: rows per tile for one token and long rows (K ≥ [`DOT16_LONG_ROW`]; the
    /// `--lm-head q8` decode head: 2 rows stream better than 4, `bench --lm-head q8
    /// --profile`, 2B shape, 2 threads, A/B ×3: 13.0/13.8/13.5 vs 15.7/15.3/14.9 ms per
    /// token). Shorter rows keep [`Q8_0_ROWS`] (the TQ models' Q4_0 head, K = 256, lost
    /// 10 % of its decode with 2).
    pub const Q8_0_ROWS_1: usize = 2;
    /// Q8_0 / Q4_0: tokens per tile.
    pub const Q8_0_TOKENS: usize = 2;
    /// TQ2_0 / TQ1_0: tokens per call (one weight row; its codes are unpacked once per
    /// block and shared by the tokens).
    pub const TQ_TOKENS: usize = 4;
}

/// A kernel from a closure.
#[cfg(target_arch = "x86_64")]
fn kernel(
    name: impl Into<String>,
    f: impl Fn(&[TensorRef<'_>], &mut TensorMut<'_>, Option<&mut KvLayer<'_>>) -> Result<()> + Send + Sync + 'static,
) -> Option<Kernel> {
    Some(Kernel::new(name, f))
}

impl Backend for Avx2Backend {
    fn name(&self) -> &'static str {
        "avx2"
    }

    /// One arm per kernel: the input types it takes, its name (with its tile shapes) and the
    /// function that runs. Embedding, Scale and the i32 form of SelectOutputs are left to
    /// the next backend.
    #[cfg(target_arch = "x86_64")]
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel> {
        use eval::*;
        use tiles::*;
        use x86_64::elementwise::Elementwise;
        use DType::*;
        if inputs.len() != op.arity() {
            return None;
        }
        let (isa, vnni) = (self.isa, self.vnni);
        let d = dtypes(inputs);
        let elementwise = |name: &str, kind: Elementwise, arity: usize| {
            let ok = d.iter().all(|&t| t == F32) && d.len() == arity;
            let op_name = op.name();
            ok.then(|| Kernel::new(format!("{name}_f32_avx2"), move |i, o, _| eval::elementwise(isa, op_name, kind, i, o)))
        };
        match op {
            &Op::RmsNorm { eps } if d == [F32, F32] => kernel("rms_norm_f32_avx2", move |i, o, _| rms_norm(isa, "RmsNorm", i, o, eps)),
            Op::QuantizeI8 if d == [F32] => kernel("quantize_row_i8_avx2", move |i, o, _| quantize_i8(isa, "QuantizeI8", i, o)),
            Op::MatMulI2S if d == [I2S, Q8Tok] && fixed_last(inputs, 0).is_some_and(|k| k % 128 == 0) => {
                let v = if vnni.is_some() { "vnni" } else { "avx2" };
                kernel(
                    format!("vec_dot_i2s_i8_{I2S_ROWS_1}x1_{v} (T=1) | vec_dot_i2s_i8_{I2S_ROWS}x{I2S_TOKENS}_{v}"),
                    move |i, o, _| matmul_i2s(isa, vnni, i, o),
                )
            }
            Op::MatMulF16 if d == [F16, F32, I32] => kernel(
                format!(
                    "vec_dot_f16_{DOT16_ROWS}x1_avx2 (1 row per sequence; {DOT16_ROWS_LONG}x{DOT16_TOKENS_LONG} from K = {DOT16_LONG_ROW}) | vec_dot_f16_f32_{DOTBLAS_ROWS}x{DOTBLAS_TOKENS}_avx2"
                ),
                move |i, o, _| matmul_f16(isa, i, o),
            ),
            Op::MatMulQ8_0 if (d == [Q8_0, F32] || d == [Q4_0, F32]) && fixed_last(inputs, 0).is_some_and(|k| k % 32 == 0) => {
                let w = d[0];
                kernel(
                    format!("vec_dot_{w}_q8_0_{Q8_0_ROWS_1}x1_avx2 (T=1, K ≥ {DOT16_LONG_ROW}) | vec_dot_{w}_q8_0_{Q8_0_ROWS}x{Q8_0_TOKENS}_avx2"),
                    move |i, o, _| matmul_q8_0(isa, i, o),
                )
            }
            Op::QuantizeQ8K if d == [F32] && fixed_last(inputs, 0).is_some_and(|k| k % 256 == 0) => {
                kernel("quantize_row_q8_k_avx2", move |i, o, _| quantize_q8_k(isa, "QuantizeQ8K", i, o))
            }
            Op::MatMulTQ if (d == [TQ2_0, Q8K] || d == [TQ1_0, Q8K] || d == [Q6K, Q8K]) && fixed_last(inputs, 0).is_some_and(|k| k % 256 == 0) => {
                kernel(format!("vec_dot_{}_q8_k_1x{TQ_TOKENS}_avx2", d[0]), move |i, o, _| matmul_tq(isa, i, o))
            }
            &Op::Attention { n_head, n_head_kv, head_dim, scale, .. } if d == [F32, F32, F32, I32, I32] => {
                kernel("attn_f16kv_avx2", move |i, o, kv| {
                    let kv = kv.ok_or_else(|| fail("Attention", "no KV cache"))?;
                    attention::attention(isa, i, o, kv, n_head, n_head_kv, head_dim, scale)
                })
            }
            &Op::Rope { n_rot, freq_base, style } if d == [F32, I32] => {
                let name = if style == graph::RopeStyle::Neox { "rope_neox_f32_avx2" } else { "rope_norm_f32_avx2" };
                kernel(name, move |i, o, _| rope(isa, "Rope", i, o, n_rot, freq_base, style))
            }
            Op::Add => elementwise("add", Elementwise::Add, 2),
            Op::Mul => elementwise("mul", Elementwise::Mul, 2),
            Op::Relu => elementwise("relu", Elementwise::Relu, 1),
            Op::Sqr => elementwise("sqr", Elementwise::Sqr, 1),
            Op::Silu => elementwise("silu", Elementwise::Silu, 1),
            Op::SelectOutputs if d == [F32, I32] => kernel("get_rows_f32_avx2", |i, o, _| select_rows(i, o)),
            // Embedding, Scale, sources, views, other input types, and any op added later:
            // the next backend.
            _ => None,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn plan(&self, _op: &Op, _inputs: &[&TensorFact]) -> Option<Kernel> {
        match self.never {}
    }
}
