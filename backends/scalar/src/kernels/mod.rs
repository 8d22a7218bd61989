//! Scalar reference kernels: the exact f32 arithmetic of bitnet.cpp (../shared/docs/format.md §4).
//!
//! Every function here reproduces one bitnet.cpp / ggml kernel bit for bit, written as
//! plain loops so that the summation order and every rounding step can be read off the
//! code. Each function's documentation states
//!
//! - the order in which values are combined (lanes, chunks, reductions), and
//! - where results are rounded (f32, f64, f16, integer wrap or saturation).
//!
//! Compilers must not be allowed to reassociate or contract these expressions: Rust never
//! does either for floats, and fused multiply-adds are written explicitly with
//! [`f32::mul_add`], so the code below means exactly what it says.
//!
//! Families:
//! - RMSNorm: [`norm`].
//! - Per-token int8 activation quantizer and the I2_S integer dot product: [`i2s`].
//! - Rotary position embedding (NEOX and NORM pairings): [`rope`].
//! - ggml's vector `exp` and the softmax built on it: [`softmax`].
//! - The two F16 dot products (`dot16`, `dotblas`) and f16 rounding: [`f16dot`].
//! - The Q8_0 activation quantizer and the Q8_0 × Q8_0 block dot product: [`q8_0`].
//! - The Q4_0 × Q8_0 block dot product (Q4_0 output head): [`q4_0`].
//! - The Q8_K activation quantizer and the TQ2_0 / TQ1_0 × Q8_K dot products: [`tq`].
//! - The Q6_K × Q8_K block dot product (Q6_K output head): [`q6k`].

pub mod f16dot;
pub mod i2s;
pub mod norm;
pub mod q4_0;
pub mod q6k;
pub mod q8_0;
pub mod rope;
pub mod softmax;
pub mod tq;

pub use f16dot::{f16_round, vec_dot_f16, vec_dot_f16_f32};
pub use i2s::{i2s_output, quantize_row_i8, vec_dot_i2s_i8};
pub use norm::rms_norm_f32;
pub use q4_0::{vec_dot_q4_0_q8_0, Q4_0_BLOCK, Q4_0_BLOCK_BYTES};
pub use q6k::vec_dot_q6_k_q8_k;
pub use q8_0::{quantize_row_q8_0_act, vec_dot_q8_0_q8_0, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
pub use rope::rope_f32;
pub use softmax::{softmax_f32, vexp_f32};
pub use tq::{
    quantize_row_q8_k, vec_dot_tq1_0_q8_k, vec_dot_tq2_0_q8_k, Q8K_BLOCK, Q8K_BLOCK_BYTES, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};
