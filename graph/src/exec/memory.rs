//! Memory: the weights (bound once), the activations (one arena, offsets planned statically
//! from the graph's liveness), and the KV cache (one slot per sequence).

use std::ops::Range;
use std::sync::Arc;

use half::f16;

use crate::backend::{Data, KvLayer};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::shape::{Bindings, TensorFact};
use crate::DType;

use super::plan::Planned;
use super::WeightSource;
use crate::backend::WeightPrep;

/// Alignment of every buffer in the weight and activation arenas (a cache line).
const ALIGN: usize = 64;

fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|x| x / ALIGN * ALIGN)
}

/// Bytes of a tensor of `dtype` with these concrete dims.
pub(crate) fn tensor_bytes(dtype: DType, dims: &[usize]) -> Option<usize> {
    dtype.tensor_bytes(dims)
}

/// Where a weight's bytes live.
enum WeightLoc {
    /// A range of the weight arena.
    Arena(Range<usize>),
    /// Left in the weight source (a table read only by embedding lookups touches one row per
    /// token, so it stays mapped: with `--lm-head q8` the F16 embedding is such a table).
    Source(String),
}

/// The weights of a graph, bound once: every weight a kernel streams is read (with checked
/// reads, [`WeightSource::copy_weight`]) into one anonymous mapping advised for transparent
/// huge pages. Streaming from it instead of from the file's 4 KiB-page map measured 14.1 →
/// 15.3 tok/s decode on the 2B-shape model (2 threads, `bench -p 0 -n 32`, Intel Xeon VM,
/// 2026-11-26), and reading the file into it keeps the mapped pages out of the resident set.
///
/// A weight that a kernel takes in a layout of its own ([`crate::WeightPrep`]) is prepared
/// once here, from a checked copy of its file bytes, into the same arena; the file-layout
/// copy is kept only if some node reads the weight as it is (else hooks and views read it
/// from the source).
pub(crate) struct Weights {
    src: Arc<dyn WeightSource>,
    locs: Vec<Option<WeightLoc>>,
    /// Per consumer node: the input slot its kernel takes prepared, and where that is.
    prepared: Vec<Option<(usize, Range<usize>)>>,
    arena: Arena,
}

enum Arena {
    Map(memmap2::MmapMut),
    /// When no anonymous mapping can be made (or `BITNET_NO_ARENA` is set): heap memory.
    Heap(Vec<u64>),
}

impl Arena {
    fn new(bytes: usize) -> Result<Arena> {
        if bytes > 0 && std::env::var_os("BITNET_NO_ARENA").is_none() {
            if let Ok(map) = memmap2::MmapMut::map_anon(bytes) {
                // Advice only: where transparent huge pages are unavailable nothing changes.
                let _ = map.advise(memmap2::Advice::HugePage);
                return Ok(Arena::Map(map));
            }
        }
        Ok(Arena::Heap(bytemuck::zeroed_vec(bytes.div_ceil(8))))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Arena::Map(m) => m,
            Arena::Heap(v) => bytemuck::cast_slice(v),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Arena::Map(m) => m,
            Arena::Heap(v) => bytemuck::cast_slice_mut(v),
        }
    }
}

