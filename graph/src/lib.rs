//! bitnet-graph's core: dtypes and shapes, the closed op set, the graph builder that
//! verifies every node when it is added, the backend trait, the executor and the op-by-op
//! cross-check. It knows no backend and no file format.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod attn_tiles;
pub mod dtype;
pub mod dump;
mod error;
pub mod graph;
pub mod op;
pub mod quant;
pub mod rng;
pub mod shape;
pub mod tiling;

pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub use graph::{Graph, GraphBuilder, Node, NodeId};
pub use op::{rows_per_seq, Op, OpKind, RopeStyle, Tolerance};
pub use shape::{Bindings, Dim, Shape, Sym, TensorFact};
pub mod backend;
pub mod check;
pub mod exec;

pub use backend::{Backend, Data, DataMut, Kernel, KvLayer, TensorMut, TensorRef, WeightPrep};
pub use exec::{ExecConfig, Executor, Program, Step, StepHook, WeightSource};
