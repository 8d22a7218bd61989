//! The backend trait: what a backend crate implements.

use std::fmt::Debug;

use half::f16;

use crate::error::Result;
use crate::op::Op;
use crate::shape::TensorFact;
use crate::DType;

/// Borrowed element data of a tensor.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// f32 elements (dtype F32).
    F32(&'a [f32]),
    /// i32 elements (dtype I32).
    I32(&'a [i32]),
    /// Raw bytes: weight formats (I2_S, F16, Q8_0, …) and q8_tok activations.
    Bytes(&'a [u8]),
}

/// Mutable element data of a node's output.
#[derive(Debug)]
pub enum DataMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// i32 elements.
    I32(&'a mut [i32]),
    /// Raw bytes (q8_tok).
    Bytes(&'a mut [u8]),
}

/// A read-only tensor handed to a kernel: dtype, concrete dims (outermost first), data.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// Element type.
    pub dtype: DType,
    /// Concrete dims, outermost first.
    pub dims: &'a [usize],
    /// The data.
    pub data: Data<'a>,
}

impl<'a> TensorRef<'a> {
    /// The f32 data, or an error naming the dtype.
    pub fn f32(&self) -> Result<&'a [f32]> {
        match self.data {
            Data::F32(d) => Ok(d),
            _ => Err(crate::Error::runtime(format!("expected f32 data, got {}", self.dtype))),
        }
    }
    /// The i32 data.
    pub fn i32(&self) -> Result<&'a [i32]> {
        match self.data {
            Data::I32(d) => Ok(d),
            _ => Err(crate::Error::runtime(format!("expected i32 data, got {}", self.dtype))),
        }
    }
    /// The raw bytes.
    pub fn bytes(&self) -> Result<&'a [u8]> {
        match self.data {
            Data::Bytes(d) => Ok(d),
            _ => Err(crate::Error::runtime(format!("expected byte data, got {}", self.dtype))),
        }
    }
}

/// A node's output buffer handed to a kernel.
#[derive(Debug)]
pub struct TensorMut<'a> {
    /// Element type.
    pub dtype: DType,
    /// Concrete dims, outermost first.
    pub dims: &'a [usize],
    /// The data.
    pub data: DataMut<'a>,
}

impl TensorMut<'_> {
    /// The f32 output.
    pub fn f32(&mut self) -> Result<&mut [f32]> {
        match &mut self.data {
            DataMut::F32(d) => Ok(d),
            _ => Err(crate::Error::runtime(format!("expected f32 output, got {}", self.dtype))),
        }
    }
    /// The byte output.
    pub fn bytes(&mut self) -> Result<&mut [u8]> {
        match &mut self.data {
            DataMut::Bytes(d) => Ok(d),
            _ => Err(crate::Error::runtime(format!("expected byte output, got {}", self.dtype))),
        }
    }
}

/// One layer's f16 KV cache, owned by the executor and lent to [`Op::Attention`].
///
/// The cache holds `n_slots` sequences. Layouts: `k` is `[slot][n_head_kv][n_ctx][head_dim]`
/// (one key row per position), `v` is transposed, `[slot][n_head_kv][head_dim][n_ctx]` (one
/// row per channel, as ggml stores it), so both attention products read contiguous rows.
#[derive(Debug)]
pub struct KvLayer<'a> {
    /// Keys, `[slot][n_head_kv][n_ctx][head_dim]`.
    pub k: &'a mut [f16],
    /// Values, `[slot][n_head_kv][head_dim][n_ctx]`.
    pub v: &'a mut [f16],
    /// Positions per row (the context rounded up to a multiple of 32; slots past the
    /// positions a sequence has written stay zero).
    pub n_ctx: usize,
    /// Sequences (slots) the cache holds.
    pub n_slots: usize,
}

impl KvLayer<'_> {
    /// Values per slot in `k` (and in `v`) for `n_head_kv` heads of `head_dim`.
    pub fn slot_len(&self, n_head_kv: usize, head_dim: usize) -> usize {
        n_head_kv * head_dim * self.n_ctx
    }
}

/// Byte layout of one row of a q8_tok tensor with `k` elements: `k` i8, f32 scale, i32 sum.
pub fn q8tok_row_bytes(k: usize) -> usize {
    k + 8
}

/// The run function of a [`Kernel`]: inputs in the op's argument order, the output buffer,
/// and for [`Op::Attention`] the layer's KV cache.
pub type KernelFn = dyn Fn(&[TensorRef<'_>], &mut TensorMut<'_>, Option<&mut KvLayer<'_>>) -> Result<()> + Send + Sync;

/// Turns a weight's file-layout bytes (`src`, of a tensor of `dims`) into a kernel's own
/// layout in `dst`, which has exactly the length [`WeightPrep::len`] gave.
pub type PrepareFn = dyn Fn(&[u8], &[usize], &mut [u8]) -> Result<()> + Send + Sync;

/// A kernel's own layout for one of its weight inputs, made once from the file layout.
///
/// ## Design
/// Weights arrive in their file layout, which the scalar reference defines and every kernel
/// can read. A kernel that streams a weight faster in another arrangement (rows interleaved
/// for its vector loads, say) plans with [`Kernel::with_prepared_weight`]: the executor then
/// calls [`WeightPrep::prepare`] once per weight when it binds a program's weights, keeps
/// only the prepared copy where no other reader needs the file layout, and passes that copy
/// to [`Kernel::run_prepared`]. Everything outside the kernel keeps seeing the file layout:
/// step hooks (the cross-check, tensor dumps), [`crate::Executor::view`], and callers of
/// [`Kernel::run`], which prepares the weight on the fly (tests and benches stay correct
/// without knowing about layouts). The layout is private to the backend; two kernels that
/// name the same layout share one prepared copy.
#[derive(Clone)]
pub struct WeightPrep {
    /// The input, in the op's argument order, that is prepared (a weight).
    pub input: usize,
    /// The layout's name (`i2s_r16`), shown in kernel names by convention; kernels naming
    /// the same layout share one prepared copy of a weight.
    pub layout: &'static str,
    /// Bytes of the prepared form of a weight of these dims (`None`: not preparable, an
    /// error when the program is built).
    pub len: fn(&[usize]) -> Option<usize>,
    /// Fills the prepared form from the file layout.
    pub prepare: std::sync::Arc<PrepareFn>,
}

impl WeightPrep {
    /// The prepared form of `w` (its bytes in the file layout).
    pub fn prepare_tensor(&self, w: &TensorRef<'_>) -> Result<Vec<u8>> {
        let src = w.bytes()?;
        let len = (self.len)(w.dims)
            .ok_or_else(|| crate::Error::runtime(format!("weight {:?} cannot take the {} layout", w.dims, self.layout)))?;
        let mut dst = vec![0u8; len];
        (self.prepare)(src, w.dims, &mut dst)?;
        Ok(dst)
    }
}

impl Debug for WeightPrep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightPrep").field("input", &self.input).field("layout", &self.layout).finish_non_exhaustive()
    }
}

