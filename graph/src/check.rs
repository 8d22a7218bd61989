//! The op-by-op cross-check: runs a graph on a reference backend and a candidate backend and
//! compares every node against the op's declared [`Tolerance`].
//!
//! - **Isolated** (default): the candidate evaluates each node on the reference's inputs (and
//!   a copy of the reference's KV cache), so a mismatch points at one kernel.
//! - **Cumulative**: the candidate runs the whole graph on its own outputs (falling back to
//!   the reference where unsupported) and each node is compared with the reference's run, to
//!   measure drift.
//!
//! NaN or ±inf where the reference is finite is a failure before any tolerance applies, and so
//! is a non-finite value both backends agree on: sound weights never produce one.

use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Backend, Data, DataMut, Kernel, KvLayer, TensorMut, TensorRef};
use crate::error::Result;
use crate::exec::{ExecConfig, Executor, StepHook, WeightSource};
use crate::graph::{Graph, Node, NodeId};
use crate::op::{Op, Tolerance};
use crate::shape::TensorFact;

/// One forward pass of a check: tokens at `pos0..`, with `n_outputs` logit rows.
#[derive(Clone, Debug)]
pub struct Pass {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Position of the first token.
    pub pos0: usize,
    /// Rows whose logits are produced.
    pub n_outputs: usize,
}

/// How the candidate is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Candidate gets the reference's inputs for every node.
    Isolated,
    /// Candidate runs on its own outputs; errors propagate.
    Cumulative,
}

/// The verdict on one node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub enum Status {
    /// Within tolerance in every pass.
    Passed,
    /// Outside tolerance (or non-finite) in some pass; the reason.
    Failed(String),
    /// Not compared; the reason (e.g. the candidate does not implement the op).
    Skipped(String),
}

/// Per-node result, worst over all passes.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCheck {
    /// Node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Op with parameters.
    pub op: String,
    /// The candidate's kernel for the node.
    pub kernel: String,
    /// Verdict.
    #[serde(flatten)]
    pub status: Status,
    /// Largest |candidate − reference|.
    pub max_abs: f64,
    /// Largest |candidate − reference| / |reference| over elements with reference ≠ 0.
    pub max_rel: f64,
    /// Σ(candidate − reference)² / Σ reference².
    pub nmse: f64,
    /// The op's tolerance.
    pub tolerance: Tolerance,
}

/// A whole check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// Reference backend name.
    pub reference: String,
    /// Candidate backend name.
    pub candidate: String,
    /// Mode.
    pub mode: Mode,
    /// Number of passes run.
    pub passes: usize,
    /// One entry per computed node, in execution order.
    pub nodes: Vec<NodeCheck>,
}

impl CheckReport {
    /// Nodes that passed.
    pub fn passed(&self) -> usize {
        self.nodes.iter().filter(|n| n.status == Status::Passed).count()
    }
    /// Nodes that failed.
    pub fn failed(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.status, Status::Failed(_))).count()
    }
    /// Nodes not compared.
    pub fn skipped(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.status, Status::Skipped(_))).count()
    }
    /// The first failing node, in execution order.
    pub fn first_failure(&self) -> Option<&NodeCheck> {
        self.nodes.iter().find(|n| matches!(n.status, Status::Failed(_)))
    }
    /// `check: N passed, F failed, S skipped`.
    pub fn summary(&self) -> String {
        format!("check: {} passed, {} failed, {} skipped", self.passed(), self.failed(), self.skipped())
    }

    /// A fixed-width table, one row per node, ending with the summary line.
    pub fn table(&self) -> String {
        let mut s = format!(
            "cross-check: candidate {} vs reference {}, {} mode, {} passes\n",
            self.candidate,
            self.reference,
            match self.mode {
                Mode::Isolated => "isolated",
                Mode::Cumulative => "cumulative",
            },
            self.passes
        );
        s.push_str(&format!(
            "{:<4} {:<22} {:<34} {:<28} {:<8} {:>10} {:>10} {:>10}  {}\n",
            "id", "name", "op", "kernel", "result", "max_abs", "max_rel", "nmse", "tolerance"
        ));
        for n in &self.nodes {
            let (res, detail) = match &n.status {
                Status::Passed => ("ok", String::new()),
                Status::Failed(r) => ("FAIL", format!("  {r}")),
                Status::Skipped(r) => ("skip", format!("  {r}")),
            };
            let tol = match n.tolerance {
                Tolerance::Exact => "exact".to_string(),
                Tolerance::Close { abs, rel } => format!("abs {abs:e} + rel {rel:e}"),
            };
            s.push_str(&format!(
                "{:<4} {:<22} {:<34} {:<28} {:<8} {:>10.3e} {:>10.3e} {:>10.3e}  {tol}{detail}\n",
                n.id, n.name, n.op, n.kernel, res, n.max_abs, n.max_rel, n.nmse
            ));
        }
        s.push_str(&self.summary());
        s.push('\n');
        s
    }

    /// Per-node fill colours for [`crate::dump::dot`]: green passed, red failed, grey skipped.
    pub fn colors(&self, n_nodes: usize) -> Vec<Option<&'static str>> {
        let mut c = vec![None; n_nodes];
        for n in &self.nodes {
            c[n.id] = Some(match n.status {
                Status::Passed => "palegreen",
                Status::Failed(_) => "tomato",
                Status::Skipped(_) => "gray80",
            });
        }
        c
    }
}

