//! The NEON backend against the scalar reference, kernel by kernel, bit for bit, with its
//! `sdot` kernels (where the CPU has dotprod) and without them (plain NEON), through the
//! shared suites of `ops_tests::kernel_suite`: I2_S rows of 1 to 54 groups, activations
//! that wrap i16 lanes, that cannot, and steps that mix both (the no-wrap gate sends the
//! former to the exact kernel); F16 tails; Q8_0 extreme values (NaN blocks quantize to −128,
//! which takes the exact AVX2-step kernel); attention across the 32-position boundary.
//! Off aarch64 (or with `BITNET_DISABLE_NEON=1`) the tests print `SKIPPED` and pass; under
//! qemu, `.ci/neon.sh` runs them as `QEMU_CPU=max` and `QEMU_CPU=cortex-a72`. Run with
//! `--release`.

use std::sync::Arc;

use backend_neon::NeonBackend;
use graph::{Backend, DType, Dim, Op, Shape, TensorFact};
use ops_tests::kernel_suite;

/// The backend as detected and, where it uses `sdot`, also without it.
fn backends() -> Vec<(NeonBackend, &'static str)> {
    let Some(b) = NeonBackend::new() else {
        println!("SKIPPED: not an aarch64 CPU with NEON, or BITNET_DISABLE_NEON is set");
        return Vec::new();
    };
    if b.uses_dotprod() {
        vec![(b, "neon+dotprod"), (b.without_dotprod(), "neon")]
    } else {
        println!("note: no dotprod here (or BITNET_DISABLE_DOTPROD is set): the sdot kernels are not tested");
        vec![(b, "neon")]
    }
}

#[test]
fn matmul_i2s_bit_exact() {
    for (b, label) in backends() {
        kernel_suite::matmul_i2s_bit_exact(&b, label);
    }
}

#[test]
fn matmul_i2s_lane_wrap_matters() {
    for (b, label) in backends() {
        kernel_suite::matmul_i2s_lane_wrap_matters(&b, label);
    }
}

#[test]
fn matmul_f16_bit_exact() {
    if let Some((b, label)) = backends().into_iter().next() {
        kernel_suite::matmul_f16_bit_exact(&b, label);
    }
}

#[test]
fn matmul_q8_0_bit_exact() {
    for (b, label) in backends() {
        kernel_suite::matmul_q8_0_bit_exact(&b, label);
    }
}

#[test]
fn quantize_bit_exact() {
    if let Some((b, label)) = backends().into_iter().next() {
        kernel_suite::rms_norm_and_quantize_bit_exact(&b, label);
    }
}

#[test]
fn attention_bit_exact() {
    if let Some((b, label)) = backends().into_iter().next() {
        kernel_suite::attention_bit_exact(&b, label);
    }
}

#[test]
fn plans_and_kernel_names() {
    let Some((b, _)) = backends().into_iter().next() else { return };
    let f = |dt: DType, dims: &[usize]| TensorFact::new(dt, Shape::new(dims.iter().map(|&d| Dim::Fixed(d))));
    let name = |b: &NeonBackend, op: &Op, ins: &[&TensorFact]| b.plan(op, ins).map(|k| k.name().to_string());
    let (w, x) = (f(DType::I2S, &[8, 256]), f(DType::Q8Tok, &[1, 256]));
    let i2s = name(&b, &Op::MatMulI2S, &[&w, &x]).expect("I2_S planned");
    assert!(i2s.starts_with("vec_dot_i2s_i8_") && i2s.contains("_neon"), "{i2s}");
    assert_eq!(i2s.contains("_dotprod"), b.uses_dotprod(), "{i2s}");
    let plain = name(&b.without_dotprod(), &Op::MatMulI2S, &[&w, &x]).expect("I2_S planned");
    assert!(!plain.contains("dotprod"), "{plain}");
    assert!(name(&b, &Op::MatMulI2S, &[&f(DType::I2S, &[8, 200]), &f(DType::Q8Tok, &[1, 200])]).is_none(), "K % 128 != 0");
    assert!(name(&b, &Op::MatMulI2S, &[&f(DType::F16, &[8, 256]), &x]).is_none(), "wrong weight dtype");
    let pos = f(DType::I32, &[1]);
    assert!(name(&b, &Op::Embedding, &[&f(DType::F16, &[10, 8]), &pos]).is_none(), "Embedding goes to the next backend");
    assert_eq!(b.name(), "neon");
}

// The generic per-op suite of the backend without `sdot` (the registry's suite in
// `tests/backends.rs` runs it as detected).
ops_tests::op_suite!(
    neon_no_dotprod,
    NeonBackend::new().map(|b| Arc::new(b.without_dotprod()) as Arc<dyn Backend>).into_iter().collect::<Vec<_>>()
);
