//! The frontend's error type: opaque, with a `kind()` that tests match on.

use std::fmt;

/// What went wrong while reading or interpreting a GGUF file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened or mapped.
    #[error("gguf: {path}: {msg}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        msg: String,
    },
    /// The file changed (shrank, grew or was cut short) between [`crate::GgufFile::open`] and
    /// a later read of it: another process rewrote or truncated it while it was loading.
    #[error("gguf: {path}: file changed while loading ({msg})")]
    FileChanged {
        /// The path.
        path: String,
        /// What was found.
        msg: String,
    },
    /// The first four bytes are not `GGUF`.
    #[error("gguf: bad magic {found:02x?} at offset 0x0, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// A GGUF version other than 2 or 3.
    #[error("gguf: unsupported version {version} at offset 0x4 (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version read.
        version: u32,
    },
    /// A read would go past the end of the file.
    #[error("gguf: {what}: needs {need} bytes at offset {offset:#x}, file has {len:#x}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        offset: u64,
        /// How many bytes were needed.
        need: u64,
        /// The file length.
        len: u64,
    },
    /// A structurally invalid value (bad type id, absurd count, bad UTF-8, …).
    #[error("gguf: {what} at offset {offset:#x}: {msg}")]
    Invalid {
        /// What was being read.
        what: String,
        /// Where.
        offset: u64,
        /// The fact.
        msg: String,
    },
    /// A tensor whose type, shape or data range is unusable.
    #[error("gguf: tensor `{name}`: {msg}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// The fact.
        msg: String,
    },
    /// Metadata that is missing or out of range for the architecture.
    #[error("gguf: metadata `{key}`: {msg}")]
    Metadata {
        /// The key.
        key: String,
        /// The fact.
        msg: String,
    },
    /// An architecture with no lowering.
    #[error("gguf: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArch {
        /// The `general.architecture` value.
        arch: String,
        /// Comma-separated list of supported architectures.
        supported: String,
    },
    /// Graph construction failed (shape or dtype error naming the node).
    #[error("{0}")]
    Graph(graph::Error),
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// The frontend's error: see [`Error::kind`].
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: Box<ErrorKind>,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
    pub(crate) fn truncated(what: impl Into<String>, offset: u64, need: u64, len: u64) -> Error {
        ErrorKind::Truncated { what: what.into(), offset, need, len }.into()
    }
    pub(crate) fn invalid(what: impl Into<String>, offset: u64, msg: impl Into<String>) -> Error {
        ErrorKind::Invalid { what: what.into(), offset, msg: msg.into() }.into()
    }
    pub(crate) fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Error {
        ErrorKind::Tensor { name: name.into(), msg: msg.into() }.into()
    }
    pub(crate) fn metadata(key: impl Into<String>, msg: impl Into<String>) -> Error {
        ErrorKind::Metadata { key: key.into(), msg: msg.into() }.into()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind: Box::new(kind) }
    }
}

impl From<graph::Error> for Error {
    fn from(e: graph::Error) -> Error {
        ErrorKind::Graph(e).into()
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
