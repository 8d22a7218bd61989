//! The graph crate's error type.

use std::fmt;

use crate::shape::Shape;
use crate::DType;

/// What went wrong while building, planning or running a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An input's shape does not fit the op.
    #[error("graph: node `{node}` ({op}): {what} shape {got}, expected {expected}{}", tensor_note(.tensor))]
    ShapeMismatch {
        /// The node being added.
        node: String,
        /// Its op.
        op: String,
        /// Which input or dimension.
        what: String,
        /// Expected shape.
        expected: Shape,
        /// Actual shape.
        got: Shape,
        /// The weight tensor involved, if the offending input is a weight.
        tensor: Option<String>,
    },
    /// An input's dtype does not fit the op.
    #[error("graph: node `{node}` ({op}): {what} dtype {got}, expected {expected}{}", tensor_note(.tensor))]
    DTypeMismatch {
        /// The node.
        node: String,
        /// Its op.
        op: String,
        /// Which input.
        what: String,
        /// Expected dtype(s).
        expected: String,
        /// Actual dtype.
        got: DType,
        /// The weight tensor involved.
        tensor: Option<String>,
    },
    /// Wrong number of inputs, duplicate names, unknown inputs and other wiring errors.
    #[error("graph: node `{node}` ({op}): {msg}")]
    Wiring {
        /// The node.
        node: String,
        /// Its op.
        op: String,
        /// The fact.
        msg: String,
    },
    /// A backend cannot run an op.
    #[error("graph: backend `{backend}` does not support node `{node}` ({op})")]
    Unsupported {
        /// Backend name.
        backend: String,
        /// Node name.
        node: String,
        /// Op.
        op: String,
    },
    /// A run-time argument is out of range (too many tokens for the context, bad token id…).
    #[error("graph: {0}")]
    Runtime(String),
}

fn tensor_note(t: &Option<String>) -> String {
    t.as_ref().map(|t| format!(" (tensor `{t}`)")).unwrap_or_default()
}

/// The graph crate's error: see [`Error::kind`].
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: Box<ErrorKind>,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// A run-time error.
    pub fn runtime(msg: impl Into<String>) -> Error {
        ErrorKind::Runtime(msg.into()).into()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind: Box::new(kind) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Error {}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
