//! The executor: runs a verified graph step by step on a chosen backend (falling back to
//! the scalar reference per node), owning every buffer and the KV cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use half::f16;

use crate::backend::{Backend, Data, DataMut, KvLayer, TensorMut, TensorRef};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::shape::{Bindings, TensorFact};
use crate::DType;

/// Where weight bytes come from (the model file). Implemented by the GGUF frontend.
pub trait WeightSource {
    /// The raw bytes of a weight tensor, in its file layout.
    fn weight_bytes(&self, name: &str) -> Option<&[u8]>;

    /// Copies a weight's bytes into `dst` (exactly its size); false if unknown or the size
    /// differs. A file-backed source may read the file directly instead of touching its
    /// map, so the copy does not also make the mapped pages resident.
    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> bool {
        match self.weight_bytes(name) {
            Some(b) if b.len() == dst.len() => {
                dst.copy_from_slice(b);
                true
            }
            _ => false,
        }
    }
}

/// An owned node output.
#[derive(Debug, Clone, Default)]
pub enum Buffer {
    /// No data (sources, freed buffers).
    #[default]
    None,
    /// f32 elements.
    F32(Vec<f32>),
    /// i32 elements.
    I32(Vec<i32>),
    /// bytes (q8_tok).
    Bytes(Vec<u8>),
}

enum WeightData<'w> {
    /// Borrowed from the model file's map.
    Bytes(&'w [u8]),
    /// A range of the executor's weight arena.
    Arena(std::ops::Range<usize>),
    /// Decoded f32 (norm vectors).
    F32(Vec<f32>),
}

/// Where the executor keeps the quantized weights: one anonymous mapping advised for
/// transparent huge pages, filled once at start-up. Streaming weights from it instead of
/// from the file's 4 KiB-page map measured 14.1 → 15.3 tok/s decode on the 2B-shape model
/// (2 threads, `bench -p 0 -n 32`, Intel Xeon VM, 2026-11-26), and reading the file into it
/// keeps the mapped pages out of the resident set.
struct Arena {
    map: memmap2::MmapMut,
}

/// Alignment of each weight inside the arena (a cache line).
const ARENA_ALIGN: usize = 64;

struct KvBuf {
    k: Vec<f16>,
    v: Vec<f16>,
}

/// Byte/element count of a node output with concrete dims.
fn alloc_len(dtype: DType, dims: &[usize]) -> usize {
    let k = dims.last().copied().unwrap_or(1);
    let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
    match dtype {
        // Elements for f32/i32 buffers; bytes for the quantized activation types.
        DType::F32 | DType::I32 => dims.iter().product(),
        other => other.nbytes(k, rows).unwrap_or(0),
    }
}

/// Runs a graph.
///
/// ## Design
/// The executor owns everything with a lifetime longer than one kernel call: node buffers
/// (recycled as soon as their last consumer ran), the f16 KV cache of every attention
/// layer, and the plan that assigns each node to a backend: the preferred backend where it
/// [`Backend::supports`] the node, otherwise the scalar reference given as `fallback`. It
/// does not know file formats: weights come through [`WeightSource`] and are borrowed, not
/// copied (F32 weights, which are small norm vectors, are decoded once at start-up).
pub struct Executor<'w> {
    graph: Graph,
    weights: Vec<Option<WeightData<'w>>>,
    arena: Option<Arena>,
    backends: Vec<Arc<dyn Backend>>,
    plan: Vec<usize>,
    kv: Vec<Option<KvBuf>>,
    n_ctx: usize,
    bufs: Vec<Buffer>,
    dims: Vec<Vec<usize>>,
    last_use: Vec<usize>,
    pool: Vec<Buffer>,
    /// Per-node accumulated seconds and calls, when profiling.
    profile: Option<Vec<(f64, u64)>>,
}

/// What a step observer sees: the node, its id and its output.
pub type Observer<'a> = dyn FnMut(NodeId, &Node, TensorRef<'_>) + Send + 'a;

/// What a checked step reports per node: id, node, the plan's output, the other backend's.
pub type CheckCallback<'a> = dyn FnMut(NodeId, &Node, TensorRef<'_>, TensorRef<'_>) + Send + 'a;

