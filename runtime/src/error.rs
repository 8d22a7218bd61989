//! The runtime's error type.

/// What went wrong, so that front doors can map it (HTTP status, Python exception type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The model file cannot be read or is not a supported model (Python: `OSError`).
    #[error("{0}")]
    Load(String),
    /// A bad argument: an option out of range, an unknown name (Python: `ValueError`).
    #[error("{0}")]
    Invalid(String),
    /// A prompt longer than the context (HTTP 400, naming both numbers).
    #[error("the prompt has {tokens} tokens but the context holds {n_ctx}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Context size.
        n_ctx: usize,
    },
    /// The engine failed while running (a bug or an exhausted resource).
    #[error("{0}")]
    Engine(String),
}

/// The runtime's error: see [`Error::kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        ErrorKind::Invalid(msg.into()).into()
    }

    pub(crate) fn load(msg: impl Into<String>) -> Error {
        ErrorKind::Load(msg.into()).into()
    }

    pub(crate) fn engine(msg: impl Into<String>) -> Error {
        ErrorKind::Engine(msg.into()).into()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for Error {}

impl From<graph::Error> for Error {
    fn from(e: graph::Error) -> Error {
        Error::engine(e.to_string())
    }
}

/// The runtime's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
