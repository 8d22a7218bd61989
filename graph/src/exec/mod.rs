//! The executor: runs a verified graph step by step, each node on the kernel planned for it.
//!
//! - [`plan`]: which backend's kernel runs each node (first of an ordered list that plans it);
//! - [`memory`]: the weights (bound once), the activation arena (offsets planned from the
//!   graph's liveness), the KV cache (one slot per sequence);
//! - [`workers`]: how a step uses the thread pool.
//!
//! The cross-check and the tensor-dump comparisons hook into a step through [`StepHook`].

mod memory;
mod plan;
mod workers;

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, Data, DataMut, KvLayer, TensorMut, TensorRef};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::shape::Bindings;
use crate::DType;

pub use memory::kv_stride;

/// Where weight bytes come from (the model file). Implemented by the GGUF frontend.
pub trait WeightSource: Send + Sync {
    /// The byte size of a weight tensor, if the source has it.
    fn weight_len(&self, name: &str) -> Option<usize>;

    /// The raw bytes of a weight tensor, in its file layout (a view of the file mapping).
    /// The executor reads through this only for tables it leaves in the source (embedding
    /// lookups); everything else is copied once with [`WeightSource::copy_weight`].
    fn weight_bytes(&self, name: &str) -> Option<&[u8]>;

    /// Copies a weight's bytes into `dst` (exactly its size) with checked reads, so that a
    /// file that changed under the caller is an error, not a fault.
    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> std::result::Result<(), String>;
}

/// Sizes fixed when an executor is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecConfig {
    /// Positions per sequence in the KV cache.
    pub n_ctx: usize,
    /// Sequences the KV cache holds (slots `0..n_slots`).
    pub n_slots: usize,
    /// The most tokens one step may hold (all sequences together).
    pub max_tokens: usize,
    /// The most output (logit) rows one step may produce.
    pub max_outputs: usize,
}

impl ExecConfig {
    /// One sequence of `n_ctx` positions, steps of up to `ubatch` tokens and as many outputs.
    pub fn solo(n_ctx: usize, ubatch: usize) -> ExecConfig {
        ExecConfig { n_ctx, n_slots: 1, max_tokens: ubatch, max_outputs: ubatch }
    }
}

/// One step: tokens of one or more sequences, each with its sequence slot and position, and
/// the token rows whose logits are wanted.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// Token ids.
    pub tokens: &'a [u32],
    /// Each token's position in its sequence.
    pub positions: &'a [u32],
    /// Each token's sequence slot.
    pub seqs: &'a [u32],
    /// Indices into `tokens` of the rows whose logits are produced, increasing.
    pub outputs: &'a [u32],
}

