//! The hub's HTTP protocol, for the calls [`super::resolve`] makes, over `ureq`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::{Agent, Body};

use super::cache::{self, RepoCache};
use super::progress::{human, Progress};
use super::{HubError, HubErrorKind, HubOptions};

const USER_AGENT: &str = concat!("bitnet-graph/", env!("CARGO_PKG_VERSION"));
/// The largest repository listing read (the hub's answer for a repository of thousands of files
/// is a few MB).
const MAX_JSON: u64 = 64 << 20;
/// Redirects within the hub followed by a `HEAD` (a renamed repository answers with one).
const MAX_HUB_REDIRECTS: usize = 5;

/// A repository's `main`: its commit and its files.
pub(crate) struct RepoInfo {
    pub(crate) commit: String,
    pub(crate) files: Vec<String>,
}

/// What a `HEAD` of `resolve/main/FILE` tells.
pub(crate) struct FileMeta {
    /// `X-Repo-Commit`.
    pub(crate) commit: String,
    /// `X-Linked-Etag` (LFS: the SHA-256), else `ETag`; the blob's name.
    pub(crate) etag: String,
    /// `X-Linked-Size`, else `Content-Length`.
    pub(crate) size: u64,
    /// The URL the file is fetched from (the hub's; it redirects to storage).
    pub(crate) url: String,
}

pub(crate) struct Client {
    /// Follows no redirect (`HEAD`, listings).
    direct: Agent,
    /// Follows redirects, dropping `Authorization` on the way (file transfers).
    follow: Agent,
    endpoint: String,
    token: Option<String>,
    progress: bool,
    retries: u32,
}

enum Fetch {
    /// The connection broke; the bytes so far are on disk.
    Interrupted(String),
    /// The partial file was discarded; start again from byte 0.
    Restart,
    Fatal(HubError),
}

impl From<HubError> for Fetch {
    fn from(e: HubError) -> Self {
        Fetch::Fatal(e)
    }
}