impl Weights {
    /// Binds every weight of `graph`: sizes checked against the facts, then one copy, and
    /// one prepared copy per layout the planned kernels (`plans`) ask for.
    pub(crate) fn bind(graph: &Graph, src: Arc<dyn WeightSource>, plans: &[Option<Planned>]) -> Result<Weights> {
        let only_lookup = |id: NodeId| graph.consumers(id).iter().all(|&c| matches!(graph.node(c).op, Op::Embedding));
        // The weight slot each node's kernel takes prepared, and how.
        let prep_of = |c: NodeId| -> Option<&WeightPrep> {
            let prep = plans.get(c)?.as_ref()?.kernel.weight_prep()?;
            graph.inputs(c).get(prep.input).filter(|&&j| matches!(graph.node(j).op, Op::Weight { .. })).map(|_| prep)
        };
        let mut locs: Vec<Option<WeightLoc>> = (0..graph.len()).map(|_| None).collect();
        let mut total = 0usize;
        let mut place = |len: usize| -> Result<Range<usize>> {
            let start = total;
            total = start.checked_add(len).and_then(align_up).ok_or_else(|| Error::runtime("weights overflow"))?;
            Ok(start..start + len)
        };
        let mut copies: Vec<(NodeId, String, Range<usize>)> = Vec::new();
        let mut preps: Vec<PrepCopy> = Vec::new();
        for (i, n) in graph.iter() {
            let Op::Weight { name, fact } = &n.op else { continue };
            let want = weight_bytes(name, fact)?;
            let have = src.weight_len(name).ok_or_else(|| Error::runtime(format!("weight `{name}` is not in the model file")))?;
            if have != want {
                return Err(Error::runtime(format!("weight `{name}`: {have} bytes, expected {want} for {fact}")));
            }
            let consumers = graph.consumers(i);
            let dims = fact.shape.resolve(Bindings { tokens: 0, outputs: 0 });
            for &c in &consumers {
                let Some(prep) = prep_of(c).filter(|p| graph.inputs(c)[p.input] == i) else { continue };
                if preps.iter().any(|p| p.id == i && p.layout == prep.layout) {
                    continue;
                }
                let len = (prep.len)(&dims).ok_or_else(|| {
                    Error::runtime(format!(
                        "weight `{name}` {fact}: no {} layout for it (node `{}`)",
                        prep.layout,
                        graph.node(c).name
                    ))
                })?;
                preps.push(PrepCopy {
                    id: i,
                    name: name.clone(),
                    dims: dims.clone(),
                    layout: prep.layout,
                    at: place(len)?,
                    prep: prep.clone(),
                });
            }
            // Read as it is by some node (a slot that is not prepared)?
            let as_is = consumers.iter().any(|&c| {
                let prepared = prep_of(c).map(|p| p.input);
                graph.inputs(c).iter().enumerate().any(|(slot, &j)| j == i && prepared != Some(slot))
            });
            if !as_is || (only_lookup(i) && fact.dtype != DType::F32) {
                locs[i] = Some(WeightLoc::Source(name.clone()));
                continue;
            }
            copies.push((i, name.clone(), place(want)?));
        }
        let mut arena = Arena::new(total)?;
        let bytes = arena.bytes_mut();
        for (i, name, r) in copies {
            src.copy_weight(&name, &mut bytes[r.clone()]).map_err(|e| Error::runtime(format!("weight `{name}`: {e}")))?;
            locs[i] = Some(WeightLoc::Arena(r));
        }
        let mut prepared: Vec<Option<(usize, Range<usize>)>> = vec![None; graph.len()];
        let mut file = Vec::new();
        for PrepCopy { id: i, name, dims, layout, at: r, prep } in preps {
            // A checked copy of the file bytes (a file changed under us is an error, not a fault).
            file.resize(src.weight_len(&name).unwrap_or(0), 0u8);
            src.copy_weight(&name, &mut file).map_err(|e| Error::runtime(format!("weight `{name}`: {e}")))?;
            (prep.prepare)(&file, &dims, &mut bytes[r.clone()])
                .map_err(|e| Error::runtime(format!("weight `{name}`: preparing the {layout} layout: {e}")))?;
            for c in graph.consumers(i) {
                if let Some(p) = prep_of(c).filter(|p| p.layout == layout && graph.inputs(c)[p.input] == i) {
                    prepared[c] = Some((p.input, r.clone()));
                }
            }
        }
        Ok(Weights { src, locs, prepared, arena })
    }

    /// The data node `consumer` reads at input `slot`, which is weight node `id`: its prepared
    /// copy if the consumer's kernel takes that slot prepared, else the weight as it is.
    pub(crate) fn data_for(&self, consumer: NodeId, slot: usize, id: NodeId, dtype: DType) -> Data<'_> {
        match &self.prepared[consumer] {
            Some((s, r)) if *s == slot => Data::Bytes(&self.arena.bytes()[r.clone()]),
            _ => self.data(id, dtype),
        }
    }

    /// Whether node `consumer`'s kernel reads a prepared weight.
    pub(crate) fn has_prepared(&self, consumer: NodeId) -> bool {
        self.prepared[consumer].is_some()
    }

    /// Bytes copied into the weight arena.
    pub(crate) fn arena_len(&self) -> usize {
        self.arena.bytes().len()
    }

    /// The data of weight node `id`.
    pub(crate) fn data(&self, id: NodeId, dtype: DType) -> Data<'_> {
        let bytes: &[u8] = match &self.locs[id] {
            Some(WeightLoc::Arena(r)) => &self.arena.bytes()[r.clone()],
            Some(WeightLoc::Source(name)) => self.src.weight_bytes(name).unwrap_or(&[]),
            None => &[],
        };
        if dtype == DType::F32 {
            Data::F32(bytemuck::cast_slice(bytes))
        } else {
            Data::Bytes(bytes)
        }
    }
}

