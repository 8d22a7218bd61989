//! The AVX-512 backend against the scalar reference, kernel by kernel and on the shared
//! models, bit for bit.
//!
//! The registry suite (`tests/backends.rs`) already runs every op kind on it; these cases
//! go where its kernels differ from the AVX2 backend's: I2_S rows with an odd number of
//! groups (the half pair), K with one and two lane-wrap chunks, token counts around the
//! AMX block (16, 32) and the VNNI tiles (4), row counts around the AMX block, activations
//! that wrap i16 lanes, that cannot, and steps that mix both (the no-wrap gate sends the
//! former to the exact kernel), each with and without AMX. Outputs are compared bit for bit
//! inside guard sentinels (`ops_tests::cases::OpCase::run`). CPUs without AVX-512
//! F/BW/VL/VNNI (or with `BITNET_DISABLE_AVX512=1`) skip with a printed line. Run with
//! `--release`.

use std::sync::Arc;

use backend_avx512::Avx512Backend;
use backend_scalar::ScalarBackend;
use graph::{Backend, DType, Dim, Op, Shape, TensorFact};
use ops_tests::{kernel_suite, open_model};

/// The backend as detected and, where it uses AMX, also without it; empty (with a printed
/// line) where the CPU lacks AVX-512.
fn backends() -> Vec<Avx512Backend> {
    let Some(b) = Avx512Backend::new() else {
        println!("SKIPPED: no AVX-512 F/BW/VL/VNNI on this CPU, or BITNET_DISABLE_AVX512 is set");
        return Vec::new();
    };
    if b.uses_amx() {
        vec![b, b.without_amx()]
    } else {
        println!("note: no AMX-INT8 here (or BITNET_DISABLE_AMX is set): the AMX GEMM is not tested");
        vec![b]
    }
}

fn label(b: &Avx512Backend) -> &'static str {
    if b.uses_amx() {
        "avx512+amx"
    } else {
        "avx512"
    }
}

#[test]
fn matmul_i2s_bit_exact() {
    for b in backends() {
        kernel_suite::matmul_i2s_bit_exact(&b, label(&b));
    }
}

#[test]
fn matmul_i2s_lane_wrap_matters() {
    for b in backends() {
        kernel_suite::matmul_i2s_lane_wrap_matters(&b, label(&b));
    }
}

#[test]
fn matmul_f16_bit_exact() {
    if let Some(b) = backends().into_iter().next() {
        kernel_suite::matmul_f16_bit_exact(&b, label(&b));
    }
}

#[test]
fn matmul_q8_0_bit_exact() {
    if let Some(b) = backends().into_iter().next() {
        kernel_suite::matmul_q8_0_bit_exact(&b, label(&b));
    }
}

#[test]
fn rms_norm_and_quantize_bit_exact() {
    if let Some(b) = backends().into_iter().next() {
        kernel_suite::rms_norm_and_quantize_bit_exact(&b, label(&b));
    }
}

#[test]
fn attention_bit_exact() {
    if let Some(b) = backends().into_iter().next() {
        kernel_suite::attention_bit_exact(&b, label(&b));
    }
}
#[test]
fn plans_and_kernel_names() {
    let Some(b) = backends().into_iter().next() else { return };
    let f = |dt: DType, dims: &[usize]| TensorFact::new(dt, Shape::new(dims.iter().map(|&d| Dim::Fixed(d))));
    let name = |op: &Op, ins: &[&TensorFact]| b.plan(op, ins).map(|k| k.name().to_string());
    let (w, x) = (f(DType::I2S, &[8, 256]), f(DType::Q8Tok, &[1, 256]));
    let i2s = name(&Op::MatMulI2S, &[&w, &x]).expect("I2_S planned");
    assert!(i2s.starts_with("vec_dot_i2s_i8_") && i2s.contains("avx512vnni"), "{i2s}");
    assert_eq!(i2s.contains("_amx"), b.uses_amx(), "{i2s}");
    assert!(name(&Op::MatMulI2S, &[&f(DType::I2S, &[8, 200]), &f(DType::Q8Tok, &[1, 200])]).is_none(), "K % 128 != 0");
    assert!(name(&Op::MatMulI2S, &[&f(DType::F16, &[8, 256]), &x]).is_none(), "wrong weight dtype");
    let pos = f(DType::I32, &[1]);
    assert!(name(&Op::Embedding, &[&f(DType::F16, &[10, 8]), &pos]).is_none(), "Embedding goes to the next backend");
    assert_eq!(b.name(), "avx512");
}

/// An executor of a shared model on `backends` (one sequence of `n_ctx` positions).
fn executor(name: &str, backends: Vec<Arc<dyn Backend>>, n_ctx: usize) -> graph::Executor {
    let file = open_model(name);
    let g = gguf::lower(&file).expect("lowering").graph;
    let w = Arc::new(gguf::lower::ModelWeights::new(file));
    graph::Executor::standalone(g, w, &backends, graph::ExecConfig::solo(n_ctx, n_ctx)).expect("executor")
}

#[test]
fn shared_models_logits_bit_exact() {
    // Every shared model, a 40-token prompt in one step (prompt-sized products: the AMX
    // GEMM where the CPU has it) and token by token, on avx512 → avx2 → scalar against
    // scalar alone: whatever the avx512 backend runs must not change a bit.
    let list = backends();
    if list.is_empty() {
        return;
    }
    for name in ["tiny-i2_s.gguf", "b1-spm-i2_s.gguf", "llama-tern-i2_s.gguf", "b158-spm-tq1_0.gguf", "b158-spm-tq2_0.gguf"] {
        let n_vocab = gguf::lower(&open_model(name)).expect("lowering").hparams.n_vocab;
        let toks: Vec<u32> = (0..40u32).map(|i| (1 + i * 7919) % n_vocab as u32).collect();
        let mut exs = executor(name, vec![Arc::new(ScalarBackend::new())], 64);
        let want = exs.forward(&toks, 0, toks.len()).unwrap().to_vec();
        let mut steps = Vec::new();
        exs.clear_kv();
        for (pos, &tok) in toks.iter().take(4).enumerate() {
            steps.push(exs.forward(&[tok], pos, 1).unwrap().to_vec());
        }
        for b in &list {
            let mut chain: Vec<Arc<dyn Backend>> = vec![Arc::new(*b)];
            chain.extend(backend_avx2::Avx2Backend::new().map(|a| Arc::new(a) as Arc<dyn Backend>));
            chain.push(Arc::new(ScalarBackend::new()));
            let mut ex = executor(name, chain, 64);
            println!("{name} on {}: {}", label(b), ex.program().plan_summary());
            let got = ex.forward(&toks, 0, toks.len()).unwrap().to_vec();
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} on {}: batched logits", label(b));
            ex.clear_kv();
            for (pos, &tok) in toks.iter().take(4).enumerate() {
                let got = ex.forward(&[tok], pos, 1).unwrap().to_vec();
                assert!(
                    steps[pos].iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} on {}: token-by-token logits at {pos}",
                    label(b)
                );
            }
        }
    }
}

// The generic per-op suite of the backend without AMX (the registry's suite in
// `tests/backends.rs` runs it as detected).
ops_tests::op_suite!(
    avx512_no_amx,
    Avx512Backend::new().map(|b| Arc::new(b.without_amx()) as Arc<dyn Backend>).into_iter().collect::<Vec<_>>()
);