/// Metrics of one comparison.
#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    max_abs: f64,
    max_rel: f64,
    nmse: f64,
}

/// Compares a candidate output with the reference output under `op`'s tolerance:
/// `Err(reason)` names the first offending element. Used by ops-tests too.
pub fn check_outputs(op: &Op, cand: TensorRef<'_>, reference: TensorRef<'_>) -> std::result::Result<(), String> {
    compare(op, cand, reference).1
}

/// Compares a candidate output with the reference output under `op`'s tolerance.
/// Returns the metrics and `Err(reason)` on failure.
fn compare(op: &Op, cand: TensorRef<'_>, reference: TensorRef<'_>) -> (Metrics, std::result::Result<(), String>) {
    let mut m = Metrics::default();
    match (cand.data, reference.data) {
        (Data::F32(a), Data::F32(b)) => {
            if a.len() != b.len() {
                return (m, Err(format!("{} values, reference has {}", a.len(), b.len())));
            }
            let (mut num, mut den) = (0.0f64, 0.0f64);
            let mut first_bad: Option<String> = None;
            let tol = op.tolerance();
            for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
                if !x.is_finite() && y.is_finite() {
                    return (m, Err(format!("element {i} is {x} where the reference has {y}")));
                }
                if !x.is_finite() || !y.is_finite() {
                    if x.to_bits() != y.to_bits() {
                        return (m, Err(format!("element {i} is {x}, reference {y}")));
                    }
                    // Both backends agree, but a forward pass never produces NaN or ±inf from
                    // sound weights: flag it (llama.cpp's `--check-tensors` finds the cause).
                    return (
                        m,
                        Err(format!(
                            "element {i} is {y} in both backends: a non-finite output (check the weights with --check-tensors)"
                        )),
                    );
                }
                let d = (f64::from(x) - f64::from(y)).abs();
                m.max_abs = m.max_abs.max(d);
                if y != 0.0 {
                    m.max_rel = m.max_rel.max(d / f64::from(y).abs());
                }
                num += d * d;
                den += f64::from(y) * f64::from(y);
                let ok = match tol {
                    Tolerance::Exact => x.to_bits() == y.to_bits(),
                    Tolerance::Close { abs, rel } => d <= f64::from(abs) + f64::from(rel) * f64::from(y).abs(),
                };
                if !ok && first_bad.is_none() {
                    first_bad = Some(format!("element {i}: {x:e} vs reference {y:e}"));
                }
            }
            m.nmse = if den > 0.0 { num / den } else { num };
            (m, first_bad.map_or(Ok(()), Err))
        }
        (Data::Bytes(a), Data::Bytes(b)) => {
            if a == b {
                (m, Ok(()))
            } else {
                let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
                m.max_abs = f64::NAN;
                (m, Err(format!("byte {i} differs (integer output must be exact)")))
            }
        }
        (Data::I32(a), Data::I32(b)) => {
            if a == b {
                (m, Ok(()))
            } else {
                (m, Err("integer output differs".into()))
            }
        }
        _ => (m, Err("output kinds differ".into())),
    }
}

