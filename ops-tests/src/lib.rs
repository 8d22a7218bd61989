//! Shared helpers for the op tests and the model-level parity tests: paths into
//! `../shared`, the one owned-tensor harness ([`cases`]), the per-op suite over every
//! registered backend ([`op_suite!`]), and running prompts through the runtime library.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use backend_scalar::ScalarBackend;
use gguf::GgufFile;
pub use graph::rng::Rng;
use graph::{Backend, OpKind};
pub use proptest;
use runtime::{Batch, Event, LogitsMode, Model, ModelOptions, Request, SamplingParams};

/// `<workspace>/../shared/<rel>`: the read-only shared data (never copied into the repo).
/// Fails with one clear line when the folder is missing.
pub fn shared(rel: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if !root.is_dir() {
        panic!(
            "../shared is missing (looked for {}): the tests need the shared data folder next to the checkout",
            root.display()
        );
    }
    root.join(rel)
}

/// Reads a JSON file from `../shared`.
pub fn shared_json(rel: &str) -> serde_json::Value {
    let p = shared(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Opens a shared model file.
pub fn open_model(name: &str) -> GgufFile {
    let p = shared(&format!("models/{name}"));
    GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Loads a shared model through the runtime on `backend` (`scalar`, `auto`, …), evaluating
/// prompts in chunks of `ubatch`.
pub fn load(name: &str, backend: &str, ubatch: usize) -> Arc<Model> {
    load_with(name, ModelOptions { backend: backend.into(), ubatch, ..ModelOptions::default() })
}

/// Loads a shared model with `opts` (a path outside `models/` can be given relative to
/// `../shared`).
pub fn load_with(name: &str, opts: ModelOptions) -> Arc<Model> {
    let p = if name.contains('/') { shared(name) } else { shared(&format!("models/{name}")) };
    Arc::new(Model::load(&p, &opts).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// What one prompt run gives: every prompt position's logits, the greedy tokens and the
/// logits each was sampled from.
pub struct Run {
    /// `[n_prompt × n_vocab]`.
    pub prompt_logits: Vec<f32>,
    /// The greedy continuation.
    pub tokens: Vec<u32>,
    /// Per generated token, the logits row it was chosen from.
    pub step_logits: Vec<Vec<f32>>,
}

/// Runs `prompt` alone through a batch of `model`: every prompt position's logits, then `n`
/// greedy tokens (end-of-generation tokens ignored, as the reference's runs did).
pub fn run_prompt(model: &Arc<Model>, prompt: &[u32], n: usize) -> Run {
    let mut batch = Batch::new(model.clone()).expect("batch");
    let mut params = SamplingParams::greedy(n);
    params.ignore_eos = true;
    batch.add(Request { prompt: prompt.to_vec(), params, logits: LogitsMode::All }).expect("request");
    let n_vocab = model.n_vocab();
    let mut run = Run { prompt_logits: Vec::new(), tokens: Vec::new(), step_logits: Vec::new() };
    while !batch.is_idle() {
        for e in batch.step().expect("step") {
            match e {
                Event::Logits { first_pos, rows, .. } if first_pos < prompt.len() => run.prompt_logits.extend_from_slice(&rows),
                Event::Logits { rows, .. } => run.step_logits.push(rows),
                Event::Done(c) => run.tokens = c.tokens,
                _ => {}
            }
        }
    }
    // The prompt's last row is also the first token's.
    run.step_logits.insert(0, run.prompt_logits[run.prompt_logits.len() - n_vocab..].to_vec());
    run.step_logits.truncate(n);
    run
}

/// Greedy argmax: highest value, lowest index on ties.
pub fn argmax(v: &[f32]) -> usize {
    runtime::sampler::argmax(v)
}

pub mod bitexact;
pub mod cases;
pub mod dump;
pub mod kernel_suite;
pub mod parity;

/// Runs one generated case of `kind` (from `seed`) on `candidate` and on the scalar reference,
/// and compares: output under the op's tolerance (integer outputs exactly), KV cache
/// exactly. Returns `Ok(false)` when the candidate does not plan the case.
pub fn check_case(kind: OpKind, seed: u64, candidate: &dyn Backend) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let Some(case) = cases::case(kind, &mut rng) else { return Ok(false) };
    let Some(got) = case.run(candidate) else { return Ok(false) };
    let got = got.map_err(|e| format!("{}: {} failed: {e}", case.id, candidate.name()))?;
    let want =
        case.run(&ScalarBackend::new()).expect("scalar plans every case").map_err(|e| format!("{}: scalar: {e}", case.id))?;
    graph::check::check_outputs(&case.op, got.out.view(), want.out.view())
        .map_err(|e| format!("{} on {}: {e}", case.id, candidate.name()))?;
    if got.kv != want.kv {
        return Err(format!("{} on {}: KV cache contents differ", case.id, candidate.name()));
    }
    Ok(true)
}

/// Runs the proptest suite of one op kind on a backend.
pub fn run_op_suite(kind: OpKind, candidate: &dyn Backend, source_file: &'static str) {
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
        match check_case(kind, seed, candidate) {
            Ok(true) => supported.set(supported.get() + 1),
            Ok(false) => {}
            Err(e) => return Err(TestCaseError::fail(e)),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{} on {}: {e}", kind.name(), candidate.name());
    }
    match supported.get() {
        0 => println!("{}: not planned by {} (runs on the next backend); reported, not failed", kind.name(), candidate.name()),
        n => println!("{} on {}: {n} cases match scalar", kind.name(), candidate.name()),
    }
}

/// Every registered backend other than the scalar reference, with a visible line for each
/// that this CPU cannot run.
pub fn registered_candidates() -> Vec<Arc<dyn Backend>> {
    runtime::backends::REGISTRY
        .iter()
        .filter(|e| e.name != "scalar")
        .filter_map(|e| match (e.make)() {
            Some(b) => Some(b),
            None => {
                println!("SKIPPED: backend {} is not available on this machine (needs {})", e.name, e.requires);
                None
            }
        })
        .collect()
}

/// Runs the suite of `kind` on every backend `make` gives.
pub fn run_kind(kind: OpKind, backends: &[Arc<dyn Backend>], source_file: &'static str) {
    if !kind.has_kernel() {
        assert!(cases::case(kind, &mut Rng::new(1)).is_none(), "{} has no kernel, so no case", kind.name());
        return;
    }
    if backends.is_empty() {
        println!("SKIPPED: {}: no backend to compare with scalar on this machine", kind.name());
    }
    for b in backends {
        run_op_suite(kind, b.as_ref(), source_file);
    }
}

/// Generates one `#[test]` per op kind (named after the kind) comparing backends with the
/// scalar reference: `op_suite!(name, backends_expr)` where `backends_expr` is a
/// `Vec<Arc<dyn Backend>>` (e.g. [`registered_candidates()`]). The list of kinds comes from
/// [`graph::with_op_kinds!`], so a new op gets its test without any edit here.
#[macro_export]
macro_rules! op_suite {
    ($modname:ident, $backends:expr) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            graph::with_op_kinds!($crate::__op_suite_tests, $backends);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __op_suite_tests {
    ([$backends:expr] $($k:ident),* $(,)?) => {
        $(
            #[test]
            #[allow(non_snake_case)]
            fn $k() {
                $crate::run_kind(graph::OpKind::$k, &$backends, file!());
            }
        )*
    };
}
