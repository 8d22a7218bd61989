//! Model-level parity with bitnet.cpp's reference outputs: prompt logits in a batch mode,
//! greedy continuations, and node-by-node intermediate tensors.

use std::collections::HashMap;

use gguf::lower::names::reference_entry;

use std::sync::Arc;

use graph::{ExecConfig, Executor, Node, StepHook, TensorRef};

use crate::{argmax, load, open_model, run_prompt, shared, shared_json};

/// One prompt of a reference `index.json`.
pub struct Prompt {
    /// Prompt id.
    pub id: String,
    /// Token ids, BOS first.
    pub tokens: Vec<u32>,
    /// Full-logits file, when shipped.
    pub logits_file: Option<String>,
    /// The 32 greedy tokens.
    pub gen_tokens: Vec<u32>,
    /// Top-1/top-2 gap of each greedy step.
    pub gaps: Vec<f64>,
}

/// The prompts of a reference folder.
pub fn prompts(dir: &str) -> Vec<Prompt> {
    let idx = shared_json(&format!("{dir}/index.json"));
    idx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = |k: &str| p[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
            let file = p["logits_file"].as_str().map(|f| f.to_string()).filter(|f| shared(&format!("{dir}/{f}")).exists());
            Prompt {
                id: p["id"].as_str().unwrap().to_string(),
                tokens: ids("prompt_tokens"),
                logits_file: file,
                gen_tokens: ids("gen_tokens"),
                gaps: p["gen_steps"].as_array().unwrap().iter().map(|s| s["gap_top1_top2"].as_f64().unwrap()).collect(),
            }
        })
        .collect()
}

/// Compares our prompt logits with the reference's (full file or compact top-64) and
/// returns (max |Δ|, argmax disagreements at positions whose reference gap ≥ 1e-3).
pub fn compare_prompt_logits(dir: &str, p: &Prompt, got: &[f32], n_vocab: usize) -> (f32, usize) {
    let n = p.tokens.len();
    let (mut maxd, mut bad) = (0.0f32, 0usize);
    if let Some(f) = &p.logits_file {
        let r = gguf::npy::read_f32(shared(&format!("{dir}/{f}"))).unwrap();
        assert_eq!(r.shape, vec![n, n_vocab]);
        for pos in 0..n {
            let (g, w) = (&got[pos * n_vocab..(pos + 1) * n_vocab], &r.data[pos * n_vocab..(pos + 1) * n_vocab]);
            maxd = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(maxd, f32::max);
            let mut sorted: Vec<f32> = w.to_vec();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            if sorted[0] - sorted[1] >= 1e-3 && argmax(g) != argmax(w) {
                bad += 1;
            }
        }
    } else {
        let ids = gguf::npy::read_i32(shared(&format!("{dir}/compact/{}_top64_ids.npy", p.id))).unwrap();
        let vals = gguf::npy::read_f32(shared(&format!("{dir}/compact/{}_top64_logits.npy", p.id))).unwrap();
        assert_eq!(ids.shape, vec![n, 64]);
        for pos in 0..n {
            let g = &got[pos * n_vocab..(pos + 1) * n_vocab];
            for j in 0..64 {
                let id = ids.data[pos * 64 + j] as usize;
                maxd = maxd.max((g[id] - vals.data[pos * 64 + j]).abs());
            }
            let gap = vals.data[pos * 64] - vals.data[pos * 64 + 1];
            if gap >= 1e-3 && argmax(g) != ids.data[pos * 64] as usize {
                bad += 1;
            }
        }
    }
    (maxd, bad)
}

/// Runs every prompt of `dir` through `model` (on the scalar reference) in micro-batches of
/// `ubatch` and checks logits and 32 greedy tokens against the reference.
pub fn run_mode(model: &str, dir: &str, ubatch: usize) {
    let m = load(model, "scalar", ubatch);
    let n_vocab = m.n_vocab();
    let mut worst = 0.0f32;
    for p in prompts(dir) {
        let run = run_prompt(&m, &p.tokens, 32);
        let (maxd, bad) = compare_prompt_logits(dir, &p, &run.prompt_logits, n_vocab);
        worst = worst.max(maxd);
        println!(
            "{dir} ubatch {ubatch} {}: {} positions, max |Δlogit| {maxd:e}, argmax mismatches (gap ≥ 1e-3): {bad}",
            p.id,
            p.tokens.len()
        );
        assert_eq!(bad, 0, "{}: argmax differs at a position with a clear top-1", p.id);
        assert!(maxd <= 1e-2, "{}: max |Δlogit| {maxd} exceeds 1e-2", p.id);
        let gen = &run.tokens;
        if let Some(k) = gen.iter().zip(&p.gen_tokens).position(|(a, b)| a != b) {
            let gap = p.gaps[k];
            println!("{}: greedy diverges at step {k} where the reference's top-1/top-2 gap is {gap:e}", p.id);
            assert!(gap < 1e-3, "{}: greedy token {k} is {} but the reference has {} (gap {gap})", p.id, gen[k], p.gen_tokens[k]);
        } else {
            println!("{}: 32 greedy tokens identical", p.id);
        }
    }
    println!("{dir}: worst max |Δlogit| over all prompts: {worst:e}");
}

