//! A fake Hugging Face hub for tests (feature `fake-hub`): an HTTP/1.1 server on 127.0.0.1
//! that answers the calls [`super::resolve`] (and huggingface_hub's `hf_hub_download`) make,
//! serving files held in memory, with switches to break or stall a transfer, corrupt a byte or
//! ignore `Range`, and a log of every request.
//!
//! It speaks:
//! - `GET /api/models/{owner}/{name}[/revision/main]`: `{"id", "sha", "siblings": [{"rfilename"}]}`;
//! - `HEAD`/`GET /{owner}/{name}/resolve/main/{file}`: for `.gguf` files (LFS on the real hub)
//!   a `302` to `/cdn/{sha256}` on the storage port (another origin, as the hub's storage is) with `X-Repo-Commit`, `X-Linked-Etag` (the SHA-256) and
//!   `X-Linked-Size`; for other files a `200` with `ETag` and `X-Repo-Commit`;
//! - `HEAD`/`GET /cdn/{sha256}`: the bytes, with `Range: bytes=N-[M]` answered by `206`;
//! - errors as the hub gives them: `401` + `X-Error-Code: RepoNotFound` for an unknown
//!   repository, `404` + `EntryNotFound` for an unknown file, `401` + `GatedRepo` for a repository
//!   that wants a token when the request has none (or another).
//!
//! Every answer closes the connection. Not for production: it trusts its tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::client::hex;

/// One request the fake hub received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD` (or whatever was sent).
    pub method: String,
    /// The request target, e.g. `/owner/name/resolve/main/x.gguf`.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

struct FakeFile {
    data: Arc<Vec<u8>>,
    sha256: String,
}

#[derive(Default)]
struct FakeRepo {
    files: BTreeMap<String, FakeFile>,
    token: Option<String>,
}

#[derive(Default)]
struct State {
    /// `http://127.0.0.1:PORT` of "storage", where LFS files are redirected.
    storage: String,
    repos: BTreeMap<String, FakeRepo>,
    log: Vec<Request>,
    cut_after: Option<u64>,
    stall_after: Option<u64>,
    corrupt_at: Option<u64>,
    ignore_range: bool,
}