impl Client {
    pub(crate) fn new(o: &HubOptions) -> Self {
        let agent = |redirects: u32| -> Agent {
            Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .user_agent(USER_AGENT)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(o.read_timeout))
                .timeout_per_read(Some(o.read_timeout))
                .build()
                .into()
        };
        Client {
            direct: agent(0),
            follow: agent(10),
            endpoint: o.endpoint.trim_end_matches('/').to_string(),
            token: o.token.clone(),
            progress: o.progress,
            retries: o.retries,
        }
    }

    fn auth(&self, r: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// `GET /api/models/{repo}/revision/main`: the commit and the file list (`siblings`).
    pub(crate) fn repo_info(&self, repo: &str) -> Result<RepoInfo, HubError> {
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: Option<String>,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let url = format!("{}/api/models/{repo}/revision/main", self.endpoint);
        let mut resp = self.auth(self.direct.get(&url)).call().map_err(|e| transport(&url, e))?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(&mut resp, &url, repo, None));
        }
        let text = resp.body_mut().with_config().limit(MAX_JSON).read_to_string().map_err(|e| transport(&url, e))?;
        let info: Info = serde_json::from_str(&text)
            .map_err(|e| bad(&url, format!("the repository listing is not the expected JSON: {e}")))?;
        let commit = info.sha.ok_or_else(|| bad(&url, "the repository listing has no `sha`".into()))?;
        if !cache::is_safe_name(&commit) {
            return Err(bad(&url, format!("commit id {commit:?} is not usable as a folder name")));
        }
        let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
        Ok(RepoInfo { commit, files })
    }

    /// `HEAD /{repo}/resolve/main/{file}`, following redirects within the hub's origin only,
    /// as huggingface_hub does: a redirect to another origin (storage) carries the file's
    /// headers itself, and the token must not leave the hub.
    pub(crate) fn file_meta(&self, repo: &str, file: &str) -> Result<FileMeta, HubError> {
        let mut url = format!("{}/{repo}/resolve/main/{}", self.endpoint, encode_path(file));
        let mut resp = self.auth(self.direct.head(&url)).call().map_err(|e| transport(&url, e))?;
        for _ in 0..MAX_HUB_REDIRECTS {
            let status = resp.status().as_u16();
            let next = match header(&resp, "location") {
                Some(l) if (300..400).contains(&status) => same_origin_target(&url, &l),
                _ => None,
            };
            let Some(next) = next else { break };
            url = next;
            resp = self.auth(self.direct.head(&url)).call().map_err(|e| transport(&url, e))?;
        }
        let status = resp.status().as_u16();
        if !(200..400).contains(&status) {
            return Err(self.status_error(&mut resp, &url, repo, Some(file)));
        }
        let commit = header(&resp, "x-repo-commit").ok_or_else(|| bad(&url, "no X-Repo-Commit header".into()))?;
        let etag = header(&resp, "x-linked-etag")
            .or_else(|| header(&resp, "etag"))
            .ok_or_else(|| bad(&url, "no ETag or X-Linked-Etag header".into()))?;
        let etag = etag.trim().trim_start_matches("W/").trim_matches('"').to_string();
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length"))
            .ok_or_else(|| bad(&url, "no X-Linked-Size or Content-Length header".into()))?;
        let size: u64 = size.trim().parse().map_err(|_| bad(&url, format!("file size {size:?} is not a number")))?;
        for (what, v) in [("commit id", &commit), ("ETag", &etag)] {
            if !cache::is_safe_name(v) {
                return Err(bad(&url, format!("{what} {v:?} is not usable as a file name")));
            }
        }
        Ok(FileMeta { commit, etag, size, url })
    }

    /// Turns a non-success answer into the error it means, reading the hub's `X-Error-Code`
    /// and `X-Error-Message` (or the JSON body's `error`).
    fn status_error(&self, resp: &mut Response<Body>, url: &str, repo: &str, file: Option<&str>) -> HubError {
        let status = resp.status().as_u16();
        let code = header(resp, "x-error-code");
        let message = header(resp, "x-error-message").unwrap_or_else(|| {
            let text = resp.body_mut().with_config().limit(64 << 10).read_to_string().unwrap_or_default();
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| text.trim().chars().take(200).collect())
        });
        let token_sent = self.token.is_some();
        let repo = repo.to_string();
        match (code.as_deref(), status, file) {
            (Some("RepoNotFound"), ..) | (None, 404, None) | (None, 401, _)
                if !(token_sent && code.is_none() && status == 401) =>
            {
                HubErrorKind::RepoNotFound { repo, endpoint: self.endpoint.clone(), status, token_sent }.into()
            }
            (Some("EntryNotFound"), _, Some(f)) | (None, 404, Some(f)) => {
                HubErrorKind::FileNotFound { repo, file: f.to_string(), ggufs: Vec::new() }.into()
            }
            (Some("GatedRepo"), ..) | (_, 401 | 403, _) => {
                HubErrorKind::AccessDenied { repo, status, message, token_sent }.into()
            }
            _ => HubErrorKind::Http { url: url.to_string(), status, message }.into(),
        }
    }

    /// Downloads the file `meta` describes into `blobs/<etag>`: announced on stderr, written to
    /// `<etag>.incomplete` (continuing one that is there), retried with `Range` when the
    /// connection breaks, checked (size; SHA-256 for LFS files), synced, renamed into place.
    pub(crate) fn download(&self, cache: &RepoCache, repo: &str, file: &str, meta: &FileMeta) -> Result<(), HubError> {
        let size = meta.size;
        let blob = cache.blob_path(&meta.etag);
        let partial = cache.incomplete_path(&meta.etag);
        let on_disk = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let resume = if on_disk > 0 && on_disk <= size { format!(", continuing at {}", human(on_disk)) } else { String::new() };
        eprintln!("hub: downloading {repo}:{file} ({}, {size} bytes) from {}{resume}", human(size), meta.url);

        let _lock = cache.lock_blob(&meta.etag)?;
        if blob.is_file() {
            return Ok(()); // Another process finished it while we waited for the lock.
        }
        if let Some(dir) = partial.parent() {
            fs::create_dir_all(dir).map_err(|e| HubError::io(dir, "create folder", e))?;
        }
        let mut out = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(|e| HubError::io(&partial, "open", e))?;
        let mut have = out.metadata().map_err(|e| HubError::io(&partial, "stat", e))?.len();
        if have > size {
            eprintln!("hub: {} is longer than the file ({have} > {size} bytes); starting again", partial.display());
            truncate(&mut out, &partial)?;
            have = 0;
        }
        let expected_sha = is_sha256(&meta.etag).then(|| meta.etag.to_ascii_lowercase());
        // Invariant: `hasher` has seen bytes 0..have of the partial file.
        let mut hasher = Sha256::new();
        hash_prefix(&mut out, &partial, have, &mut hasher)?;
        let mut progress = Progress::new(self.progress, size, have);
        let mut transferred = false;
        let mut attempts = 0u32;
        while have < size {
            transferred = true;
            let before = have;
            match self.fetch(meta, &mut out, &partial, &mut have, &mut hasher, &mut progress) {
                Ok(()) => {}
                Err(Fetch::Fatal(e)) => return Err(e),
                Err(Fetch::Restart) => {
                    hasher = Sha256::new();
                    attempts += 1;
                    if attempts > self.retries {
                        return Err(bad(&meta.url, "the server refused every Range request".into()));
                    }
                }
                Err(Fetch::Interrupted(message)) => {
                    progress.break_line();
                    if attempts >= self.retries {
                        return Err(HubErrorKind::Interrupted {
                            repo: repo.to_string(),
                            file: file.to_string(),
                            have,
                            size,
                            message,
                            partial: partial.clone(),
                        }
                        .into());
                    }
                    attempts += 1;
                    eprintln!(
                        "hub: transfer interrupted at {have} of {size} bytes ({message}); resuming ({attempts}/{})",
                        self.retries
                    );
                    if have == before {
                        // Nothing arrived: give the network a moment before asking again.
                        std::thread::sleep(Duration::from_secs(u64::from(attempts)));
                    }
                }
            }
            if have > size {
                drop(out);
                let _ = fs::remove_file(&partial);
                return Err(HubErrorKind::SizeMismatch {
                    repo: repo.into(),
                    file: file.into(),
                    expected: size,
                    got: have,
                    deleted: partial,
                }
                .into());
            }
        }
        if transferred {
            progress.finish(have);
        }
        cache::sync(&mut out, &partial)?;
        drop(out);
        if let Some(expected) = expected_sha {
            let got = hex(&hasher.finalize());
            if got != expected {
                fs::remove_file(&partial).map_err(|e| HubError::io(&partial, "delete the corrupt download", e))?;
                return Err(HubErrorKind::ChecksumMismatch {
                    repo: repo.into(),
                    file: file.into(),
                    expected,
                    got,
                    deleted: partial,
                }
                .into());
            }
        }
        fs::rename(&partial, &blob).map_err(|e| HubError::io(&blob, "rename into place", e))
    }

    /// One `GET` from `*have` to the end, appending to `out` and hashing what it appends.
    fn fetch(
        &self,
        meta: &FileMeta,
        out: &mut File,
        path: &Path,
        have: &mut u64,
        hasher: &mut Sha256,
        progress: &mut Progress,
    ) -> Result<(), Fetch> {
        let url = &meta.url;
        let mut req = self.auth(self.follow.get(url)).header("Accept-Encoding", "identity");
        if *have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) if *have > 0 || is_interruption(&e) => return Err(Fetch::Interrupted(e.to_string())),
            Err(e) => return Err(transport(url, e).into()),
        };
        match resp.status().as_u16() {
            206 => {
                let cr = header(&resp, "content-range").unwrap_or_default();
                match parse_content_range(&cr) {
                    Some((start, total)) if start == *have && total == meta.size => {}
                    _ => {
                        return Err(
                            bad(url, format!("asked for bytes {have}- of {}, got Content-Range {cr:?}", meta.size)).into()
                        );
                    }
                }
            }
            200 => {
                if *have > 0 {
                    eprintln!("hub: the server ignored the Range request; starting again from byte 0");
                    truncate(out, path)?;
                    *have = 0;
                    *hasher = Sha256::new();
                }
            }
            416 => {
                eprintln!("hub: the server refused to continue at byte {have}; starting again from byte 0");
                truncate(out, path)?;
                *have = 0;
                return Err(Fetch::Restart);
            }
            _ => {
                // The redirect target answered, or the hub did; either way say what and where.
                let status = resp.status().as_u16();
                let message = header(&resp, "x-error-message").unwrap_or_default();
                return Err(HubError::from(HubErrorKind::Http { url: url.clone(), status, message }).into());
            }
        }
        out.seek(SeekFrom::Start(*have)).map_err(|e| HubError::io(path, "seek", e))?;
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fetch::Interrupted(e.to_string())),
            };
            let n64 = n as u64;
            if *have + n64 > meta.size {
                *have += n64;
                return Ok(()); // The caller reports the size mismatch and deletes the file.
            }
            out.write_all(&buf[..n]).map_err(|e| HubError::io(path, "write", e))?;
            hasher.update(&buf[..n]);
            *have += n64;
            progress.update(*have);
        }
        if *have < meta.size {
            return Err(Fetch::Interrupted(format!("the connection closed after {have} bytes")));
        }
        Ok(())
    }
}

