"""Fixtures for the `bitnet-graph serve` tests: a server on 127.0.0.1 (a free port chosen
by the OS) on a shared model, and `exec` runs of the same binary to compare against.

Run from the repository root after `cargo build --release`:
    python3 -m pytest tools/tests/serve -q
BITNET_GRAPH_BIN overrides the binary, BITNET_SHARED the shared data folder.
"""

import contextlib
import http.client
import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("BITNET_GRAPH_BIN", str(ROOT / "target" / "release" / "bitnet-graph"))
SHARED = pathlib.Path(os.environ.get("BITNET_SHARED", str(ROOT.parent / "shared")))
TINY = SHARED / "models" / "tiny-i2_s.gguf"
# Positions per sequence in the test servers: enough for every test prompt, small enough
# that "over the context" is a short prompt.
CTX = 512


class Resp:
    """A whole HTTP response."""

    def __init__(self, status, body):
        self.status_code = status
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


def _send(method, url, json_body=None, content=None, headers=None, timeout=120):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    body = content if content is not None else (json.dumps(json_body).encode() if json_body is not None else b"")
    c.putrequest(method, u.path)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
        c.putheader(k, v)
    c.endheaders()
    try:
        c.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (413) without reading the whole body
    return c, c.getresponse()


def request(method, url, json=None, content=None, headers=None, timeout=120):
    """One request with the standard library (no HTTP client package to drift)."""
    c, r = _send(method, url, json, content, headers, timeout)
    try:
        return Resp(r.status, r.read())
    finally:
        c.close()


def get(url, **kw):
    return request("GET", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)


class Streamed:
    """A response read line by line; leaving the `with` block closes the connection."""

    def __init__(self, conn, resp):
        self.conn, self.resp, self.status_code = conn, resp, resp.status

    def iter_lines(self):
        for raw in self.resp:
            yield raw.decode("utf-8", "replace").rstrip("\r\n")


@contextlib.contextmanager
def stream(method, url, json=None, headers=None, timeout=120):
    c, r = _send(method, url, json, None, headers, timeout)
    try:
        yield Streamed(c, r)
    finally:
        r.close()
        c.close()


class Server:
    """A running `serve` process; `stop()` sends SIGTERM and checks exit code 0."""

    def __init__(self, *args, model=TINY, ready=True, ctx=CTX):
        cmd = [BIN, "serve", str(model), "--port", "0", "-c", str(ctx), *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log = []
        self._listening = threading.Event()
        self.base = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(60):
            self.proc.kill()
            raise RuntimeError("serve did not start listening:\n" + "".join(self.log))
        if ready:
            self.wait_ready()

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m and self.base is None:
                self.base = m.group(1)
                self._listening.set()

    def url(self, path):
        return self.base + path

    def wait_ready(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            assert self.proc.poll() is None, "serve exited:\n" + "".join(self.log)
            r = get(self.url("/health"))
            if r.status_code == 200:
                return
            assert r.status_code == 503 and r.json() == {"status": "loading"}, r.text
            time.sleep(0.05)
        raise TimeoutError("".join(self.log))

    def metrics(self, headers=None):
        r = get(self.url("/metrics"), headers=headers or {})
        assert r.status_code == 200, r.text
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        assert code == 0, f"serve exited with {code}:\n" + "".join(self.log)


@pytest.fixture(scope="session")
def server():
    s = Server("--parallel", "4", "--max-queue", "32")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def model_name(server):
    return get(server.url("/v1/models")).json()["data"][0]["id"]


_exec_cache = {}


def exec_json(prompt, n, chat=False, system=None, model=TINY):
    """`exec --json` at temperature 0: the reference output (cached per arguments)."""
    key = (prompt, n, chat, system, str(model))
    if key not in _exec_cache:
        cmd = [BIN, "exec", str(model), "-p", prompt, "-n", str(n), "--temperature", "0", "--json"]
        if chat:
            cmd.append("--chat")
        if system is not None:
            cmd += ["--system", system]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        _exec_cache[key] = json.loads(out.stdout)
    return _exec_cache[key]


def exec_solo_many(prompts, n, chat=False, model=TINY):
    """`exec --prompts-file --parallel 1` at temperature 0: each prompt run alone, one
    after the other, in one process (one model load instead of one per prompt)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, "chat": chat}) + "\n")
    try:
        cmd = [BIN, "exec", str(model), "--prompts-file", f.name, "--parallel", "1", "-n", str(n), "--temperature", "0"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]