/// The server; it stops when dropped. It listens on two ports: the hub's, and "storage"'s,
/// where LFS downloads are redirected (another origin, as on the real hub, so clients drop the
/// `Authorization` header and read the file's metadata from the redirect).
pub struct FakeHub {
    addrs: [SocketAddr; 2],
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeHub {
    /// Starts a server on 127.0.0.1 on two free ports.
    pub fn start() -> FakeHub {
        let bind = || {
            let l = TcpListener::bind("127.0.0.1:0").expect("fake hub: bind 127.0.0.1:0");
            let a = l.local_addr().expect("fake hub: local address");
            (l, a)
        };
        let (hub, hub_addr) = bind();
        let (storage, storage_addr) = bind();
        let state = Arc::new(Mutex::new(State { storage: format!("http://{storage_addr}"), ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [hub, storage]
            .into_iter()
            .map(|listener| {
                let (st, sp) = (state.clone(), stop.clone());
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if sp.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, &st);
                        });
                    }
                })
            })
            .collect();
        FakeHub { addrs: [hub_addr, storage_addr], state, stop, threads }
    }

    /// `http://127.0.0.1:PORT`, the value for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `name` with `data` to repository `repo` (`owner/name`), creating the repository.
    /// Files ending in `.gguf` are served as LFS files.
    pub fn add_file(&self, repo: &str, name: &str, data: Vec<u8>) {
        let sha256 = hex(&Sha256::digest(&data));
        self.state()
            .repos
            .entry(repo.to_string())
            .or_default()
            .files
            .insert(name.to_string(), FakeFile { data: Arc::new(data), sha256 });
    }

    /// [`FakeHub::add_file`] with the contents of a file on disk.
    pub fn add_file_from(&self, repo: &str, name: &str, path: &Path) -> std::io::Result<()> {
        self.add_file(repo, name, std::fs::read(path)?);
        Ok(())
    }

    /// Makes `repo` answer only requests that carry `Authorization: Bearer {token}`.
    pub fn require_token(&self, repo: &str, token: &str) {
        self.state().repos.entry(repo.to_string()).or_default().token = Some(token.to_string());
    }

    /// The SHA-256 (hex) of a served file.
    pub fn sha256(&self, repo: &str, name: &str) -> String {
        self.state().repos[repo].files[name].sha256.clone()
    }

    /// The commit id the hub reports for `repo`: 40 hex digits derived from its files' names and
    /// hashes, so adding a file makes a new commit.
    pub fn commit(&self, repo: &str) -> String {
        commit_of(&self.state().repos[repo])
    }

    /// Breaks the next file transfer (a `GET` of a body) after `n` bytes of its body, by closing
    /// the connection; later transfers are whole.
    pub fn cut_next_transfer_after(&self, n: u64) {
        self.state().cut_after = Some(n);
    }

    /// Makes the next file transfer stop sending after `n` bytes of its body and hold the
    /// connection open for 5 s before closing it (a stalled network); later transfers are whole.
    pub fn stall_next_transfer_after(&self, n: u64) {
        self.state().stall_after = Some(n);
    }

    /// Flips the bits of the byte at `offset` of every file body served from now on (`None`
    /// stops it). The headers still announce the true SHA-256.
    pub fn corrupt_byte_at(&self, offset: Option<u64>) {
        self.state().corrupt_at = offset;
    }

    /// Answers `Range` requests with the whole file (`200`), as some mirrors do.
    pub fn ignore_range(&self, on: bool) {
        self.state().ignore_range = on;
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.state().log.clone()
    }

    /// The number of requests so far.
    pub fn request_count(&self) -> usize {
        self.state().log.len()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.state().log.clear();
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in &self.addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_secs(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn commit_of(repo: &FakeRepo) -> String {
    let mut h = Sha256::new();
    for (name, f) in &repo.files {
        h.update(name.as_bytes());
        h.update(f.sha256.as_bytes());
    }
    hex(&h.finalize())[..40].to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Answer {
    status: u16,
    reason: &'static str,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    None,
    Text(String),
    /// A slice `start..end` of a file.
    File {
        data: Arc<Vec<u8>>,
        start: u64,
        end: u64,
    },
}

impl Answer {
    fn new(status: u16, reason: &'static str) -> Self {
        Answer { status, reason, headers: Vec::new(), body: Body::None }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    fn error(status: u16, reason: &'static str, code: &str, message: &str) -> Self {
        let mut a = Answer::new(status, reason).header("X-Error-Code", code).header("X-Error-Message", message);
        a.body = Body::Text(serde_json::json!({ "error": message }).to_string());
        a.header("Content-Type", "application/json")
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return Ok(()) };
    let (method, target) = (method.to_string(), target.to_string());
    let mut range = None;
    let mut authorization = None;
    let mut total = line.len();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        total += h.len();
        if total > 64 << 10 {
            return Ok(());
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let req =
        Request { method: method.clone(), path: target.clone(), range: range.clone(), authorization: authorization.clone() };
    let (answer, cut, corrupt) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.log.push(req);
        let answer = route(&st, &method, &target, range.as_deref(), authorization.as_deref());
        let is_transfer = method == "GET" && matches!(answer.body, Body::File { .. });
        let cut = if is_transfer { st.cut_after.take() } else { None };
        let stall = if is_transfer && cut.is_none() { st.stall_after.take() } else { None };
        (answer, cut.or(stall).map(|n| (n, stall.is_some())), st.corrupt_at)
    };
    write_answer(conn, &method, answer, cut, corrupt)
}

fn route(st: &State, method: &str, target: &str, range: Option<&str>, auth: Option<&str>) -> Answer {
    if method != "GET" && method != "HEAD" {
        return Answer::new(405, "Method Not Allowed");
    }
    let path = percent_decode(target.split('?').next().unwrap_or(""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    if let ["cdn", sha] = segs.as_slice() {
        let found = st.repos.values().flat_map(|r| r.files.values()).find(|f| f.sha256 == *sha);
        return match found {
            Some(f) => file_answer(f, range, st.ignore_range).header("ETag", format!("\"{}\"", f.sha256)),
            None => Answer::new(404, "Not Found"),
        };
    }

    let (repo_name, rest): (String, &[&str]) = match segs.as_slice() {
        ["api", "models", owner, name, rest @ ..] => (format!("{owner}/{name}"), rest),
        [owner, name, "resolve", rest @ ..] => (format!("{owner}/{name}"), rest),
        _ => return Answer::new(404, "Not Found"),
    };
    let Some(repo) = st.repos.get(&repo_name) else {
        return Answer::error(401, "Unauthorized", "RepoNotFound", "Repository not found");
    };
    if let Some(t) = &repo.token {
        if auth != Some(format!("Bearer {t}").as_str()) {
            return Answer::error(401, "Unauthorized", "GatedRepo", &format!("Access to model {repo_name} is restricted. You must have access to it and be authenticated to access it. Please log in."));
        }
    }
    let commit = commit_of(repo);

    if segs[0] == "api" {
        if !(rest.is_empty() || rest == ["revision", "main"]) {
            return Answer::error(404, "Not Found", "RevisionNotFound", "Invalid rev id");
        }
        let siblings: Vec<_> = repo.files.keys().map(|k| serde_json::json!({ "rfilename": k })).collect();
        let body =
            serde_json::json!({ "id": repo_name, "modelId": repo_name, "sha": commit, "private": false, "siblings": siblings })
                .to_string();
        let mut a = Answer::new(200, "OK").header("Content-Type", "application/json");
        a.body = Body::Text(body);
        return a;
    }

    let [rev, file @ ..] = rest else { return Answer::new(404, "Not Found") };
    if *rev != "main" {
        return Answer::error(404, "Not Found", "RevisionNotFound", "Invalid rev id");
    }
    let file = file.join("/");
    let Some(f) = repo.files.get(&file) else {
        return Answer::error(404, "Not Found", "EntryNotFound", &format!("Entry not found: {file}"));
    };
    if file.ends_with(".gguf") {
        // LFS: redirect to storage; the hub's own headers describe the file.
        let mut a = Answer::new(302, "Found")
            .header("Location", format!("{}/cdn/{}", st.storage, f.sha256))
            .header("X-Repo-Commit", &commit)
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256))
            .header("X-Linked-Size", f.data.len().to_string())
            .header("ETag", format!("\"{}\"", &f.sha256[..40]));
        a.body = Body::Text(format!("Found. Redirecting to {}/cdn/{}", st.storage, f.sha256));
        a
    } else {
        let git_etag = hex(&Sha256::digest(format!("blob {}", f.sha256)))[..40].to_string();
        file_answer(f, range, st.ignore_range).header("X-Repo-Commit", &commit).header("ETag", format!("\"{git_etag}\""))
    }
}

fn file_answer(f: &FakeFile, range: Option<&str>, ignore_range: bool) -> Answer {
    let len = f.data.len() as u64;
    let whole = |status, reason| {
        let mut a = Answer::new(status, reason).header("Accept-Ranges", "bytes");
        a.body = Body::File { data: f.data.clone(), start: 0, end: len };
        a
    };
    let Some(r) = range.filter(|_| !ignore_range) else { return whole(200, "OK") };
    let parsed = r.strip_prefix("bytes=").and_then(|s| s.split_once('-')).and_then(|(a, b)| {
        let start: u64 = a.trim().parse().ok()?;
        let end: u64 = if b.trim().is_empty() { len } else { b.trim().parse::<u64>().ok()?.saturating_add(1).min(len) };
        Some((start, end))
    });
    match parsed {
        Some((start, end)) if start < len && start < end => {
            let mut a = Answer::new(206, "Partial Content")
                .header("Accept-Ranges", "bytes")
                .header("Content-Range", format!("bytes {start}-{}/{len}", end - 1));
            a.body = Body::File { data: f.data.clone(), start, end };
            a
        }
        _ => Answer::new(416, "Range Not Satisfiable").header("Content-Range", format!("bytes */{len}")),
    }
}

/// Writes `a`; `cut` = (n, stall) sends only n bytes of a file body, then closes the connection
/// (after 5 s when stalling).
fn write_answer(
    mut conn: TcpStream,
    method: &str,
    a: Answer,
    cut: Option<(u64, bool)>,
    corrupt: Option<u64>,
) -> std::io::Result<()> {
    let len = match &a.body {
        Body::None => 0,
        Body::Text(t) => t.len() as u64,
        Body::File { start, end, .. } => end - start,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", a.status, a.reason);
    for (k, v) in &a.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!("Content-Length: {len}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        match a.body {
            Body::None => {}
            Body::Text(t) => conn.write_all(t.as_bytes())?,
            Body::File { data, start, end } => {
                let send_end = cut.map_or(end, |(n, _)| (start + n).min(end));
                let mut pos = start;
                while pos < send_end {
                    let chunk_end = (pos + (64 << 10)).min(send_end);
                    let mut chunk = data[pos as usize..chunk_end as usize].to_vec();
                    if let Some(c) = corrupt.filter(|c| (pos..chunk_end).contains(c)) {
                        chunk[(c - pos) as usize] ^= 0xff;
                    }
                    conn.write_all(&chunk)?;
                    pos = chunk_end;
                }
                if let Some((_, true)) = cut {
                    conn.flush()?;
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}