impl<'w> Executor<'w> {
    /// Plans `graph` on `preferred` (or only `fallback` when `None`), binding the weights
    /// and allocating a KV cache of `n_ctx` positions per attention layer.
    pub fn new(
        graph: Graph,
        weights: &'w dyn WeightSource,
        preferred: Option<Arc<dyn Backend>>,
        fallback: Arc<dyn Backend>,
        n_ctx: usize,
    ) -> Result<Executor<'w>> {
        if n_ctx == 0 {
            return Err(Error::runtime("context size must be at least 1"));
        }
        let mut backends = vec![fallback];
        if let Some(p) = preferred {
            backends.push(p);
        }
        let mut wdata = Vec::with_capacity(graph.nodes().len());
        let mut plan = Vec::with_capacity(graph.nodes().len());
        let mut kv = Vec::new();
        for n in graph.nodes() {
            wdata.push(match &n.op {
                Op::Weight { name, fact } => Some(bind_weight(name, fact, weights)?),
                _ => None,
            });
            let facts: Vec<&TensorFact> = n.inputs.iter().map(|&i| &graph.node(i).fact).collect();
            let choice = if n.op.is_source() {
                0
            } else {
                match backends.iter().rposition(|b| b.supports(&n.op, &facts)) {
                    Some(i) => i,
                    None => {
                        return Err(ErrorKind::Unsupported {
                            backend: backends[0].name().into(),
                            node: n.name.clone(),
                            op: n.op.info(),
                        }
                        .into())
                    }
                }
            };
            plan.push(choice);
            if let Op::Attention { layer, n_head_kv, head_dim, .. } = n.op {
                if kv.len() <= layer {
                    kv.resize_with(layer + 1, || None);
                }
                let len = n_head_kv
                    .checked_mul(head_dim)
                    .and_then(|x| x.checked_mul(kv_stride(n_ctx)))
                    .ok_or_else(|| Error::runtime("KV cache size overflows"))?;
                // Zeroed allocations stay lazy: only the positions a run reaches become resident.
                kv[layer] = Some(KvBuf { k: bytemuck::zeroed_vec(len), v: bytemuck::zeroed_vec(len) });
            }
        }
        let arena = build_arena(&graph, &mut wdata, weights)?;
        let n = graph.nodes().len();
        let mut last_use = vec![0usize; n];
        for (i, node) in graph.nodes().iter().enumerate() {
            for &j in &node.inputs {
                last_use[j] = last_use[j].max(i);
            }
        }
        for &o in graph.outputs() {
            last_use[o] = usize::MAX;
        }
        Ok(Executor {
            graph,
            weights: wdata,
            arena,
            backends,
            plan,
            kv,
            n_ctx,
            bufs: vec![Buffer::None; n],
            dims: vec![Vec::new(); n],
            last_use,
            pool: Vec::new(),
            profile: None,
        })
    }

    /// The graph being run.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Context size (KV positions per layer).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The backend and kernel chosen for each node (`None` for sources), for dumps.
    pub fn kernel_names(&self) -> Vec<Option<String>> {
        self.graph
            .nodes()
            .iter()
            .zip(&self.plan)
            .map(|(n, &b)| {
                if n.op.is_source() {
                    return None;
                }
                let facts: Vec<&TensorFact> = n.inputs.iter().map(|&i| &self.graph.node(i).fact).collect();
                let be = &self.backends[b];
                Some(format!("{}:{}", be.name(), be.kernel_name(&n.op, &facts)))
            })
            .collect()
    }

    /// One line saying which backend runs which ops ("scalar: 81 nodes").
    pub fn plan_summary(&self) -> String {
        let mut counts = vec![0usize; self.backends.len()];
        let mut fell_back: Vec<&str> = Vec::new();
        for (n, &b) in self.graph.nodes().iter().zip(&self.plan) {
            if n.op.is_source() {
                continue;
            }
            counts[b] += 1;
            if b == 0 && self.backends.len() > 1 && !fell_back.contains(&n.op.name()) {
                fell_back.push(n.op.name());
            }
        }
        let mut parts: Vec<String> = self
            .backends
            .iter()
            .zip(&counts)
            .rev()
            .filter(|(_, &c)| c > 0)
            .map(|(b, c)| format!("{}: {c} nodes", b.name()))
            .collect();
        if !fell_back.is_empty() {
            parts.push(format!("fallback to scalar for {}", fell_back.join(", ")));
        }
        parts.join("; ")
    }

    /// Starts (or stops) timing every node; see [`Executor::profile`].
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0); self.graph.nodes().len()]);
    }

    /// Time spent per op kind since profiling started: (op name, seconds, calls), largest
    /// first.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(p) = &self.profile else { return Vec::new() };
        let mut by_op: Vec<(String, f64, u64)> = Vec::new();
        for (n, &(t, c)) in self.graph.nodes().iter().zip(p) {
            if c == 0 {
                continue;
            }
            let key = match (&n.op, n.inputs.first().map(|&i| self.graph.node(i).fact.dtype)) {
                (Op::MatMulI2S | Op::MatMulF16 | Op::MatMulQ8_0 | Op::MatMulTQ, Some(w)) => {
                    format!("{} ({})", n.op.name(), if n.name == "result_output" { "lm head".to_string() } else { w.to_string() })
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

    /// Forgets the KV cache contents (positions restart at 0).
    pub fn clear_kv(&mut self) {
        for kv in self.kv.iter_mut().flatten() {
            kv.k.fill(f16::ZERO);
            kv.v.fill(f16::ZERO);
        }
    }

    /// Runs one step: `tokens` at positions `pos0..pos0 + tokens.len()`, producing the
    /// outputs of the last `n_outputs` rows (0 when only the KV cache matters). Returns the first graph output (the logits,
    /// `[n_outputs, n_vocab]` row-major).
    pub fn forward(&mut self, tokens: &[u32], pos0: usize, n_outputs: usize) -> Result<&[f32]> {
        self.forward_observed(tokens, pos0, n_outputs, None)
    }

    /// [`Executor::forward`], calling `observer` after each computed node.
    pub fn forward_observed(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        n_outputs: usize,
        observer: Option<&mut Observer<'_>>,
    ) -> Result<&[f32]> {
        self.run(tokens, pos0, n_outputs, observer, None)
    }

    /// [`Executor::forward`] that also evaluates every node `other` supports on the same
    /// inputs (and a copy of the KV cache), handing both outputs to `cb`. The plan's
    /// outputs are the ones that propagate: this is the isolated cross-check.
    pub fn forward_checked(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        n_outputs: usize,
        other: &dyn Backend,
        cb: &mut CheckCallback<'_>,
    ) -> Result<&[f32]> {
        self.run(tokens, pos0, n_outputs, None, Some((other, cb)))
    }

    fn run(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        n_outputs: usize,
        observer: Option<&mut Observer<'_>>,
        check: Option<(&dyn Backend, &mut CheckCallback<'_>)>,
    ) -> Result<&[f32]> {
        // Run the whole step on a worker of the thread pool, so each kernel's parallel loop
        // splits work with the other workers directly instead of every loop being injected
        // from (and waited on by) an outside thread: one cross-thread hand-off per step
        // instead of one per parallel kernel. The other workers are kept awake for the
        // step (`keep_awake`), so a kernel's tasks are taken at once instead of after a
        // sleeping worker's wake-up: 2B shape, 2 threads, `bench -p 0 -n 32 --profile`, A/B
        // twice: I2_S matmuls 25.9/25.0 → 21.6/21.8 ms per token, tg 19.7/20.0 → 21.9/21.4
        // tok/s. See also the README's performance notes.
        if rayon::current_thread_index().is_none() {
            let mut res = Err(Error::runtime("step did not run"));
            let done = AtomicBool::new(false);
            let done = &done;
            rayon::scope(|s| {
                let main = rayon::current_thread_index();
                for _ in 1..rayon::current_num_threads() {
                    s.spawn(move |_| keep_awake(done, main));
                }
                // Set even if the step panics: the scope waits for the helpers before it
                // passes the panic on, so they must stop (else a panic becomes a hang).
                let _stop = StopOnDrop(done);
                res = self.run_step(tokens, pos0, n_outputs, observer, check).map(|_| ());
            });
            res?;
            let out = self.graph.outputs()[0];
            return match &self.bufs[out] {
                Buffer::F32(v) => Ok(v),
                _ => Err(Error::runtime("graph output is not f32")),
            };
        }
        self.run_step(tokens, pos0, n_outputs, observer, check)
    }

    fn run_step(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        n_outputs: usize,
        mut observer: Option<&mut Observer<'_>>,
        mut check: Option<(&dyn Backend, &mut CheckCallback<'_>)>,
    ) -> Result<&[f32]> {
        let t = tokens.len();
        if t == 0 {
            return Err(Error::runtime("a step needs at least one token"));
        }
        if n_outputs > t {
            return Err(Error::runtime(format!("{n_outputs} output rows requested from a step of {t} tokens")));
        }
        match pos0.checked_add(t) {
            Some(end) if end <= self.n_ctx => {}
            _ => {
                return Err(Error::runtime(format!(
                    "positions {pos0}..{} exceed the context size {}",
                    pos0.saturating_add(t),
                    self.n_ctx
                )))
            }
        }
        let b = Bindings { tokens: t, outputs: n_outputs };
        for i in 0..self.graph.nodes().len() {
            self.dims[i] = self.graph.node(i).fact.shape.resolve(b);
        }
        for i in 0..self.graph.nodes().len() {
            let node = &self.graph.nodes()[i];
            let (weights, bufs, dims, kvs) = (&self.weights, &mut self.bufs, &self.dims, &mut self.kv);
            match &node.op {
                Op::Weight { .. } => continue,
                Op::InputTokens => {
                    let v = tokens.iter().map(|&x| x as i32).collect();
                    bufs[i] = Buffer::I32(v);
                }
                Op::InputPositions => {
                    let v = (0..t).map(|k| (pos0 + k) as i32).collect();
                    bufs[i] = Buffer::I32(v);
                }
                op => {
                    let mut out = take_buffer(&mut self.pool, node.fact.dtype, &dims[i]);
                    let stride = kv_stride(self.n_ctx);
                    let inputs: Vec<TensorRef<'_>> =
                        node.inputs.iter().map(|&j| view_of(&self.graph, self.arena.as_ref(), weights, bufs, dims, j)).collect();
                    // The other backend of a checked run sees the same inputs and, for
                    // attention, the KV cache as it was before this node.
                    let facts: Vec<&TensorFact> = node.inputs.iter().map(|&j| &self.graph.node(j).fact).collect();
                    let other = check.as_ref().map(|(b, _)| *b).filter(|b| b.supports(op, &facts));
                    let mut kv_copy = match (other, op) {
                        (Some(_), Op::Attention { layer, .. }) => kvs[*layer].as_ref().map(|k| KvBuf { k: k.k.clone(), v: k.v.clone() }),
                        _ => None,
                    };
                    let backend = &self.backends[self.plan[i]];
                    let kv = match op {
                        Op::Attention { layer, .. } => kvs[*layer].as_mut(),
                        _ => None,
                    };
                    let t0 = self.profile.is_some().then(std::time::Instant::now);
                    eval_node(backend.as_ref(), node, &inputs, &mut out, &dims[i], kv, stride)?;
                    if let (Some(t0), Some(p)) = (t0, self.profile.as_mut()) {
                        p[i].0 += t0.elapsed().as_secs_f64();
                        p[i].1 += 1;
                    }
                    if let (Some(ob), Some((_, cb))) = (other, check.as_mut()) {
                        let mut out2 = take_buffer(&mut self.pool, node.fact.dtype, &dims[i]);
                        eval_node(ob, node, &inputs, &mut out2, &dims[i], kv_copy.as_mut(), stride)?;
                        let a = buffer_ref(&out, node.fact.dtype, &dims[i]);
                        let b = buffer_ref(&out2, node.fact.dtype, &dims[i]);
                        cb(i, node, a, b);
                        self.pool.push(out2);
                    }
                    drop(inputs);
                    bufs[i] = out;
                }
            }
            if let Some(obs) = observer.as_deref_mut() {
                obs(i, &self.graph.nodes()[i], self.view(i));
            }
            // Recycle the buffers whose last consumer this node was.
            for k in 0..self.graph.node(i).inputs.len() {
                let j = self.graph.node(i).inputs[k];
                if self.last_use[j] == i {
                    let b = std::mem::take(&mut self.bufs[j]);
                    if matches!(b, Buffer::F32(_) | Buffer::Bytes(_)) {
                        self.pool.push(b);
                    }
                }
            }
        }
        let out = self.graph.outputs()[0];
        match &self.bufs[out] {
            Buffer::F32(v) => Ok(v),
            _ => Err(Error::runtime("graph output is not f32")),
        }
    }

    /// The last computed output of a node (weights: their data).
    pub fn view(&self, id: NodeId) -> TensorRef<'_> {
        view_of(&self.graph, self.arena.as_ref(), &self.weights, &self.bufs, &self.dims, id)
    }

    /// Read access to one layer's KV cache (`k`, `v` in [`KvLayer`] layout).
    pub fn kv_layer(&self, layer: usize) -> Option<(&[f16], &[f16])> {
        self.kv.get(layer)?.as_ref().map(|b| (&b.k[..], &b.v[..]))
    }
}

fn view_of<'a>(
    graph: &'a Graph,
    arena: Option<&'a Arena>,
    weights: &'a [Option<WeightData<'_>>],
    bufs: &'a [Buffer],
    dims: &'a [Vec<usize>],
    id: NodeId,
) -> TensorRef<'a> {
    let node = graph.node(id);
    let dims = &dims[id];
    let data = match (&weights[id], &bufs[id]) {
        (Some(WeightData::Bytes(b)), _) => Data::Bytes(b),
        (Some(WeightData::Arena(r)), _) => Data::Bytes(&arena.expect("arena exists when a weight is in it").map[r.clone()]),
        (Some(WeightData::F32(v)), _) => Data::F32(v),
        (None, Buffer::F32(v)) => Data::F32(v),
        (None, Buffer::I32(v)) => Data::I32(v),
        (None, Buffer::Bytes(v)) => Data::Bytes(v),
        (None, Buffer::None) => Data::Bytes(&[]),
    };
    TensorRef { dtype: node.fact.dtype, dims, data }
}

