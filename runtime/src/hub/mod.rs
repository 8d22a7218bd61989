//! Models by name: `owner/name[:FILE]` on the Hugging Face hub, turned into a local path in
//! the standard Hugging Face cache.
//!
//! [`resolve`] returns the path of the file inside the cache
//! (`models--owner--name/snapshots/<commit>/FILE`), downloading it first when it is not there.
//!
//! ## Design
//!
//! - **The cache is huggingface_hub's.** The layout is `models--owner--name/{blobs/<etag>,
//!   snapshots/<commit>/FILE -> ../../blobs/<etag>, refs/main}` with the lock files under
//!   `.locks/` and partial downloads at `blobs/<etag>.incomplete`, as the Python
//!   `huggingface_hub` writes them, so a file fetched by `hf download` is used as it is (no
//!   request), and the reverse.
//! - **A cached file costs no request.** With `:FILE`, `refs/main` and the snapshot decide. Without
//!   it, the `.gguf` files of the cached snapshot are put through the same choice as the
//!   repository's list (one `.gguf`, else the one I2_S); only when the cache cannot decide is the
//!   hub asked. Offline mode stops there.
//! - **A download never leaves a wrong file where a right one is expected.** Bytes go to
//!   `<blob>.incomplete`; an interrupted transfer is continued with a `Range` request (in the same
//!   run, up to [`HubOptions::retries`] times, and in the next run); the SHA-256 the hub announces
//!   for LFS files (its `X-Linked-Etag`) is checked, a mismatch deletes the partial blob; then
//!   `fsync` and a rename put the blob in place, and only then is the snapshot link made.
//! - **Nothing downloads silently.** Before any transfer a line on stderr says what, from where
//!   and how big; a progress line (bytes, rate, ETA) follows unless [`HubOptions::progress`] is
//!   off.
//! - **Blocking I/O.** `ureq` (rustls) makes the four kinds of request this needs: the repository's
//!   file list (`/api/models/{repo}/revision/main`), a `HEAD` of `/{repo}/resolve/main/{file}`
//!   (its `X-Repo-Commit`, `X-Linked-Etag`/`ETag` and `X-Linked-Size`), and a `GET` of it
//!   (following the redirect to the storage host, which gets no `Authorization` header), with
//!   `Range` when resuming.
//!
//! It does not: pick revisions other than `main`, handle repositories of datasets or spaces, or
//! download several files at once.

mod cache;
mod client;
mod error;
mod progress;
#[cfg(feature = "fake-hub")]
#[doc(hidden)]
pub mod testing;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{HubError, HubErrorKind};

