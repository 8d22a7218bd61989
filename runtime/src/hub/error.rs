//! The one error type of [`crate::hub`].

use std::path::PathBuf;

/// Why [`resolve`](super::resolve) or [`HubOptions::from_env`](super::HubOptions::from_env)
/// failed. Opaque; match on [`HubError::kind`].
#[derive(Debug)]
pub struct HubError {
    kind: Box<HubErrorKind>,
}

impl HubError {
    /// What went wrong, with the facts.
    pub fn kind(&self) -> &HubErrorKind {
        &self.kind
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        HubErrorKind::Io { path: path.into(), op, source }.into()
    }
}

impl From<HubErrorKind> for HubError {
    fn from(kind: HubErrorKind) -> Self {
        HubError { kind: Box::new(kind) }
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

/// The kinds of [`HubError`]. Every message starts with `hub: ` and names the repository,
/// the file, the URL or the path it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubErrorKind {
    /// The `owner/name[:FILE]` text is malformed.
    #[error("hub: `{spec}`: {reason} (expected OWNER/NAME or OWNER/NAME:FILE)")]
    BadSpec {
        /// The text as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable has a value that cannot be used.
    #[error("hub: {var}={value:?}: {reason}")]
    BadConfig {
        /// The variable (or option) name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The hub does not know the repository (or hides it: private or gated without a token).
    #[error("hub: {repo}: repository not found at {endpoint} (HTTP {status}){}", token_hint(*token_sent))]
    RepoNotFound {
        /// `owner/name`.
        repo: String,
        /// The hub asked.
        endpoint: String,
        /// The HTTP status of the answer.
        status: u16,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The repository exists but this token (or no token) may not read it: a gated model whose
    /// terms are not accepted, or a private one.
    #[error("hub: {repo}: access denied (HTTP {status}: {message}){}", token_hint(*token_sent))]
    AccessDenied {
        /// `owner/name`.
        repo: String,
        /// The HTTP status of the answer.
        status: u16,
        /// The hub's explanation.
        message: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The repository has no file of that name on its `main` branch.
    #[error("hub: {repo}: no file `{file}` in the repository{}", list_suffix("its .gguf files", ggufs))]
    FileNotFound {
        /// `owner/name`.
        repo: String,
        /// The file asked for.
        file: String,
        /// The repository's `.gguf` files, when they could be listed.
        ggufs: Vec<String>,
    },
    /// No `:FILE` was given and the repository holds no `.gguf` file.
    #[error("hub: {repo}: the repository holds no .gguf file{}", list_suffix("its files", files))]
    NoGguf {
        /// `owner/name`.
        repo: String,
        /// Every file of the repository.
        files: Vec<String>,
    },
    /// No `:FILE` was given and the repository holds several `.gguf` files, none of them (or
    /// more than one) named I2_S.
    #[error(
        "hub: {repo}: {} .gguf files and no single I2_S one; pick one with {repo}:FILE{}",
        choices.len(),
        list_suffix("choices", choices)
    )]
    Ambiguous {
        /// `owner/name`.
        repo: String,
        /// The candidate files.
        choices: Vec<String>,
    },
    /// Offline mode (`--offline`, `HF_HUB_OFFLINE=1`) and the file is not in the cache.
    #[error(
        "hub: {repo}{}: not in the cache {} and offline mode is on (--offline or HF_HUB_OFFLINE); run once online, or `bitnet-graph pull {repo}{}`",
        file_suffix(file),
        cache_dir.display(),
        file_suffix(file)
    )]
    NotCached {
        /// `owner/name`.
        repo: String,
        /// The file asked for, if one was.
        file: Option<String>,
        /// The cache searched.
        cache_dir: PathBuf,
    },
    /// The downloaded bytes do not hash to the SHA-256 the hub announced; the partial blob was
    /// deleted.
    #[error("hub: {repo}:{file}: SHA-256 of the download is {got}, the hub announced {expected}; deleted {}", deleted.display())]
    ChecksumMismatch {
        /// `owner/name`.
        repo: String,
        /// The file.
        file: String,
        /// The hub's SHA-256 (its `X-Linked-Etag`).
        expected: String,
        /// The SHA-256 of what arrived.
        got: String,
        /// The partial blob that was deleted.
        deleted: PathBuf,
    },
    /// The server sent more bytes than it announced, or a complete transfer has the wrong
    /// length; the partial blob was deleted.
    #[error("hub: {repo}:{file}: received {got} bytes, the hub announced {expected}; deleted {}", deleted.display())]
    SizeMismatch {
        /// `owner/name`.
        repo: String,
        /// The file.
        file: String,
        /// The announced size.
        expected: u64,
        /// The bytes received.
        got: u64,
        /// The partial blob that was deleted.
        deleted: PathBuf,
    },
    /// The transfer broke off (after the retries); the partial blob is kept for the next run.
    #[error(
        "hub: {repo}:{file}: transfer interrupted at {have} of {size} bytes ({message}); {} is kept and the next run resumes it",
        partial.display()
    )]
    Interrupted {
        /// `owner/name`.
        repo: String,
        /// The file.
        file: String,
        /// Bytes on disk.
        have: u64,
        /// The file's size.
        size: u64,
        /// The I/O error that ended the transfer.
        message: String,
        /// The partial blob.
        partial: PathBuf,
    },
    /// An HTTP status this client has no specific meaning for.
    #[error("hub: {url}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        /// The URL requested.
        url: String,
        /// The status.
        status: u16,
        /// The server's explanation, when it gave one.
        message: String,
    },
    /// The request failed below HTTP: DNS, connection, TLS, timeout.
    #[error("hub: {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// The answer lacks a header this protocol needs, or has an unusable value.
    #[error("hub: {url}: unexpected answer: {what}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What is wrong.
        what: String,
    },
    /// A file-system operation in the cache failed.
    #[error("hub: {}: {op}: {source}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The operation (`create`, `rename`, …).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn token_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "; check that HF_TOKEN may read it (for a gated model, accept its terms on the hub)"
    } else {
        "; a private or gated repository needs a token in HF_TOKEN"
    }
}

fn list_suffix(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("; {what}: {}", items.join(", "))
    }
}

fn file_suffix(file: &Option<String>) -> String {
    file.as_ref().map(|f| format!(":{f}")).unwrap_or_default()
}
