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
/// Layouts: `k` is `[n_head_kv][n_ctx][head_dim]` (one key row per position), `v` is
/// transposed, `[n_head_kv][head_dim][n_ctx]` (one row per channel, as ggml stores it), so
/// both attention products read contiguous rows.
#[derive(Debug)]
pub struct KvLayer<'a> {
    /// Keys, `[n_head_kv][n_ctx][head_dim]`.
    pub k: &'a mut [f16],
    /// Values, `[n_head_kv][head_dim][n_ctx]`.
    pub v: &'a mut [f16],
    /// Positions per row (the context rounded up to a multiple of 32; slots past the
    /// context stay zero).
    pub n_ctx: usize,
}

/// Byte layout of one row of a q8_tok tensor with `k` elements: `k` i8, f32 scale, i32 sum.
pub fn q8tok_row_bytes(k: usize) -> usize {
    k + 8
}

/// A compute backend: evaluates one node at a time into an output buffer the executor owns.
///
/// ## Design
/// A backend is stateless: the executor owns every buffer and the KV cache, decides the
/// execution order, and picks for each node the preferred backend if it [`supports`] the
/// node, else the scalar reference. So a new backend is correct from its first line: it
/// implements any subset of ops and the rest run on scalar. A backend never allocates
/// outputs, never sees the model file, and must give the same result for any thread count
/// (parallelise over output rows, never split a reduction).
///
/// Inputs arrive in the op's argument order (see [`Op`]); weights arrive as
/// [`Data::Bytes`] in their file layout (F32 weights as [`Data::F32`]). The output buffer
/// has exactly the node's resolved shape; q8_tok rows follow [`q8tok_row_bytes`].
/// [`Op::Attention`] also receives the layer's [`KvLayer`], which it must update at the
/// step's positions before reading it.
///
/// [`supports`]: Backend::supports
pub trait Backend: Send + Sync + Debug {
    /// Short name (`scalar`, `avx2`).
    fn name(&self) -> &'static str;

    /// Whether this backend can evaluate `op` on inputs of these facts. Cheap; never panics.
    fn supports(&self, op: &Op, inputs: &[&TensorFact]) -> bool;

    /// The kernel that will run the node, e.g. `vec_dot_i2s_i8_ref` (shown by `dump`).
    fn kernel_name(&self, op: &Op, inputs: &[&TensorFact]) -> String;

    /// Evaluates one node.
    fn eval(&self, op: &Op, inputs: &[TensorRef<'_>], out: &mut TensorMut<'_>, kv: Option<&mut KvLayer<'_>>) -> Result<()>;
}