/// What a backend plans for one node: the kernel's name and the function that runs it.
///
/// The name is the one `dump` and `check` show, and it is carried with the function that
/// runs, so what is shown is what runs, by construction. A kernel captures everything it
/// needs from the op and the backend when it is planned (parameters, the CPU features in
/// use); a variant chosen per call (one token or many) is part of the kernel and its name
/// says so (`vec_dot_f16_2x1_avx2 (T=1) | vec_dot_f16_f32_3x4_avx2`). A kernel may take one
/// weight in a layout of its own ([`WeightPrep`]).
pub struct Kernel {
    name: String,
    run: Box<KernelFn>,
    prep: Option<WeightPrep>,
}

impl Kernel {
    /// A kernel named `name` (e.g. `vec_dot_i2s_i8_ref`) that runs `run`.
    pub fn new(
        name: impl Into<String>,
        run: impl Fn(&[TensorRef<'_>], &mut TensorMut<'_>, Option<&mut KvLayer<'_>>) -> Result<()> + Send + Sync + 'static,
    ) -> Kernel {
        Kernel { name: name.into(), run: Box::new(run), prep: None }
    }

    /// The same kernel, taking input `prep.input` in the layout `prep` makes: its run
    /// function then receives the prepared bytes in place of the file layout.
    pub fn with_prepared_weight(self, prep: WeightPrep) -> Kernel {
        Kernel { prep: Some(prep), ..self }
    }

    /// The kernel's own weight layout, if it has one.
    pub fn weight_prep(&self) -> Option<&WeightPrep> {
        self.prep.as_ref()
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the kernel on one node's inputs (weights in their file layout) into its output.
    /// A kernel with a [`WeightPrep`] prepares that weight first, on every call; the
    /// executor prepares once and calls [`Kernel::run_prepared`].
    pub fn run(&self, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, kv: Option<&mut KvLayer<'_>>) -> Result<()> {
        let Some(prep) = &self.prep else { return (self.run)(inputs, out, kv) };
        let w = inputs.get(prep.input).ok_or_else(|| crate::Error::runtime(format!("no input {} to prepare", prep.input)))?;
        let prepared = prep.prepare_tensor(w)?;
        let mut with = inputs.to_vec();
        with[prep.input].data = Data::Bytes(&prepared);
        (self.run)(&with, out, kv)
    }

    /// Runs the kernel with its [`WeightPrep`]'s input already prepared (the inputs of a
    /// kernel without one are passed as they are, like [`Kernel::run`]).
    pub fn run_prepared(&self, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, kv: Option<&mut KvLayer<'_>>) -> Result<()> {
        (self.run)(inputs, out, kv)
    }
}

impl Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("name", &self.name).field("prep", &self.prep).finish_non_exhaustive()
    }
}

/// A compute backend: plans, for each node it can run, the kernel that will run it.
///
/// ## Design
/// A backend answers once per node: [`Backend::plan`] returns the [`Kernel`] (its name and
/// its run function) or `None` when the backend does not implement the node's op on these
/// input types. There is no separate "supports" or "kernel name" query that could disagree
/// with what runs. The executor takes an ordered list of backends (most specialised first,
/// the scalar reference last) and gives each node to the first that plans it, so a new
/// backend is correct from its first line: it implements any subset of ops and the rest run
/// on the next backend.
///
/// A backend is stateless between calls: the executor owns every buffer and the KV cache,
/// decides the execution order, and never lets a kernel allocate outputs or see the model
/// file. Kernels must give the same result for any thread count (parallelise over output
/// rows, never split a reduction).
///
/// Inputs arrive in the op's argument order (see [`Op`]); weights arrive as
/// [`Data::Bytes`] in their file layout (F32 weights as [`Data::F32`]), or in the kernel's
/// own layout where it planned one ([`WeightPrep`]). The output buffer
/// has exactly the node's resolved shape; q8_tok rows follow [`q8tok_row_bytes`].
/// [`Op::Attention`] also receives the layer's [`KvLayer`], which it must update at the
/// step's (sequence, position) pairs before reading it.
pub trait Backend: Send + Sync + Debug {
    /// Short name (`scalar`, `avx2`).
    fn name(&self) -> &'static str;

    /// The kernel for `op` on inputs of these facts, or `None` if this backend does not
    /// implement it. Cheap; never panics. Called once per node when a graph is planned.
    fn plan(&self, op: &Op, inputs: &[&TensorFact]) -> Option<Kernel>;
}