/// One prepared copy to make: weight `id` (`name`, `dims`) in `layout`, at `at` in the arena.
struct PrepCopy {
    id: NodeId,
    name: String,
    dims: Vec<usize>,
    layout: &'static str,
    at: Range<usize>,
    prep: WeightPrep,
}

fn weight_bytes(name: &str, fact: &TensorFact) -> Result<usize> {
    let dims = fact
        .shape
        .fixed_len()
        .map(|_| fact.shape.resolve(Bindings { tokens: 0, outputs: 0 }))
        .ok_or_else(|| Error::runtime(format!("weight `{name}` has a symbolic shape")))?;
    tensor_bytes(fact.dtype, &dims).ok_or_else(|| Error::runtime(format!("weight `{name}`: invalid size for {fact}")))
}

/// The activation arena: every node output that is computed or filled per step has a fixed
/// byte range, planned once from the graph's liveness at the largest step the executor
/// accepts (`max` bindings). A node's range is free again after its last consumer ran, so
/// later nodes reuse it; sizes only shrink for smaller steps, so the same offsets serve
/// every step. A view ([`Op::Reshape`]) has no range of its own: it reads its source's.
pub(crate) struct Activations {
    /// Per node: the node whose buffer holds its data (itself, or a view's source), and that
    /// buffer's range at the planned maximum.
    pub(crate) home: Vec<Option<(NodeId, Range<usize>)>>,
    /// The arena.
    pub(crate) buf: Vec<u64>,
}

impl Activations {
    /// Plans the ranges for `max` bindings. `keep` nodes (the graph outputs) stay live to the
    /// end of the step.
    pub(crate) fn plan(graph: &Graph, max: Bindings) -> Result<Activations> {
        let n = graph.len();
        // The node owning each node's storage: a view reads its source's.
        let mut owner: Vec<NodeId> = (0..n).collect();
        for (i, node) in graph.iter() {
            if matches!(node.op, Op::Reshape { .. }) {
                owner[i] = owner[graph.inputs(i)[0]];
            }
        }
        // Liveness in execution order: from the producer to the last reader of it or of a view.
        let mut last = vec![0usize; n];
        for (i, _) in graph.iter() {
            last[owner[i]] = last[owner[i]].max(i);
            for &j in graph.inputs(i) {
                last[owner[j]] = last[owner[j]].max(i);
            }
        }
        for &o in graph.outputs() {
            last[owner[o]] = usize::MAX;
        }
        // Buffers: computed nodes and the per-step inputs (weights are bound elsewhere).
        let mut bufs: Vec<(usize, NodeId)> = Vec::new();
        for (i, node) in graph.iter() {
            if owner[i] != i || matches!(node.op, Op::Weight { .. }) {
                continue;
            }
            let dims = node.fact.shape.resolve(max);
            let bytes = tensor_bytes(node.fact.dtype, &dims)
                .and_then(align_up)
                .ok_or_else(|| Error::runtime(format!("node `{}`: output size overflows", node.name)))?;
            bufs.push((bytes, i));
        }
        // Greedy by size: largest first, each at the lowest offset free for its lifetime.
        bufs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut placed: Vec<(Range<usize>, Range<usize>)> = Vec::new(); // (bytes, live ids)
        let mut range_of: Vec<Option<Range<usize>>> = vec![None; n];
        let mut total = 0usize;
        for (bytes, i) in bufs {
            let live = i..last[i].saturating_add(1);
            let mut clashes: Vec<&Range<usize>> =
                placed.iter().filter(|(_, l)| l.start < live.end && live.start < l.end).map(|(b, _)| b).collect();
            clashes.sort_by_key(|r| r.start);
            let mut off = 0usize;
            for r in clashes {
                if off + bytes <= r.start {
                    break;
                }
                off = off.max(r.end);
            }
            placed.push((off..off + bytes, live));
            range_of[i] = Some(off..off + bytes);
            total = total.max(off + bytes);
        }
        let home = (0..n).map(|i| range_of[owner[i]].clone().map(|r| (owner[i], r))).collect();
        Ok(Activations { home, buf: bytemuck::zeroed_vec(total.div_ceil(8)) })
    }