fn take_buffer(pool: &mut Vec<Buffer>, dtype: DType, dims: &[usize]) -> Buffer {
    let n = alloc_len(dtype, dims);
    let want_f32 = dtype == DType::F32;
    // The smallest pooled buffer of the right kind that holds `n` without growing (so
    // without a reallocation or zero-filling new elements), else the largest one.
    let cap = |b: &Buffer| match (b, want_f32) {
        (Buffer::F32(v), true) => Some(v.capacity()),
        (Buffer::Bytes(v), false) => Some(v.capacity()),
        _ => None,
    };
    let fits = pool.iter().enumerate().filter_map(|(i, b)| cap(b).filter(|&c| c >= n).map(|c| (c, i))).min();
    let pos = fits.or_else(|| pool.iter().enumerate().filter_map(|(i, b)| cap(b).map(|c| (c, i))).max()).map(|(_, i)| i);
    let mut b =
        pos.map(|p| pool.swap_remove(p)).unwrap_or(if want_f32 { Buffer::F32(Vec::new()) } else { Buffer::Bytes(Vec::new()) });
    match &mut b {
        Buffer::F32(v) => v.resize(n, 0.0),
        Buffer::Bytes(v) => v.resize(n, 0),
        _ => {}
    }
    b
}

/// Positions per KV-cache row: the context rounded up to a multiple of 32, so attention
/// can read the zero-padded `n_kv` that ggml uses without bounds special cases.
pub fn kv_stride(n_ctx: usize) -> usize {
    n_ctx.div_ceil(32) * 32
}