/// Compares each node output of a step with the reference dump entry the name table maps it
/// to, bit for bit.
struct DumpCompare<'a> {
    table: std::collections::HashMap<(String, String, usize), &'a serde_json::Value>,
    dump_dir: &'a str,
    failures: Vec<String>,
    checked: usize,
}

impl StepHook for DumpCompare<'_> {
    fn after(&mut self, _id: usize, node: &Node, _inputs: &[TensorRef<'_>], out: TensorRef<'_>) {
        let Some(r) = reference_entry(&node.name, &node.op) else { return };
        let Some(e) = self.table.get(&(r.name.clone(), r.op.to_string(), r.occurrence)) else {
            self.failures.push(format!("{}: no reference entry {:?}", node.name, r));
            return;
        };
        // The logits node may point at the shipped logits file instead of a copy.
        let file = e["file"].as_str().or_else(|| e["same_as"].as_str()).expect("dump entry has a file");
        let want = gguf::npy::read_f32(shared(&format!("{}/{file}", self.dump_dir))).unwrap();
        let got = out.f32().unwrap();
        if got.len() != want.data.len() {
            self.failures.push(format!("{}: {} values, reference {}", node.name, got.len(), want.data.len()));
            return;
        }
        let diff = got.iter().zip(&want.data).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let maxd = got.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        if diff > 0 {
            self.failures.push(format!(
                "{} ({} {}): {diff} of {} values differ, max |Δ| {maxd:e}",
                node.name,
                r.name,
                r.op,
                got.len()
            ));
        }
        self.checked += 1;
    }
}

/// Compares every mapped node of the forward passes of a dump folder with our executor's
/// outputs (scalar reference). `prefill` runs first without checks (it fills the KV cache,
/// for dumps of a generation step); `passes` are (tokens, pos0, n_outputs), run in order on
/// one KV cache, each matched with its slice of the dump. Reports the first node that
/// differs.
pub fn compare_nodes(model: &str, dump_dir: &str, prefill: &[u32], passes: &[(Vec<u32>, usize, usize)]) {
    compare_nodes_on("scalar", model, dump_dir, prefill, passes)
}

/// [`compare_nodes`] with the graph planned on `backend` (a registry name: that backend,
/// then the ones after it, ending with scalar).
pub fn compare_nodes_on(backend: &str, model: &str, dump_dir: &str, prefill: &[u32], passes: &[(Vec<u32>, usize, usize)]) {
    let backends = runtime::backends::resolve(backend).unwrap_or_else(|e| panic!("{e}"));
    let file = open_model(model);
    let graph = gguf::lower(&file).expect("lowering").graph;
    let index = shared_json(&format!("{dump_dir}/index.json"));
    let entries = index["tensors"].as_array().unwrap();
    let per_pass = entries.len() / passes.len();
    let weights = Arc::new(gguf::lower::ModelWeights::new(file));
    let mut ex = Executor::standalone(graph, weights, &backends, ExecConfig::solo(512, 512)).expect("executor");
    if !prefill.is_empty() {
        ex.forward(prefill, 0, 1).unwrap();
    }
    let mut checked = 0usize;
    for (pi, (tokens, pos0, n_out)) in passes.iter().enumerate() {
        // (name, op, occurrence within the pass) → dump entry
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        let mut table: HashMap<(String, String, usize), &serde_json::Value> = HashMap::new();
        for e in &entries[pi * per_pass..(pi + 1) * per_pass] {
            let key = (e["name"].as_str().unwrap().to_string(), e["op"].as_str().unwrap().to_string());
            let occ = seen.entry(key.clone()).or_insert(0);
            table.insert((key.0, key.1, *occ), e);
            *occ += 1;
        }
        let mut hook = DumpCompare { table, dump_dir, failures: Vec::new(), checked: 0 };
        ex.forward_hooked(tokens, *pos0, *n_out, Some(&mut hook)).unwrap();
        let failures = hook.failures;
        assert!(failures.is_empty(), "{dump_dir} pass {pi}: first differing node: {}\nall: {failures:#?}", failures[0]);
        checked += hook.checked;
    }
    println!("{dump_dir} on {backend}: {checked} node outputs bit-identical to the reference");
    // Every node the name table maps must have been found and compared, in every pass.
    let mapped = ex.graph().iter().filter(|(_, n)| reference_entry(&n.name, &n.op).is_some()).count();
    assert!(mapped >= 20, "the name table maps only {mapped} nodes");
    assert_eq!(checked, passes.len() * mapped, "compared {checked} node outputs, expected {mapped} per pass");
}
