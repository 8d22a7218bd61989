//! Shared helpers for the op tests and the model-level parity tests: paths into
//! `../shared`, loading the reference index, and running a prompt through the executor.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use backend_scalar::ScalarBackend;
use graph::{Backend, Executor};
pub use proptest;
use gguf::GgufFile;

/// `<workspace>/../shared/<rel>`: the read-only shared data (never copied into the repo).
pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

/// Reads a JSON file from `../shared`.
pub fn shared_json(rel: &str) -> serde_json::Value {
    let p = shared(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Opens a shared model.
pub fn open_model(name: &str) -> GgufFile {
    let p = shared(&format!("models/{name}"));
    GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// An executor for `file` on `backend` (None = scalar only).
pub fn executor<'a>(file: &'a GgufFile, backend: Option<Arc<dyn Backend>>, n_ctx: usize) -> Executor<'a> {
    let model = gguf::lower(file).expect("lowering");
    Executor::new(model.graph, file, backend, Arc::new(ScalarBackend::new()), n_ctx).expect("executor")
}

/// Runs a prompt in micro-batches of `ubatch`, keeping the logits of every position
/// (as the reference's runs did). Returns `[n_tokens × n_vocab]`.
pub fn prompt_logits(ex: &mut Executor<'_>, tokens: &[u32], ubatch: usize) -> Vec<f32> {
    let mut out = Vec::new();
    let mut pos = 0;
    for chunk in tokens.chunks(ubatch) {
        out.extend_from_slice(ex.forward(chunk, pos, chunk.len()).expect("forward"));
        pos += chunk.len();
    }
    out
}

/// Greedy argmax: highest value, lowest index on ties.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Continues greedily for `n` tokens after a prompt whose last logits are `last`, one
/// token per step at positions `pos0, pos0+1, …` (the n-th token is chosen, not fed back).
/// Returns the tokens and each step's logits.
pub fn greedy(ex: &mut Executor<'_>, last: &[f32], pos0: usize, n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut toks = Vec::new();
    let mut steps = vec![last.to_vec()];
    let mut logits = last.to_vec();
    for i in 0..n {
        let t = argmax(&logits) as u32;
        toks.push(t);
        if i + 1 < n {
            logits = ex.forward(&[t], pos0 + i, 1).expect("forward").to_vec();
            steps.push(logits.clone());
        }
    }
    (toks, steps)
}

pub mod bitexact;
pub mod cases;
pub mod dump;
pub mod parity;

/// Runs one generated case of `op` (from `seed`) on `candidate` and on the scalar reference,
/// and compares: output under the op's tolerance (integer outputs exactly), KV cache
/// exactly. Returns `Ok(false)` when the candidate does not support the case.
pub fn check_case(op: &str, seed: u64, candidate: &dyn Backend) -> Result<bool, String> {
    let mut rng = cases::Rng(seed | 1);
    let case = cases::case(op, &mut rng);
    let Some(got) = case.run(candidate) else { return Ok(false) };
    let got = got.map_err(|e| format!("{}: {} failed: {e}", case.id, candidate.name()))?;
    let want = case.run(&ScalarBackend::new()).expect("scalar supports every case").map_err(|e| format!("{}: scalar: {e}", case.id))?;
    graph::check::check_outputs(&case.op, got.out.view(), want.out.view())
        .map_err(|e| format!("{} on {}: {e}", case.id, candidate.name()))?;
    if got.kv != want.kv {
        return Err(format!("{} on {}: KV cache contents differ", case.id, candidate.name()));
    }
    Ok(true)
}

/// Runs the proptest suite of one op on a backend (used by [`backend_suite!`]).
pub fn run_op_suite(op: &str, candidate: &dyn Backend, source_file: &'static str) {
    use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
    let config = Config {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        source_file: Some(source_file),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let supported = std::cell::Cell::new(0usize);
    let result = runner.run(&proptest::prelude::any::<u64>(), |seed| {
        match check_case(op, seed, candidate) {
            Ok(true) => supported.set(supported.get() + 1),
            Ok(false) => {}
            Err(e) => return Err(TestCaseError::fail(e)),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{op} on {}: {e}", candidate.name());
    }
    if supported.get() == 0 {
        println!("{op}: not supported by {} (runs on scalar); reported, not failed", candidate.name());
    }
}

/// Generates one `#[test]` per op comparing a backend with the scalar reference:
/// `backend_suite!(avx2, backend_avx2::Avx2Backend::new());` where the constructor returns
/// `Option<B>` (`None` = not available on this host: the tests say so and pass).
#[macro_export]
macro_rules! backend_suite {
    ($modname:ident, $ctor:expr) => {
        mod $modname {
            $crate::backend_suite!(@ops $ctor;
                embedding "Embedding", rms_norm "RmsNorm", quantize_i8 "QuantizeI8", matmul_i2s "MatMulI2S",
                matmul_f16 "MatMulF16", matmul_q8_0 "MatMulQ8_0", quantize_q8k "QuantizeQ8K", matmul_tq "MatMulTQ",
                reshape "Reshape", rope "Rope",
                attention "Attention", scale "Scale", add "Add", mul "Mul", relu "Relu", sqr "Sqr", silu "Silu",
                select_outputs "SelectOutputs");

            #[test]
            fn suite_covers_every_op() {
                let covered: Vec<&str> = vec!["Embedding", "RmsNorm", "QuantizeI8", "MatMulI2S", "MatMulF16", "MatMulQ8_0",
                    "QuantizeQ8K", "MatMulTQ", "Reshape", "Rope", "Attention", "Scale", "Add", "Mul", "Relu", "Sqr", "Silu", "SelectOutputs"];
                for op in graph::Op::all_names() {
                    assert!(
                        covered.contains(op) || $crate::cases::SOURCE_OPS.contains(op),
                        "op {op} has no case in backend_suite!"
                    );
                }
            }
        }
    };
    (@ops $ctor:expr; $($f:ident $op:literal),* $(,)?) => {
        $(
            #[test]
            fn $f() {
                match $ctor {
                    Some(b) => $crate::run_op_suite($op, &b, file!()),
                    None => println!("{}: backend not available on this host; skipped", $op),
                }
            }
        )*
    };
}