fn truncate(out: &mut File, path: &Path) -> Result<(), HubError> {
    out.set_len(0).map_err(|e| HubError::io(path, "truncate", e))?;
    out.seek(SeekFrom::Start(0)).map_err(|e| HubError::io(path, "seek", e))?;
    Ok(())
}

/// Hashes the first `len` bytes of `f` (the part of a download already on disk).
fn hash_prefix(f: &mut File, path: &Path, len: u64, hasher: &mut Sha256) -> Result<(), HubError> {
    f.seek(SeekFrom::Start(0)).map_err(|e| HubError::io(path, "seek", e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..want]).map_err(|e| HubError::io(path, "read the partial download", e))?;
        hasher.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(())
}

/// Whether a failed call broke off a transfer (worth resuming) rather than failed to start one.
fn is_interruption(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(_) | ureq::Error::Timeout(_))
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn transport(url: &str, e: ureq::Error) -> HubError {
    HubErrorKind::Transport { url: url.to_string(), message: e.to_string() }.into()
}

fn bad(url: &str, what: String) -> HubError {
    HubErrorKind::BadResponse { url: url.to_string(), what }.into()
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The absolute URL a `Location` leads to from `url`, when it stays on `url`'s origin.
fn same_origin_target(url: &str, location: &str) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        Some(format!("{}{location}", origin(url)))
    } else {
        (origin(location) == origin(url) && location.contains("://")).then(|| location.to_string())
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// Percent-encodes each `/`-separated part of a repository path.
fn encode_path(p: &str) -> String {
    let mut s = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case hex digits of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(encode_path("sub dir/a+b.gguf"), "sub%20dir/a%2Bb.gguf");
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        let u = "http://127.0.0.1:8080/o/r/resolve/main/m.gguf";
        assert_eq!(
            same_origin_target(u, "/o2/r/resolve/main/m.gguf").as_deref(),
            Some("http://127.0.0.1:8080/o2/r/resolve/main/m.gguf")
        );
        assert_eq!(same_origin_target(u, "http://127.0.0.1:8080/x").as_deref(), Some("http://127.0.0.1:8080/x"));
        assert_eq!(same_origin_target(u, "http://127.0.0.1:9090/cdn/x"), None);
        assert_eq!(same_origin_target(u, "//evil/x"), None);
        assert!(is_sha256(&"a".repeat(64)) && !is_sha256(&"a".repeat(40)));
    }
}