struct Acc {
    checked: bool,
    metrics: Metrics,
    failure: Option<String>,
}

/// Accumulates node comparisons over passes (used by [`cross_check`] and by generation
/// with the check enabled on every step).
pub struct Checker {
    acc: Vec<Acc>,
    passes: usize,
    mode: Mode,
}

impl Checker {
    /// A checker for a graph of `n_nodes` nodes.
    pub fn new(n_nodes: usize, mode: Mode) -> Checker {
        Checker {
            acc: (0..n_nodes).map(|_| Acc { checked: false, metrics: Metrics::default(), failure: None }).collect(),
            passes: 0,
            mode,
        }
    }

    /// Starts the next pass (for messages).
    pub fn next_pass(&mut self) {
        self.passes += 1;
    }

    /// Compares one node's candidate output with the reference output.
    pub fn record(&mut self, id: NodeId, node: &Node, cand: TensorRef<'_>, reference: TensorRef<'_>) {
        let pass = self.passes.saturating_sub(1);
        record(&mut self.acc[id], pass, node, cand, reference);
    }

    /// Whether any node has failed so far.
    pub fn any_failed(&self) -> bool {
        self.acc.iter().any(|a| a.failure.is_some())
    }

    /// The report.
    pub fn report(self, graph: &Graph, reference: &dyn Backend, candidate: &dyn Backend) -> CheckReport {
        let nodes = graph
            .iter()
            .filter(|(_, n)| n.op.kind().has_kernel())
            .map(|(i, n)| {
                let facts: Vec<&TensorFact> = graph.inputs(i).iter().map(|&j| &graph.node(j).fact).collect();
                let kernel = candidate.plan(&n.op, &facts);
                let a = &self.acc[i];
                let status = match (&a.failure, a.checked, kernel.is_some()) {
                    (Some(f), _, _) => Status::Failed(f.clone()),
                    (None, true, true) => Status::Passed,
                    (None, _, false) => Status::Skipped(format!(
                        "{} does not implement {}; runs on {}",
                        candidate.name(),
                        n.op.name(),
                        reference.name()
                    )),
                    (None, false, true) => Status::Skipped("not reached".into()),
                };
                NodeCheck {
                    id: i,
                    name: n.name.clone(),
                    op: n.op.info(),
                    kernel: kernel.map(|k| k.name().to_string()).unwrap_or_else(|| format!("({})", reference.name())),
                    status,
                    max_abs: a.metrics.max_abs,
                    max_rel: a.metrics.max_rel,
                    nmse: a.metrics.nmse,
                    tolerance: n.op.tolerance(),
                }
            })
            .collect();
        CheckReport {
            reference: reference.name().into(),
            candidate: candidate.name().into(),
            mode: self.mode,
            passes: self.passes,
            nodes,
        }
    }
}

fn record(acc: &mut Acc, pass: usize, node: &Node, cand: TensorRef<'_>, reference: TensorRef<'_>) {
    let (m, r) = compare(&node.op, cand, reference);
    acc.checked = true;
    acc.metrics.max_abs = acc.metrics.max_abs.max(m.max_abs);
    acc.metrics.max_rel = acc.metrics.max_rel.max(m.max_rel);
    acc.metrics.nmse = acc.metrics.nmse.max(m.nmse);
    if let (Err(e), None) = (r, &acc.failure) {
        acc.failure = Some(format!("pass {pass}: {e}"));
    }
}

/// An owned copy of a node output (for comparisons after the executor reused the buffer).
#[derive(Clone, Debug)]
enum Saved {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Bytes(Vec<u8>),
}

impl Saved {
    fn of(t: TensorRef<'_>) -> Saved {
        match t.data {
            Data::F32(v) => Saved::F32(v.to_vec()),
            Data::I32(v) => Saved::I32(v.to_vec()),
            Data::Bytes(v) => Saved::Bytes(v.to_vec()),
        }
    }

