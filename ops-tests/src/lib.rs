//! Shared helpers for the op tests and the model-level parity tests: paths into
//! `../shared`, loading the reference index, and running a prompt through the executor.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use backend_scalar::ScalarBackend;
use graph::{Backend, Executor};
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
