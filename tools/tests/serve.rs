//! `bitnet-graph serve` over raw HTTP on 127.0.0.1, without Python: a temperature-0
//! completion (whole and streamed) equals `exec`'s, bad input gets OpenAI-shaped errors and
//! the server keeps answering, and SIGTERM exits 0. The full client suite (the `openai`
//! package, concurrency, the browser) is `tools/tests/serve/`, run by `.ci/run`.
//! Run with `--release`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/tiny-i2_s.gguf").display().to_string()
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-graph"))
            .args(["serve", &tiny(), "--port", "0", "-c", "256"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("serve prints its address");
        let s = Server { child, addr };
        let t0 = Instant::now();
        loop {
            let (status, body) = s.request("GET", "/health", None);
            if status == 200 {
                assert_eq!(body, json!({"status": "ok"}));
                break;
            }
            assert_eq!((status, body), (503, json!({"status": "loading"})));
            assert!(t0.elapsed() < Duration::from_secs(60), "model did not load");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// One HTTP/1.1 request; returns the status and the raw body.
    fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        let mut c = TcpStream::connect(&self.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        let _ = c.write_all(body);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body =
            if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_string() };
        (status, body)
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let b = body.map(|b| b.to_string());
        let (status, text) = self.raw(method, path, b.as_deref().map(str::as_bytes));
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn sigterm(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "serve did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes a chunked transfer encoding.
fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn exec_json(prompt: &str, n: usize) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-graph"))
        .args(["exec", &tiny(), "-p", prompt, "-n", &n.to_string(), "--temperature", "0", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn assert_error(status: u16, body: &Value, want: u16, param: Option<&str>) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(), "{body}");
    assert_eq!(e["param"].as_str(), param, "{body}");
}

#[test]
fn serve_completion_equals_exec_and_errors_are_openai_shaped() {
    let s = Server::start(&["--parallel", "2"]);
    let (_, models) = s.request("GET", "/v1/models", None);
    let name = models["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(name, "tiny-i2_s");

    let prompt = "The capital of France is";
    let reference = exec_json(prompt, 16);
    let req = json!({"model": name, "prompt": prompt, "max_tokens": 16, "temperature": 0, "return_tokens": true});
    let (status, r) = s.request("POST", "/v1/completions", Some(&req));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["text"], reference["text"]);
    assert_eq!(r["choices"][0]["tokens"], reference["generated_tokens"]);
    assert_eq!(r["usage"]["prompt_tokens"], reference["n_prompt_tokens"]);

    // Streamed: `data: {chunk}` events, then `data: [DONE]`; the same text and tokens.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (status, sse) = s.raw("POST", "/v1/completions", Some(sreq.to_string().as_bytes()));
    assert_eq!(status, 200, "{sse}");
    let data: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{sse}");
    let (mut text, mut tokens) = (String::new(), Vec::new());
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        text.push_str(c["choices"][0]["text"].as_str().unwrap());
        tokens.extend(c["choices"][0]["tokens"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(json!(text), reference["text"]);
    assert_eq!(json!(tokens), reference["generated_tokens"]);

    let chat = "/v1/chat/completions";
    let (st, b) = s.raw("POST", chat, Some(b"{\"messages\": ["));
    assert_error(st, &serde_json::from_str(&b).unwrap(), 400, None);
    let bad = [
        (json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1.5}), 400, Some("max_tokens")),
        (json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}), 400, Some("temperature")),
        (json!({"messages": [{"role": "user", "content": "hi"}], "model": "other"}), 404, Some("model")),
        (json!({"messages": [{"role": "user", "content": "word ".repeat(600)}]}), 400, Some("messages")),
        (json!({"prompt": "x", "n": 2}), 400, Some("n")),
    ];
    for (body, want, param) in bad {
        let path = if body.get("prompt").is_some() { "/v1/completions" } else { chat };
        let (st, r) = s.request("POST", path, Some(&body));
        assert_error(st, &r, want, param);
        assert_eq!(s.request("GET", "/health", None), (200, json!({"status": "ok"})));
    }
    let (st, b) = s.raw("POST", chat, Some(&vec![b' '; 5 << 20]));
    assert_error(st, &serde_json::from_str(&b).unwrap(), 413, None);
    let (st, r) = s.request("POST", "/v1/completions", Some(&json!({"prompt": "Hi", "max_tokens": 2})));
    assert_eq!(st, 200, "{r}");

    let status = s.sigterm();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_refuses_bad_flags_with_exit_2() {
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-graph")).args(["serve", "/nonexistent.gguf"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such model file"));
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-graph")).args(["serve", &tiny(), "--parallel", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--parallel 0"), "{}", String::from_utf8_lossy(&o.stderr));
}