    fn view<'a>(&'a self, dtype: crate::DType, dims: &'a [usize]) -> TensorRef<'a> {
        let data = match self {
            Saved::F32(v) => Data::F32(v),
            Saved::I32(v) => Data::I32(v),
            Saved::Bytes(v) => Data::Bytes(v),
        };
        TensorRef { dtype, dims, data }
    }
}

/// The isolated cross-check as a [`StepHook`]: after the plan's kernel ran a node, the
/// candidate's kernel runs on the same inputs (and, for attention, on a copy of the KV cache
/// as it was before the node) and the two outputs are compared. The plan's outputs are the
/// ones that propagate.
pub struct IsolatedCheck<'c> {
    checker: &'c mut Checker,
    /// The candidate's kernel per node (planned once).
    kernels: Vec<Option<Kernel>>,
    kv_copy: Option<(Vec<half::f16>, Vec<half::f16>, usize, usize)>,
    /// Per node: the candidate kernel's prepared weight ([`crate::WeightPrep`]), made from
    /// the file layout the hook sees the first time the node runs.
    prepared: Vec<Option<Vec<u8>>>,
    /// Whether the other backend is the reference and the plan's kernels the candidate
    /// (`exec --crosscheck`), rather than the other way round (`check`).
    other_is_reference: bool,
}