use cache::RepoCache;
use client::Client;

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how [`resolve`] looks for and fetches files.
#[derive(Clone)]
pub struct HubOptions {
    /// The hub's base URL, without a trailing slash (`HF_ENDPOINT`, default
    /// [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// The hub cache folder, the one that holds `models--owner--name/` (`HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// A user access token, sent as `Authorization: Bearer` to the hub (`HF_TOKEN`, else the
    /// file `$HF_HOME/token` that `hf auth login` writes).
    pub token: Option<String>,
    /// Use the cache only; never make a request (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw a progress line on stderr while downloading. The line that announces a download
    /// is printed either way.
    pub progress: bool,
    /// How many times one call continues an interrupted transfer before giving up.
    pub retries: u32,
    /// How long a read from the network may wait for data before the transfer counts as
    /// interrupted.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("retries", &self.retries)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

impl HubOptions {
    /// Options with the defaults and the given cache folder: the public hub, no token, online,
    /// progress on, 3 retries, 30 s read timeout.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            progress: true,
            retries: 3,
            read_timeout: Duration::from_secs(30),
        }
    }

    /// Options from the environment, read as huggingface_hub reads it: `HF_ENDPOINT`,
    /// `HF_HUB_CACHE` / `HF_HOME` / `XDG_CACHE_HOME` / `HOME`, `HF_TOKEN` / `HF_TOKEN_PATH` /
    /// `$HF_HOME/token`, `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_env() -> Result<Self, HubError> {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// [`HubOptions::from_env`] with the variables looked up by `var` (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Self, HubError> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let hf_home = match get("HF_HOME") {
            Some(h) => PathBuf::from(h),
            None => match get("XDG_CACHE_HOME") {
                Some(x) => PathBuf::from(x).join("huggingface"),
                None => match get("HOME").or_else(|| get("USERPROFILE")) {
                    Some(home) => PathBuf::from(home).join(".cache").join("huggingface"),
                    None => {
                        return Err(HubErrorKind::BadConfig {
                            var: "HOME",
                            value: String::new(),
                            reason: "not set, and neither HF_HOME nor HF_HUB_CACHE is; set one to place the cache".into(),
                        }
                        .into())
                    }
                },
            },
        };
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let mut o = HubOptions::new(cache_dir);
        if let Some(e) = get("HF_ENDPOINT") {
            let e = e.to_string_lossy().into_owned();
            o.endpoint = check_endpoint("HF_ENDPOINT", &e)?;
        }
        o.token = match get("HF_TOKEN") {
            Some(t) => non_empty(&t.to_string_lossy()),
            None => {
                let path = get("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
                match std::fs::read_to_string(&path) {
                    Ok(t) => non_empty(&t),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(HubError::io(path, "read token", e)),
                }
            }
        };
        o.offline = get("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v));
        o.progress = !get("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v));
        Ok(o)
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// huggingface_hub's truth values for boolean variables.
fn is_true(v: &OsString) -> bool {
    matches!(v.to_string_lossy().trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

fn check_endpoint(var: &'static str, e: &str) -> Result<String, HubError> {
    let trimmed = e.trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(trimmed.to_string()),
        _ => Err(HubErrorKind::BadConfig { var, value: e.to_string(), reason: "not an http:// or https:// URL".into() }.into()),
    }
}

/// A parsed `owner/name[:FILE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The repository, `owner/name`.
    pub repo: String,
    /// The file inside it (may contain `/`), or `None` to let [`resolve`] choose the `.gguf`.
    pub file: Option<String>,
}

impl ModelSpec {
    /// Parses and checks `owner/name[:FILE]`: repository names as the hub allows them (letters,
    /// digits, `-`, `_`, `.`; no `--` or `..`; at most 96 characters), and a relative file path
    /// without `.`/`..` components.
    pub fn parse(spec: &str) -> Result<Self, HubError> {
        let bad =
            |reason: &str| -> HubError { HubErrorKind::BadSpec { spec: spec.to_string(), reason: reason.to_string() }.into() };
        let (repo, file) = match spec.split_once(':') {
            Some((r, f)) => (r, Some(f)),
            None => (spec, None),
        };
        let Some((owner, name)) = repo.split_once('/') else {
            return Err(bad("the repository must be OWNER/NAME"));
        };
        if name.contains('/') {
            return Err(bad("the repository must be OWNER/NAME, with one `/`"));
        }
        for (what, part) in [("owner", owner), ("name", name)] {
            if let Err(reason) = check_repo_part(part) {
                return Err(bad(&format!("repository {what} `{part}`: {reason}")));
            }
        }
        let file = match file {
            None => None,
            Some(f) => {
                check_file(f).map_err(|reason| bad(&format!("file `{f}`: {reason}")))?;
                Some(f.to_string())
            }
        };
        Ok(ModelSpec { repo: repo.to_string(), file })
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{file}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

fn check_repo_part(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.len() > 96 {
        return Err("is longer than 96 characters");
    }
    if !p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err("may only hold letters, digits, `-`, `_` and `.`");
    }
    if p.contains("--") || p.contains("..") {
        return Err("may not contain `--` or `..`");
    }
    if p.starts_with(['-', '.']) || p.ends_with(['-', '.']) {
        return Err("may not start or end with `-` or `.`");
    }
    Ok(())
}

fn check_file(f: &str) -> Result<(), &'static str> {
    if f.is_empty() {
        return Err("is empty");
    }
    if f.len() > 1024 {
        return Err("is longer than 1024 bytes");
    }
    if f.chars().any(|c| c.is_control() || c == '\\') {
        return Err("may not hold control characters or `\\`");
    }
    if f.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("must be a relative path without empty, `.` or `..` parts");
    }
    Ok(())
}

/// The `.gguf` among `files` that a spec without `:FILE` means: the only one, else the only
/// one whose name contains `i2_s` (any case).
fn choose_gguf(repo: &str, files: &[String]) -> Result<String, HubError> {
    let ggufs: Vec<&String> = files.iter().filter(|f| f.to_ascii_lowercase().ends_with(".gguf")).collect();
    match ggufs.as_slice() {
        [] => Err(HubErrorKind::NoGguf { repo: repo.to_string(), files: files.to_vec() }.into()),
        [one] => Ok((*one).clone()),
        several => {
            let i2s: Vec<&&String> =
                several.iter().filter(|f| f.rsplit('/').next().unwrap_or(f).to_ascii_lowercase().contains("i2_s")).collect();
            match i2s.as_slice() {
                [one] => Ok((**one).clone()),
                _ => Err(HubErrorKind::Ambiguous {
                    repo: repo.to_string(),
                    choices: several.iter().map(|s| (*s).clone()).collect(),
                }
                .into()),
            }
        }
    }
}

/// The local path of `spec` (`owner/name[:FILE]`) in the cache, downloading the file first
/// when it is not cached. Without `:FILE` the repository's single `.gguf` is taken, or its
/// I2_S one when there are several (stderr says which); anything else is an error listing the
/// choices.
///
/// The returned path is `<cache_dir>/models--owner--name/snapshots/<commit>/FILE`, a symbolic
/// link to the blob (on Unix), complete and checked.
pub fn resolve(spec: &str, opts: &HubOptions) -> Result<PathBuf, HubError> {
    resolve_spec(&ModelSpec::parse(spec)?, opts)
}

/// [`resolve`] for a parsed spec.
pub fn resolve_spec(spec: &ModelSpec, opts: &HubOptions) -> Result<PathBuf, HubError> {
    let repo = spec.repo.as_str();
    let cache = RepoCache::new(&opts.cache_dir, repo);

    // The cache first: no request when it answers.
    let cached_commit = cache.main_commit()?;
    if let Some(commit) = &cached_commit {
        match &spec.file {
            Some(file) => {
                if let Some(p) = cache.snapshot_file(commit, file) {
                    return Ok(p);
                }
            }
            None => {
                let ggufs = cache.snapshot_ggufs(commit)?;
                if !ggufs.is_empty() {
                    match choose_gguf(repo, &ggufs) {
                        Ok(file) => return Ok(cache.snapshot_path(commit, &file)),
                        Err(e) if opts.offline => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
    }
    if opts.offline {
        return Err(HubErrorKind::NotCached {
            repo: repo.to_string(),
            file: spec.file.clone(),
            cache_dir: opts.cache_dir.clone(),
        }
        .into());
    }

    check_endpoint("endpoint", &opts.endpoint)?;
    let client = Client::new(opts);
    let file = match &spec.file {
        Some(f) => f.clone(),
        None => {
            let info = client.repo_info(repo)?;
            let file = choose_gguf(repo, &info.files)?;
            let ggufs: Vec<&str> =
                info.files.iter().filter(|f| f.to_ascii_lowercase().ends_with(".gguf")).map(String::as_str).collect();
            if ggufs.len() > 1 {
                eprintln!(
                    "hub: {repo}: took {file}, the I2_S one of its {} .gguf files ({}); name another with {repo}:FILE",
                    ggufs.len(),
                    ggufs.join(", ")
                );
            }
            if let Some(p) = cache.snapshot_file(&info.commit, &file) {
                cache.set_main(&info.commit)?;
                return Ok(p);
            }
            file
        }
    };
    let meta = match client.file_meta(repo, &file) {
        Ok(m) => m,
        Err(e) => return Err(with_gguf_list(e, &client, repo)),
    };
    if let Some(p) = cache.snapshot_file(&meta.commit, &file) {
        cache.set_main(&meta.commit)?;
        return Ok(p);
    }
    if !cache.blob_path(&meta.etag).is_file() {
        client.download(&cache, repo, &file, &meta)?;
    }
    let path = cache.link(&meta.commit, &file, &meta.etag)?;
    cache.set_main(&meta.commit)?;
    Ok(path)
}

/// A missing file's error with the repository's `.gguf` files added, when they can be listed.
fn with_gguf_list(e: HubError, client: &Client, repo: &str) -> HubError {
    match e.kind() {
        HubErrorKind::FileNotFound { file, .. } => match client.repo_info(repo) {
            Ok(info) => HubErrorKind::FileNotFound {
                repo: repo.to_string(),
                file: file.clone(),
                ggufs: info.files.into_iter().filter(|f| f.to_ascii_lowercase().ends_with(".gguf")).collect(),
            }
            .into(),
            Err(_) => e,
        },
        _ => e,
    }
}

/// `models--owner--name`, the cache folder of a model repository.
pub fn repo_folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The snapshot folder of `repo` at `commit` under `cache_dir` (for tests and tools that lay out
/// a cache).
pub fn snapshot_dir(cache_dir: &Path, repo: &str, commit: &str) -> PathBuf {
    cache_dir.join(repo_folder_name(repo)).join("snapshots").join(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn spec_parse_accepts_and_refuses() {
        let m = ModelSpec::parse("microsoft/bitnet-b1.58-2B-4T-gguf").unwrap();
        assert_eq!(m.repo, "microsoft/bitnet-b1.58-2B-4T-gguf");
        assert_eq!(m.file, None);
        let m = ModelSpec::parse("a/b:sub/x.gguf").unwrap();
        assert_eq!(m.file.as_deref(), Some("sub/x.gguf"));
        for bad in [
            "", "abc", "a/b/c", "/b", "a/", "a/b:", "a/b:../x", "a/b:/x", "a/b:x//y", "a--b/c", "a/.b", "a/b-", "a b/c",
            "a/b:x\\y", "a/b:./x",
        ] {
            let e = ModelSpec::parse(bad).unwrap_err();
            assert!(matches!(e.kind(), HubErrorKind::BadSpec { .. }), "{bad}: {e}");
            assert!(e.to_string().starts_with("hub: `"), "{e}");
        }
    }

    #[test]
    fn choice_rule() {
        assert_eq!(choose_gguf("a/b", &s(&["README.md", "m.gguf"])).unwrap(), "m.gguf");
        assert_eq!(choose_gguf("a/b", &s(&["x-f16.gguf", "x-I2_S.gguf", "x-tq2_0.gguf"])).unwrap(), "x-I2_S.gguf");
        let e = choose_gguf("a/b", &s(&["x-f16.gguf", "x-tq2_0.gguf"])).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::Ambiguous { choices, .. } if choices.len() == 2), "{e}");
        assert!(e.to_string().contains("x-f16.gguf, x-tq2_0.gguf"), "{e}");
        let e = choose_gguf("a/b", &s(&["a-i2_s.gguf", "b-i2_s.gguf"])).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::Ambiguous { .. }), "{e}");
        let e = choose_gguf("a/b", &s(&["README.md"])).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::NoGguf { .. }), "{e}");
        // `i2_s` in a folder name does not count; the file name decides.
        let e = choose_gguf("a/b", &s(&["i2_s/a.gguf", "i2_s/b.gguf"])).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::Ambiguous { .. }), "{e}");
    }

    #[test]
    fn options_from_vars() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
        };
        let o = HubOptions::from_vars(vars(&[("HOME", "/h")])).unwrap();
        assert_eq!(o.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert!(!o.offline && o.progress && o.token.is_none());
        let o = HubOptions::from_vars(vars(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])).unwrap();
        assert_eq!(o.cache_dir, PathBuf::from("/x/huggingface/hub"));
        let o = HubOptions::from_vars(vars(&[
            ("HOME", "/h"),
            ("HF_HOME", "/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc \n"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "true"),
        ]))
        .unwrap();
        assert_eq!(o.cache_dir, PathBuf::from("/hf/hub"));
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert!(o.offline && !o.progress);
        assert!(!format!("{o:?}").contains("hf_abc"), "the token must not be printed");
        let o = HubOptions::from_vars(vars(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c"), ("HF_HUB_OFFLINE", "0")])).unwrap();
        assert_eq!(o.cache_dir, PathBuf::from("/c"));
        assert!(!o.offline);
        let e = HubOptions::from_vars(vars(&[("HOME", "/h"), ("HF_ENDPOINT", "ftp://x")])).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::BadConfig { var: "HF_ENDPOINT", .. }), "{e}");
        let e = HubOptions::from_vars(vars(&[])).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::BadConfig { var: "HOME", .. }), "{e}");
    }

    #[test]
    fn token_from_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().as_os_str().to_owned();
        let o = HubOptions::from_vars(|k| (k == "HF_HOME").then(|| home.clone())).unwrap();
        assert_eq!(o.token.as_deref(), Some("hf_file"));
    }
}