fn eval_node(
    backend: &dyn Backend,
    node: &Node,
    inputs: &[TensorRef<'_>],
    out: &mut Buffer,
    dims: &[usize],
    kv: Option<&mut KvBuf>,
    stride: usize,
) -> Result<()> {
    let mut om = buffer_mut(out, node.fact.dtype, dims);
    let res = match kv {
        Some(kvb) => {
            let mut layer = KvLayer { k: &mut kvb.k, v: &mut kvb.v, n_ctx: stride };
            backend.eval(&node.op, inputs, &mut om, Some(&mut layer))
        }
        None => backend.eval(&node.op, inputs, &mut om, None),
    };
    res.map_err(|e| Error::runtime(format!("node `{}` ({}) on {}: {e}", node.name, node.op.info(), backend.name())))
}

fn buffer_ref<'a>(b: &'a Buffer, dtype: DType, dims: &'a [usize]) -> TensorRef<'a> {
    let data = match b {
        Buffer::F32(v) => Data::F32(v),
        Buffer::I32(v) => Data::I32(v),
        Buffer::Bytes(v) => Data::Bytes(v),
        Buffer::None => Data::Bytes(&[]),
    };
    TensorRef { dtype, dims, data }
}

fn buffer_mut<'a>(b: &'a mut Buffer, dtype: DType, dims: &'a [usize]) -> TensorMut<'a> {
    let data = match b {
        Buffer::F32(v) => DataMut::F32(v),
        Buffer::I32(v) => DataMut::I32(v),
        Buffer::Bytes(v) => DataMut::Bytes(v),
        Buffer::None => DataMut::Bytes(&mut []),
    };
    TensorMut { dtype, dims, data }
}

/// Copies every borrowed (quantized) weight into one huge-page-advised anonymous mapping
/// and points the weights at it. Falls back to the borrowed bytes when the mapping cannot
/// be made.
fn build_arena(graph: &Graph, wdata: &mut [Option<WeightData<'_>>], src: &dyn WeightSource) -> Result<Option<Arena>> {
    // A table read only by embedding lookups touches one row per token: it stays borrowed
    // from the file (with `--lm-head q8` the F16 embedding is such a table).
    let only_lookup = |id: NodeId| {
        graph.nodes().iter().filter(|n| n.inputs.contains(&id)).all(|n| matches!(n.op, Op::Embedding))
    };
    let mut total = 0usize;
    for (i, w) in wdata.iter().enumerate() {
        if let Some(WeightData::Bytes(b)) = w {
            if !only_lookup(i) {
                total = total
                    .checked_add(b.len().div_ceil(ARENA_ALIGN) * ARENA_ALIGN)
                    .ok_or_else(|| Error::runtime("weights overflow"))?;
            }
        }
    }
    if total == 0 || std::env::var_os("BITNET_NO_ARENA").is_some() {
        return Ok(None);
    }
    let Ok(mut map) = memmap2::MmapMut::map_anon(total) else { return Ok(None) };
    // Advice only: where transparent huge pages are unavailable nothing changes.
    let _ = map.advise(memmap2::Advice::HugePage);
    let mut off = 0usize;
    for (i, w) in wdata.iter_mut().enumerate() {
        let Some(WeightData::Bytes(b)) = w else { continue };
        if only_lookup(i) {
            continue;
        }
        let len = b.len();
        let name = graph.node(i).weight_name().unwrap_or_default();
        if !src.copy_weight(name, &mut map[off..off + len]) {
            return Err(Error::runtime(format!("weight `{name}` could not be read")));
        }
        *w = Some(WeightData::Arena(off..off + len));
        off += len.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
    }
    Ok(Some(Arena { map }))
}

fn bind_weight<'w>(name: &str, fact: &TensorFact, src: &'w dyn WeightSource) -> Result<WeightData<'w>> {
    let bytes = src.weight_bytes(name).ok_or_else(|| Error::runtime(format!("weight `{name}` is not in the model file")))?;
    let dims = fact.shape.fixed_len().map(|_| fact.shape.resolve(Bindings { tokens: 0, outputs: 0 }));
    let dims = dims.ok_or_else(|| Error::runtime(format!("weight `{name}` has a symbolic shape")))?;
    let row = dims.last().copied().unwrap_or(1);
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let want = fact.dtype.nbytes(row, rows).ok_or_else(|| Error::runtime(format!("weight `{name}`: invalid size")))?;
    if bytes.len() != want {
        return Err(Error::runtime(format!("weight `{name}`: {} bytes, expected {want} for {fact}", bytes.len())));
    }
    Ok(if fact.dtype == DType::F32 {
        WeightData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    } else {
        WeightData::Bytes(bytes)
    })
}

/// Keeps a pool worker busy (so never asleep) until `done`: it runs the pool's pending jobs
/// as they appear (the kernels' parallel loops) and spins in between. Does nothing on the
/// thread running the step itself (`main`), which may pick this job up while it waits.
/// After [`IDLE_SPINS`] looks without work it gives its core to the OS scheduler once
/// (`sched_yield`): with a core per thread that returns at once, but with more threads than
/// cores (`-t` above the core count, or a busy machine) a spinning helper must not keep
/// the thread that runs the step off a core.
fn keep_awake(done: &AtomicBool, main: Option<usize>) {
    if rayon::current_thread_index() == main {
        return;
    }
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
        } else {
            idle += 1;
            if idle.is_multiple_of(IDLE_SPINS) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Sets its flag when dropped, unwinding included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Empty looks for work after which a kept-awake worker yields its core once.
const IDLE_SPINS: u32 = 64;