impl<'c> IsolatedCheck<'c> {
    /// Plans `candidate` on every node of `graph`; records into `checker`.
    pub fn new(graph: &Graph, candidate: &dyn Backend, checker: &'c mut Checker) -> IsolatedCheck<'c> {
        let kernels = graph
            .iter()
            .map(|(i, n)| {
                if !n.op.kind().has_kernel() {
                    return None;
                }
                let facts: Vec<&TensorFact> = graph.inputs(i).iter().map(|&j| &graph.node(j).fact).collect();
                candidate.plan(&n.op, &facts)
            })
            .collect();
        let prepared = vec![None; graph.len()];
        IsolatedCheck { checker, kernels, kv_copy: None, prepared, other_is_reference: false }
    }

    /// Records the plan's outputs as the candidate's and the other backend's as the
    /// reference (for checking a run of the fast backends against scalar).
    pub fn reference_is_other(mut self) -> Self {
        self.other_is_reference = true;
        self
    }
}

impl StepHook for IsolatedCheck<'_> {
    fn before(&mut self, id: NodeId, _node: &Node, _inputs: &[TensorRef<'_>], kv: Option<&KvLayer<'_>>) {
        self.kv_copy = match (&self.kernels[id], kv) {
            (Some(_), Some(kv)) => Some((kv.k.to_vec(), kv.v.to_vec(), kv.n_ctx, kv.n_slots)),
            _ => None,
        };
    }

    fn after(&mut self, id: NodeId, node: &Node, inputs: &[TensorRef<'_>], out: TensorRef<'_>) {
        let Some(kernel) = &self.kernels[id] else { return };
        let len = out.dtype.tensor_bytes(out.dims).unwrap_or(0);
        let mut buf = match out.dtype {
            crate::DType::F32 => Saved::F32(vec![0.0; len / 4]),
            crate::DType::I32 => Saved::I32(vec![0; len / 4]),
            _ => Saved::Bytes(vec![0; len]),
        };
        // A kernel with its own weight layout gets it prepared once per node (the inputs
        // here are in the file layout).
        let mut with: Option<Vec<TensorRef<'_>>> = None;
        if let Some(prep) = kernel.weight_prep() {
            if self.prepared[id].is_none() {
                match inputs.get(prep.input).map(|w| prep.prepare_tensor(w)) {
                    Some(Ok(p)) => self.prepared[id] = Some(p),
                    Some(Err(e)) => return self.fail(id, format!("preparing the candidate's weight: {e}")),
                    None => return self.fail(id, "the candidate's prepared input is missing".into()),
                }
            }
            let mut v = inputs.to_vec();
            v[prep.input].data = Data::Bytes(self.prepared[id].as_deref().unwrap_or(&[]));
            with = Some(v);
        }
        let inputs = with.as_deref().unwrap_or(inputs);
        let res = {
            let data = match &mut buf {
                Saved::F32(v) => DataMut::F32(v),
                Saved::I32(v) => DataMut::I32(v),
                Saved::Bytes(v) => DataMut::Bytes(v),
            };
            let mut o = TensorMut { dtype: out.dtype, dims: out.dims, data };
            match self.kv_copy.as_mut() {
                Some((k, v, n_ctx, n_slots)) => {
                    kernel.run_prepared(inputs, &mut o, Some(&mut KvLayer { k, v, n_ctx: *n_ctx, n_slots: *n_slots }))
                }
                None => kernel.run_prepared(inputs, &mut o, None),
            }
        };
        match res {
            Ok(()) if self.other_is_reference => self.checker.record(id, node, out, buf.view(out.dtype, out.dims)),
            Ok(()) => self.checker.record(id, node, buf.view(out.dtype, out.dims), out),
            Err(e) => self.fail(id, format!("the candidate's kernel failed: {e}")),
        }
    }
}

impl IsolatedCheck<'_> {
    /// Records that the candidate could not run node `id`.
    fn fail(&mut self, id: NodeId, why: String) {
        let acc = &mut self.checker.acc[id];
        acc.checked = true;
        if acc.failure.is_none() {
            acc.failure = Some(format!("pass {}: {why}", self.checker.passes.saturating_sub(1)));
        }
    }
}

/// Keeps a copy of every computed node output of a step (the reference run of a cumulative
/// check).
struct Keep(Vec<Option<Saved>>);

impl StepHook for Keep {
    fn after(&mut self, id: NodeId, node: &Node, _inputs: &[TensorRef<'_>], out: TensorRef<'_>) {
        if node.op.kind().has_kernel() {
            self.0[id] = Some(Saved::of(out));
        }
    }
}

/// Compares every computed node output with a kept copy (the candidate run of a cumulative
/// check).
struct Compare<'a> {
    kept: &'a [Option<Saved>],
    checker: &'a mut Checker,
}

impl StepHook for Compare<'_> {
    fn after(&mut self, id: NodeId, node: &Node, _inputs: &[TensorRef<'_>], out: TensorRef<'_>) {
        if let Some(saved) = &self.kept[id] {
            self.checker.record(id, node, out, saved.view(out.dtype, out.dims));
        }
    }
}

/// Runs `passes` on both backends and compares every node. `reference` is the ordered list
/// whose first backend defines the expected outputs (the rest run what it does not
/// implement); the candidate runs what it implements and falls back to that list. Each
/// executor runs one sequence with `config`'s sizes (`n_slots` is ignored: one slot).
pub fn cross_check(
    graph: &Graph,
    weights: Arc<dyn WeightSource>,
    reference: &[Arc<dyn Backend>],
    candidate: Arc<dyn Backend>,
    passes: &[Pass],
    mode: Mode,
    config: ExecConfig,
) -> Result<CheckReport> {
    let with_candidate: Vec<Arc<dyn Backend>> = std::iter::once(candidate.clone()).chain(reference.iter().cloned()).collect();
    let reference_name = reference.first().ok_or_else(|| crate::Error::runtime("no reference backend"))?.clone();
    let n = graph.len();
    let mut checker = Checker::new(n, mode);
    let config = ExecConfig { n_slots: 1, ..config };
    match mode {
        Mode::Isolated => {
            let mut ex = Executor::standalone(graph.clone(), weights, reference, config)?;
            for p in passes {
                checker.next_pass();
                let mut hook = IsolatedCheck::new(graph, candidate.as_ref(), &mut checker);
                ex.forward_hooked(&p.tokens, p.pos0, p.n_outputs, Some(&mut hook))?;
            }
        }
        Mode::Cumulative => {
            let mut rex = Executor::standalone(graph.clone(), weights.clone(), reference, config)?;
            let mut cex = Executor::standalone(graph.clone(), weights, &with_candidate, config)?;
            for p in passes {
                checker.next_pass();
                let mut keep = Keep(vec![None; n]);
                rex.forward_hooked(&p.tokens, p.pos0, p.n_outputs, Some(&mut keep))?;
                let mut cmp = Compare { kept: &keep.0, checker: &mut checker };
                cex.forward_hooked(&p.tokens, p.pos0, p.n_outputs, Some(&mut cmp))?;
            }
        }
    }
    Ok(checker.report(graph, reference_name.as_ref(), candidate.as_ref()))
}
