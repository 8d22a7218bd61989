//! The op-by-op cross-check itself: it passes when the candidate is the reference, and a
//! deliberately broken kernel is caught by both the check (naming the node) and the per-op
//! suite (naming the op).

use std::sync::Arc;

use backend_scalar::ScalarBackend;
use gguf::lower::ModelWeights;
use graph::check::{cross_check, Mode, Pass, Status};
use graph::{Backend, ExecConfig, Kernel, Op, OpKind, TensorFact, WeightSource};
use ops_tests::*;

/// Scalar, except that the I2_S matmul applies the weight scale twice.
#[derive(Debug)]
struct ScaleTwice;

impl Backend for ScaleTwice {
    fn name(&self) -> &'static str {
        "scale-twice"
    }
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel> {
        let k = ScalarBackend.plan(op, inputs)?;
        if !matches!(op, Op::MatMulI2S) {
            return Some(k);
        }
        Some(Kernel::new("vec_dot_i2s_i8_scaled_twice", move |i, o, kv| {
            k.run(i, o, kv)?;
            let (m, kk) = (i[0].dims[0], i[0].dims[1]);
            let scale = graph::quant::i2s_scale(i[0].bytes()?, m * kk).unwrap();
            for y in o.f32()? {
                *y *= scale;
            }
            Ok(())
        }))
    }
}

fn weights(file: gguf::GgufFile) -> Arc<dyn WeightSource> {
    Arc::new(ModelWeights::new(file))
}

fn scalar() -> Vec<Arc<dyn Backend>> {
    vec![Arc::new(ScalarBackend)]
}

fn passes() -> Vec<Pass> {
    let p = vec![128000, 791, 6864, 315, 9822, 374];
    vec![Pass { tokens: p.clone(), pos0: 0, n_outputs: p.len() }, Pass { tokens: vec![103570], pos0: 6, n_outputs: 1 }]
}

#[test]
fn reference_against_itself_passes_in_both_modes() {
    let file = open_model("tiny-i2_s.gguf");
    let g = gguf::lower(&file).unwrap().graph;
    let w = weights(file);
    for mode in [Mode::Isolated, Mode::Cumulative] {
        let r = cross_check(&g, w.clone(), &scalar(), Arc::new(ScalarBackend), &passes(), mode, ExecConfig::solo(64, 8)).unwrap();
        println!("{mode:?}: {}", r.summary());
        assert_eq!(r.failed(), 0, "{}", r.table());
        assert_eq!(r.skipped(), 0);
        assert_eq!(r.passed(), g.iter().filter(|(_, n)| n.op.kind().has_kernel()).count());
        assert!(r.table().ends_with(&format!("{}\n", r.summary())));
    }
}

#[test]
fn broken_kernel_is_caught_by_check_naming_the_node() {
    let file = open_model("tiny-i2_s.gguf");
    let g = gguf::lower(&file).unwrap().graph;
    let w = weights(file);
    let r =
        cross_check(&g, w.clone(), &scalar(), Arc::new(ScaleTwice), &passes(), Mode::Isolated, ExecConfig::solo(64, 8)).unwrap();
    let first = r.first_failure().expect("the broken kernel must fail");
    assert_eq!(first.name, "Qcur-0");
    assert!(first.op.starts_with("MatMulI2S"));
    // Isolated: only the broken op fails; everything downstream got the reference's inputs.
    for n in &r.nodes {
        let broken = n.op.starts_with("MatMulI2S");
        assert_eq!(matches!(n.status, Status::Failed(_)), broken, "{}: {:?}", n.name, n.status);
    }
    println!("{}", r.summary());
    let c = cross_check(&g, w, &scalar(), Arc::new(ScaleTwice), &passes(), Mode::Cumulative, ExecConfig::solo(64, 8)).unwrap();
    assert_eq!(c.first_failure().unwrap().name, "Qcur-0");
    assert!(c.failed() > r.failed(), "cumulative mode lets the error propagate");
}

#[test]
fn broken_kernel_is_caught_by_the_op_suite() {
    let err = (1..20u64).find_map(|seed| check_case(OpKind::MatMulI2S, seed, &ScaleTwice).err()).expect("suite must fail");
    assert!(err.contains("MatMulI2S") && err.contains("scale-twice"), "{err}");
    assert!(check_case(OpKind::RmsNorm, 3, &ScaleTwice).unwrap());
}

/// Cumulative mode compares byte outputs (q8_k activations) as bytes: the reference against
/// itself passes on a TQ2_0 model too (this once failed with "output kinds differ").
#[test]
fn cumulative_mode_handles_every_output_kind() {
    let file = open_model("b158-spm-tq2_0.gguf");
    let g = gguf::lower(&file).unwrap().graph;
    let passes = vec![
        Pass { tokens: vec![1, 450, 7483, 310, 3444, 338], pos0: 0, n_outputs: 6 },
        Pass { tokens: vec![1290], pos0: 6, n_outputs: 1 },
    ];
    let r =
        cross_check(&g, weights(file), &scalar(), Arc::new(ScalarBackend), &passes, Mode::Cumulative, ExecConfig::solo(64, 8))
            .unwrap();
    assert_eq!(r.failed(), 0, "{}", r.table());
    assert!(r.nodes.iter().any(|n| n.op == "QuantizeQ8K" && n.status == Status::Passed));
}

/// Scalar, except that RMSNorm panics (a kernel bug).
#[derive(Debug)]
struct PanicsInNorm;

impl Backend for PanicsInNorm {
    fn name(&self) -> &'static str {
        "panics-in-norm"
    }
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel> {
        if let Op::RmsNorm { .. } = op {
            return Some(Kernel::new("rms_norm_panics", |_, _, _| panic!("deliberate kernel bug")));
        }
        ScalarBackend.plan(op, inputs)
    }
}

#[test]
fn a_panicking_kernel_ends_the_step_instead_of_hanging_it() {
    // The executor keeps the other pool workers busy during a step; they must stop when
    // the step panics, or the step never returns. Run it on a thread and give up after a
    // generous time, so a regression fails instead of hanging the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = open_model("tiny-i2_s.gguf");
        let g = gguf::lower(&file).unwrap().graph;
        let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(PanicsInNorm), Arc::new(ScalarBackend)];
        let mut ex = graph::Executor::standalone(g, weights(file), &backends, ExecConfig::solo(64, 8)).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ex.forward(&[128000, 791], 0, 1).map(|l| l.len())));
        let _ = tx.send(r.is_err());
    });
    let panicked = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the step hung after a kernel panic");
    assert!(panicked, "the kernel's panic reaches the caller");
}