    /// Bytes of the arena.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() * 8
    }
}

/// One attention layer's cache: f16 keys and values for every slot.
pub(crate) struct KvBuf {
    pub k: Vec<f16>,
    pub v: Vec<f16>,
    n_head_kv: usize,
    head_dim: usize,
}

/// The KV cache of every attention layer, `n_slots` sequences of `stride` positions each
/// (the context rounded up to a multiple of 32, see [`kv_stride`]). Zeroed allocations stay
/// lazy, so only the positions a run reaches become resident. Each slot remembers how far
/// it was written, so freeing a sequence zeroes only what it used.
pub(crate) struct KvCache {
    pub layers: Vec<Option<KvBuf>>,
    pub stride: usize,
    pub n_slots: usize,
    /// Per slot: one past the highest position written.
    used: Vec<usize>,
}

impl KvCache {
    pub(crate) fn new(graph: &Graph, n_ctx: usize, n_slots: usize) -> Result<KvCache> {
        let stride = kv_stride(n_ctx);
        let mut layers: Vec<Option<KvBuf>> = Vec::new();
        for (_, n) in graph.iter() {
            if let Op::Attention { layer, n_head_kv, head_dim, .. } = n.op {
                if layers.len() <= layer {
                    layers.resize_with(layer + 1, || None);
                }
                let len = n_head_kv
                    .checked_mul(head_dim)
                    .and_then(|x| x.checked_mul(stride))
                    .and_then(|x| x.checked_mul(n_slots))
                    .filter(|&x| x.checked_mul(2).is_some_and(|b| b <= isize::MAX as usize))
                    .ok_or_else(|| Error::runtime("KV cache size overflows"))?;
                layers[layer] = Some(KvBuf { k: bytemuck::zeroed_vec(len), v: bytemuck::zeroed_vec(len), n_head_kv, head_dim });
            }
        }
        Ok(KvCache { layers, stride, n_slots, used: vec![0; n_slots] })
    }

    /// The cache of `layer` as kernels see it.
    pub(crate) fn layer(&mut self, layer: usize) -> Option<KvLayer<'_>> {
        let (stride, n_slots) = (self.stride, self.n_slots);
        self.layers.get_mut(layer)?.as_mut().map(|b| KvLayer { k: &mut b.k, v: &mut b.v, n_ctx: stride, n_slots })
    }

    /// Notes that `slot` was written up to `pos` (inclusive).
    pub(crate) fn note_written(&mut self, slot: usize, pos: usize) {
        self.used[slot] = self.used[slot].max(pos + 1);
    }

    /// Zeroes what `slot` wrote, so a new sequence in it starts from the state a fresh cache
    /// has (the attention kernels read zero-padded positions up to a multiple of 32).
    pub(crate) fn clear_slot(&mut self, slot: usize) {
        let used = std::mem::take(&mut self.used[slot]);
        if used == 0 {
            return;
        }
        let stride = self.stride;
        for b in self.layers.iter_mut().flatten() {
            let slot_len = b.n_head_kv * b.head_dim * stride;
            let (k, v) = (&mut b.k[slot * slot_len..(slot + 1) * slot_len], &mut b.v[slot * slot_len..(slot + 1) * slot_len]);
            // k: [Hkv][stride][hd] → the first `used` rows of each head.
            for head in k.chunks_mut(stride * b.head_dim) {
                head[..used * b.head_dim].fill(f16::ZERO);
            }
            // v: [Hkv][hd][stride] → the first `used` positions of each channel.
            for chan in v.chunks_mut(stride) {
                chan[..used].fill(f16::ZERO);
            }
        }
    }

    /// Bytes of the cache.
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|b| (b.k.len() + b.v.len()) * 2).sum()
    }
}

/// Positions per KV-cache row: the context rounded up to a multiple of 32, so attention
/// can read the zero-padded `n_kv` that ggml uses without bounds special cases.
pub fn kv_stride(n_ctx: usize) -> usize {
    n_ctx.div_ceil(32) * 32
}
