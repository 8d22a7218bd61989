//! bitnet-graph's runtime: the library every front door (the CLI, the server, the Python
//! package) calls. It holds a loaded model once and advances many sequences together.
//!
//! ```no_run
//! use std::sync::Arc;
//! use runtime::{Batch, Event, Model, ModelOptions, Request, SamplingParams};
//!
//! # fn main() -> runtime::Result<()> {
//! let model = Arc::new(Model::load("model.gguf", &ModelOptions { n_parallel: 2, ..ModelOptions::default() })?);
//! let mut batch = Batch::new(model.clone())?;
//! for prompt in ["The capital of France is", "Once upon a time"] {
//!     batch.add(Request::new(model.tokenize(prompt, true, false), SamplingParams::greedy(16)))?;
//! }
//! while !batch.is_idle() {
//!     for event in batch.step()? {
//!         match event {
//!             Event::Token { seq, text, .. } => print!("[{seq}]{text}"),
//!             Event::Done(c) => println!("\n[{}] done: {:?}", c.id, c.finish),
//!             _ => {}
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backends;
pub mod batch;
pub mod chat;
mod error;
pub mod hub;
pub mod model;
pub mod options;
pub mod perplexity;
pub mod probe;
pub mod sampler;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use batch::{Batch, Completion, Event, FinishReason, LogitsMode, Request, SeqId, Timings};
pub use chat::{ChatFormat, ChatMessage, Role};
pub use error::{Error, ErrorKind, Result};
pub use model::{Model, ModelInfo};
pub use options::{LmHead, ModelOptions, SamplingParams};
