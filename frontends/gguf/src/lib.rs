//! bitnet-graph's GGUF frontend: a capped, range-checked, memory-mapped reader; the tensor
//! types; the tokenizer built from metadata; and one lowering per `general.architecture`
//! into a shape-verified [`graph::Graph`].
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod check;
mod error;
pub mod lower;
pub mod npy;
pub mod quantize;
pub mod reader;
pub mod tokenizer;
pub mod types;
pub mod value;
pub mod writer;

pub use check::{check_tensors, TensorCheck};
pub use error::{Error, ErrorKind, Result};
pub use lower::{lower, lower_with, HParams, LowerOptions, Model};
pub use reader::{shape_from_ne, GgufFile, TensorInfo};
pub use value::{Array, Value, ValueType};