/// Called around every node of a step (the cross-check and tensor comparisons use it).
pub trait StepHook: Send {
    /// Before a node's kernel runs: its inputs and, for attention, the layer's KV cache as
    /// it is before the node updates it.
    fn before(&mut self, _id: NodeId, _node: &Node, _inputs: &[TensorRef<'_>], _kv: Option<&KvLayer<'_>>) {}
    /// After a node was computed (or filled, for the step's inputs): its inputs and output.
    fn after(&mut self, _id: NodeId, _node: &Node, _inputs: &[TensorRef<'_>], _out: TensorRef<'_>) {}
}

/// The plan of `graph` on `backends` without binding any weight (for dumps): each node's
/// `backend:kernel` (`None` for inputs, weights and views) and the one-line summary.
pub fn describe_plan(graph: &Graph, backends: &[Arc<dyn Backend>]) -> Result<(Vec<Option<String>>, String)> {
    let plans = plan::plan(graph, backends)?;
    let names = plans.iter().map(|p| p.as_ref().map(|p| format!("{}:{}", backends[p.backend].name(), p.kernel.name()))).collect();
    Ok((names, plan::summary(graph, &plans, backends)))
}

/// A graph planned on an ordered list of backends, with its weights bound: the immutable
/// part of running a model, shared (`Arc`) by every [`Executor`] of the model.
///
/// ## Design
/// Each node gets the kernel of the first backend (most specialised first, the scalar
/// reference last) that plans it; the weights are copied once into one arena. Executors
/// add what each run needs of its own: activations and a KV cache.
pub struct Program {
    graph: Graph,
    backends: Vec<Arc<dyn Backend>>,
    plans: Vec<Option<plan::Planned>>,
    weights: memory::Weights,
}

impl Program {
    /// Plans `graph` on `backends` (tried in order; the last should plan every op, like the
    /// scalar reference) and binds the weights.
    pub fn new(graph: Graph, weights: Arc<dyn WeightSource>, backends: &[Arc<dyn Backend>]) -> Result<Program> {
        if backends.is_empty() {
            return Err(Error::runtime("no backend given"));
        }
        let plans = plan::plan(&graph, backends)?;
        let weights = memory::Weights::bind(&graph, weights, &plans)?;
        Ok(Program { graph, backends: backends.to_vec(), plans, weights })
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The backends, in the order they are tried.
    pub fn backends(&self) -> &[Arc<dyn Backend>] {
        &self.backends
    }

    /// `backend:kernel` for each node that runs a kernel (`None` for inputs, weights and
    /// views), for dumps: the names of the kernels that run.
    pub fn kernel_names(&self) -> Vec<Option<String>> {
        self.plans
            .iter()
            .map(|p| p.as_ref().map(|p| format!("{}:{}", self.backends[p.backend].name(), p.kernel.name())))
            .collect()
    }

    /// The kernel planned for node `id`, with the name of the backend that planned it.
    pub fn kernel(&self, id: NodeId) -> Option<(&str, &crate::Kernel)> {
        self.plans.get(id)?.as_ref().map(|p| (self.backends[p.backend].name(), &p.kernel))
    }

    /// One line saying which backend runs how many nodes.
    pub fn plan_summary(&self) -> String {
        plan::summary(&self.graph, &self.plans, &self.backends)
    }

    /// Bytes of weights copied into the weight arena.
    pub fn weight_bytes(&self) -> usize {
        self.weights.arena_len()
    }
}

/// Runs a [`Program`].
///
/// ## Design
/// The executor owns what one run needs besides the shared program: one activation arena
/// whose byte ranges are planned from the graph's liveness, and the f16 KV cache of every
/// attention layer, with one slot per sequence. It does not know file formats. A step
/// ([`Executor::step`]) may hold tokens of several sequences; each token's (sequence,
/// position) decides where attention writes and reads, and every kernel computes each row
/// from its own sequence's data only.
pub struct Executor {
    program: Arc<Program>,
    acts: memory::Activations,
    kv: memory::KvCache,
    config: ExecConfig,
    /// Per node, its dims in the current step.
    dims: Vec<Vec<usize>>,
    /// Per-node accumulated seconds and calls, when profiling.
    profile: Option<Vec<(f64, u64)>>,
}

impl Executor {
    /// An executor of `program` with an activation arena and a KV cache as `config` says.
    pub fn new(program: Arc<Program>, config: ExecConfig) -> Result<Executor> {
        if config.n_ctx == 0 || config.n_slots == 0 || config.max_tokens == 0 {
            return Err(Error::runtime(format!(
                "context size, sequences and tokens per step must be at least 1 (got {}, {}, {})",
                config.n_ctx, config.n_slots, config.max_tokens
            )));
        }
        let graph = &program.graph;
        let max = Bindings { tokens: config.max_tokens, outputs: config.max_outputs.min(config.max_tokens) };
        let acts = memory::Activations::plan(graph, max)?;
        let kv = memory::KvCache::new(graph, config.n_ctx, config.n_slots)?;
        let dims = vec![Vec::new(); graph.len()];
        Ok(Executor { program, acts, kv, config, dims, profile: None })
    }

    /// Plans and binds `graph` ([`Program::new`]) for this executor alone.
    pub fn standalone(
        graph: Graph,
        weights: Arc<dyn WeightSource>,
        backends: &[Arc<dyn Backend>],
        config: ExecConfig,
    ) -> Result<Executor> {
        Executor::new(Arc::new(Program::new(graph, weights, backends)?), config)
    }

    /// The program being run.
    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// The graph being run.
    pub fn graph(&self) -> &Graph {
        &self.program.graph
    }

    /// The sizes fixed at construction.
    pub fn config(&self) -> ExecConfig {
        self.config
    }

    /// Context size (KV positions per sequence).
    pub fn n_ctx(&self) -> usize {
        self.config.n_ctx
    }

    /// Bytes held by this executor: (activation arena, KV cache).
    pub fn memory(&self) -> (usize, usize) {
        (self.acts.len(), self.kv.bytes())
    }

    /// Starts (or stops) timing every node; see [`Executor::profile`].
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0); self.program.graph.len()]);
    }

    /// Time spent per op kind since profiling started: (label, seconds, calls), largest first.
    /// Matmuls are labelled with their weight type, and the node producing the graph's output
    /// (the LM head) on its own.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(p) = &self.profile else { return Vec::new() };
        let graph = &self.program.graph;
        let mut by_op: Vec<(String, f64, u64)> = Vec::new();
        for ((i, n), &(t, c)) in graph.iter().zip(p) {
            if c == 0 {
                continue;
            }
            let key = match (&n.op, graph.inputs(i).first().map(|&j| graph.node(j).fact.dtype)) {
                (Op::MatMulI2S | Op::MatMulF16 | Op::MatMulQ8_0 | Op::MatMulTQ, Some(w)) => {
                    let what = if graph.outputs().contains(&i) { "lm head".to_string() } else { w.to_string() };
                    format!("{} ({what})", n.op.name())
                }
                _ => n.op.name().to_string(),
            };
            match by_op.iter_mut().find(|e| e.0 == key) {
                Some(e) => {
                    e.1 += t;
                    e.2 += c;
                }
                None => by_op.push((key, t, c)),
            }
        }
        by_op.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        by_op
    }

    /// Forgets every sequence (all KV slots are zeroed where they were written).
    pub fn clear_kv(&mut self) {
        for s in 0..self.kv.n_slots {
            self.kv.clear_slot(s);
        }
    }

    /// Frees one sequence's KV slot for a new sequence.
    pub fn clear_slot(&mut self, slot: usize) {
        if slot < self.kv.n_slots {
            self.kv.clear_slot(slot);
        }
    }

    /// Runs one step of a single sequence in slot 0: `tokens` at positions
    /// `pos0..pos0 + tokens.len()`, producing the logits of the last `n_outputs` rows (0 when
    /// only the KV cache matters). Returns `[n_outputs, n_vocab]` row-major.
    pub fn forward(&mut self, tokens: &[u32], pos0: usize, n_outputs: usize) -> Result<&[f32]> {
        self.forward_hooked(tokens, pos0, n_outputs, None)
    }

    /// [`Executor::forward`] with a hook around every node.
    pub fn forward_hooked(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        n_outputs: usize,
        hook: Option<&mut dyn StepHook>,
    ) -> Result<&[f32]> {
        let t = tokens.len();
        if n_outputs > t {
            return Err(Error::runtime(format!("{n_outputs} output rows requested from a step of {t} tokens")));
        }
        let positions: Vec<u32> = (0..t).map(|k| u32::try_from(pos0 + k).unwrap_or(u32::MAX)).collect();
        let seqs = vec![0u32; t];
        let outputs: Vec<u32> = (t - n_outputs..t).map(|k| k as u32).collect();
        self.step_hooked(&Step { tokens, positions: &positions, seqs: &seqs, outputs: &outputs }, hook)
    }

    /// Runs one step. Returns the first graph output (the logits, `[O, n_vocab]`).
    pub fn step(&mut self, step: &Step<'_>) -> Result<&[f32]> {
        self.step_hooked(step, None)
    }

    /// [`Executor::step`] with a hook around every node.
    pub fn step_hooked(&mut self, step: &Step<'_>, hook: Option<&mut dyn StepHook>) -> Result<&[f32]> {
        self.validate(step)?;
        workers::on_pool(|| self.run(step, hook))?;
        let out = self.program.graph.outputs()[0];
        match self.view(out).data {
            Data::F32(v) => Ok(v),
            _ => Err(Error::runtime("graph output is not f32")),
        }
    }

    fn validate(&self, s: &Step<'_>) -> Result<()> {
        let t = s.tokens.len();
        if t == 0 {
            return Err(Error::runtime("a step needs at least one token"));
        }
        if t > self.config.max_tokens {
            return Err(Error::runtime(format!(
                "a step of {t} tokens exceeds the {} this executor was planned for",
                self.config.max_tokens
            )));
        }
        if s.positions.len() != t || s.seqs.len() != t {
            return Err(Error::runtime(format!(
                "{t} tokens with {} positions and {} sequence ids",
                s.positions.len(),
                s.seqs.len()
            )));
        }
        if s.outputs.len() > self.config.max_outputs.min(self.config.max_tokens) {
            return Err(Error::runtime(format!(
                "{} output rows exceed the {} this executor was planned for",
                s.outputs.len(),
                self.config.max_outputs
            )));
        }
        if s.outputs.windows(2).any(|w| w[0] >= w[1]) || s.outputs.last().is_some_and(|&o| o as usize >= t) {
            return Err(Error::runtime(format!("output rows {:?} are not increasing indices below {t}", s.outputs)));
        }
        if let Some(&p) = s.positions.iter().find(|&&p| p as usize >= self.config.n_ctx) {
            return Err(Error::runtime(format!("position {p} exceeds the context size {}", self.config.n_ctx)));
        }
        if let Some(&q) = s.seqs.iter().find(|&&q| q as usize >= self.config.n_slots) {
            return Err(Error::runtime(format!("sequence {q} does not exist (the cache holds {})", self.config.n_slots)));
        }
        Ok(())
    }

    fn run(&mut self, step: &Step<'_>, mut hook: Option<&mut dyn StepHook>) -> Result<()> {
        let b = Bindings { tokens: step.tokens.len(), outputs: step.outputs.len() };
        let program = &*self.program;
        let graph = &program.graph;
        for (i, n) in graph.iter() {
            self.dims[i] = n.fact.shape.resolve(b);
        }
        for (&s, &p) in step.seqs.iter().zip(step.positions) {
            self.kv.note_written(s as usize, p as usize);
        }
        for i in 0..graph.len() {
            let node = graph.node(i);
            let fill: Option<&[u32]> = match node.op {
                Op::InputTokens => Some(step.tokens),
                Op::InputPositions => Some(step.positions),
                Op::InputSeqs => Some(step.seqs),
                Op::InputOutputRows => Some(step.outputs),
                _ => None,
            };
            if let Some(values) = fill {
                let r = self.range(i)?;
                let out: &mut [i32] = bytemuck::cast_slice_mut(&mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.acts.buf)[r]);
                for (o, &v) in out.iter_mut().zip(values) {
                    *o = v as i32;
                }
                if let Some(h) = hook.as_deref_mut() {
                    h.after(i, node, &[], self.view(i));
                }
                continue;
            }
            let Some(planned) = &program.plans[i] else {
                // A view: its data is its source's, shown to the hook under its own dims.
                if let (Some(h), Op::Reshape { .. }) = (hook.as_deref_mut(), &node.op) {
                    let src = graph.inputs(i)[0];
                    h.after(i, node, &[self.view(src)], self.view(i));
                }
                continue;
            };
            let out_range = self.range(i)?;
            let dtype = node.fact.dtype;
            let arena: &mut [u8] = bytemuck::cast_slice_mut(&mut self.acts.buf);
            let (head, rest) = arena.split_at_mut(out_range.start);
            let (out_bytes, tail) = rest.split_at_mut(out_range.len());
            let mut inputs: Vec<TensorRef<'_>> = Vec::with_capacity(graph.inputs(i).len());
            // The kernel's inputs when it reads a prepared weight (hooks see the file layout).
            let mut prepared: Option<Vec<TensorRef<'_>>> = program.weights.has_prepared(i).then(Vec::new);
            for (slot, &j) in graph.inputs(i).iter().enumerate() {
                let dtype_j = graph.node(j).fact.dtype;
                let data = match &graph.node(j).op {
                    Op::Weight { .. } => program.weights.data(j, dtype_j),
                    _ => {
                        let (_, r) = self.acts.home[j].clone().ok_or_else(|| Error::runtime("input has no buffer"))?;
                        let len = memory::tensor_bytes(dtype_j, &self.dims[j]).unwrap_or(0);
                        let r = r.start..r.start + len;
                        let bytes: &[u8] = if r.end <= out_range.start {
                            &head[r]
                        } else if r.start >= out_range.end {
                            &tail[r.start - out_range.end..r.end - out_range.end]
                        } else {
                            return Err(Error::runtime(format!("node `{}`: input buffer overlaps the output", node.name)));
                        };
                        typed(dtype_j, bytes)
                    }
                };
                if let Some(p) = prepared.as_mut() {
                    let data = match &graph.node(j).op {
                        Op::Weight { .. } => program.weights.data_for(i, slot, j, dtype_j),
                        _ => data,
                    };
                    p.push(TensorRef { dtype: dtype_j, dims: &self.dims[j], data });
                }
                inputs.push(TensorRef { dtype: dtype_j, dims: &self.dims[j], data });
            }
            let mut out = TensorMut { dtype, dims: &self.dims[i], data: typed_mut(dtype, out_bytes) };
            let layer = match node.op {
                Op::Attention { layer, .. } => Some(layer),
                _ => None,
            };
            let mut kv = layer.and_then(|l| self.kv.layer(l));
            if let Some(h) = hook.as_deref_mut() {
                h.before(i, node, &inputs, kv.as_ref());
            }
            let t0 = self.profile.is_some().then(Instant::now);
            planned.kernel.run_prepared(prepared.as_deref().unwrap_or(&inputs), &mut out, kv.as_mut()).map_err(|e| {
                Error::runtime(format!(
                    "node `{}` ({}) on {}: {e}",
                    node.name,
                    node.op.info(),
                    program.backends[planned.backend].name()
                ))
            })?;
            if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                p[i].0 += t0.elapsed().as_secs_f64();
                p[i].1 += 1;
            }
            if let Some(h) = hook.as_deref_mut() {
                let out = TensorRef { dtype, dims: &self.dims[i], data: typed(dtype, out_bytes) };
                h.after(i, node, &inputs, out);
            }
        }
        Ok(())
    }

    /// The byte range of node `i`'s output in the current step.
    fn range(&self, i: NodeId) -> Result<Range<usize>> {
        let node = self.program.graph.node(i);
        let (_, r) = self.acts.home[i].clone().ok_or_else(|| Error::runtime(format!("node `{}` has no buffer", node.name)))?;
        let len = memory::tensor_bytes(node.fact.dtype, &self.dims[i])
            .ok_or_else(|| Error::runtime(format!("node `{}`: size overflows", node.name)))?;
        Ok(r.start..r.start + len)
    }

    /// The last computed output of a node (weights: their data). A node's buffer is reused
    /// after its last reader ran, so only the graph outputs, inputs still live at the end of
    /// the step, and nodes viewed from a [`StepHook`] during the step are meaningful.
    pub fn view(&self, id: NodeId) -> TensorRef<'_> {
        let node = self.program.graph.node(id);
        let data = match &node.op {
            Op::Weight { .. } => self.program.weights.data(id, node.fact.dtype),
            _ => match self.range(id) {
                Ok(r) => typed(node.fact.dtype, &bytemuck::cast_slice::<u64, u8>(&self.acts.buf)[r]),
                Err(_) => Data::Bytes(&[]),
            },
        };
        TensorRef { dtype: node.fact.dtype, dims: &self.dims[id], data }
    }

    /// Read access to one layer's KV cache (`k`, `v` in [`KvLayer`] layout, all slots).
    pub fn kv_layer(&self, layer: usize) -> Option<(&[half::f16], &[half::f16])> {
        self.kv.layers.get(layer)?.as_ref().map(|b| (&b.k[..], &b.v[..]))
    }
}

/// Views arena bytes as a node's element type.
fn typed(dtype: DType, bytes: &[u8]) -> Data<'_> {
    match dtype {
        DType::F32 => Data::F32(bytemuck::cast_slice(bytes)),
        DType::I32 => Data::I32(bytemuck::cast_slice(bytes)),
        _ => Data::Bytes(bytes),
    }
}

fn typed_mut(dtype: DType, bytes: &mut [u8]) -> DataMut<'_> {
    match dtype {
        DType::F32 => DataMut::F32(bytemuck::cast_slice_mut(bytes)),
        DType::I32 => DataMut::I32(bytemuck::cast_slice_mut(bytes)),
        _ => DataMut::Bytes(bytes),
    }
}
