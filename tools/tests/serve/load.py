#!/usr/bin/env python3
"""A bounded load test of `bitnet-graph serve` on loopback (standard library only).

Starts the server on 127.0.0.1 (a free port), measures one request alone, then sends
--requests streaming completions from --concurrency threads, measures one request alone
again, and stops the server. Prints failures, time to first token (p50, p99), aggregate
generated tok/s, the single request's tok/s and the server's peak RSS; exits 1 on any
failure. It stops by itself: the request count is fixed and every request has a timeout.

On a shared machine wall-clock rates move with the other load, so it also reports tokens
per CPU-second of the server process (user + system time from /proc), for the single
requests and for the loaded phase: their ratio is the batching gain with the contention
factored out.

    python3 tools/tests/serve/load.py --model ../shared/models/tiny-i2_s.gguf
    python3 tools/tests/serve/load.py --model /tmp/b2.gguf --parallel 8 --max-tokens 32
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[3]


def start(args):
    cmd = [args.bin, "serve", args.model, "--host", "127.0.0.1", "--port", "0", "--parallel", str(args.parallel),
           "--max-queue", str(args.requests), "-c", str(args.ctx)] + (["-t", str(args.threads)] if args.threads else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = threading.Event()
    addr = []

    def read():
        for line in proc.stderr:
            m = re.search(r"listening on http://(\S+)", line)
            if m and not addr:
                addr.append(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(120):
        proc.kill()
        sys.exit("serve did not start")
    host, port = addr[0].rsplit(":", 1)
    t0 = time.time()
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.time() - t0 > 300 or proc.poll() is not None:
            proc.kill()
            sys.exit("serve did not become ready")
        time.sleep(0.1)
    return proc, host, int(port)


def one(host, port, i, max_tokens, timeout):
    """One streaming completion: (ok, time to first token, seconds, generated tokens, error)."""
    body = json.dumps({"prompt": f"Request {i}: the history of the number {i * 7919 % 1000} is",
                       "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            return False, None, 0, 0, f"HTTP {r.status}: {r.read()[:200]!r}"
        done = False
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            j = json.loads(data)
            if "error" in j:
                return False, ttft, time.perf_counter() - t0, tokens, j["error"]["message"]
            if j.get("usage"):
                tokens = j["usage"]["completion_tokens"]
            if ttft is None and j["choices"] and j["choices"][0]["text"]:
                ttft = time.perf_counter() - t0
        c.close()
        return done, ttft, time.perf_counter() - t0, tokens, None if done else "no [DONE]"
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        return False, ttft, time.perf_counter() - t0, tokens, repr(e)


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def single(host, port, pid, args):
    """One request alone: (tok/s over its decode, generated tokens per CPU-second)."""
    c0 = cpu_s(pid)
    ok, ttft, secs, n, err = one(host, port, -1, args.max_tokens, args.timeout)
    if not ok:
        sys.exit(f"the single request failed: {err}")
    rate = (n - 1) / (secs - ttft) if n > 1 and secs > ttft else float("nan")
    return rate, n / max(cpu_s(pid) - c0, 1e-9)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "bitnet-graph"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    proc, host, port = start(args)
    try:
        # One request alone: the single-stream rate (decode time only, after the first
        # token), before and after the loaded phase.
        single_before, single_cpu_before = single(host, port, proc.pid, args)
        c0 = cpu_s(proc.pid)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda i: one(host, port, i, args.max_tokens, args.timeout), range(args.requests)))
        wall = time.perf_counter() - t0
        loaded_cpu = cpu_s(proc.pid) - c0
        single_after, single_cpu_after = single(host, port, proc.pid, args)
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    fails = [r[4] for r in results if not r[0]]
    ttfts = [r[1] for r in results if r[1] is not None]
    gen = sum(r[3] for r in results)
    out = {
        "model": os.path.basename(args.model), "parallel": args.parallel, "requests": args.requests,
        "concurrency": args.concurrency, "max_tokens": args.max_tokens, "failures": len(fails),
        "ttft_p50_s": round(pct(ttfts, 50), 3), "ttft_p99_s": round(pct(ttfts, 99), 3),
        "generated_tokens": gen, "wall_s": round(wall, 2), "aggregate_tok_s": round(gen / wall, 2),
        "single_request_tok_s": [round(single_before, 2), round(single_after, 2)],
        "speedup_wall": round(gen / wall / ((single_before + single_after) / 2), 2),
        "tok_per_cpu_s_loaded": round(gen / loaded_cpu, 2),
        "tok_per_cpu_s_single": [round(single_cpu_before, 2), round(single_cpu_after, 2)],
        "speedup_cpu": round(gen / loaded_cpu / ((single_cpu_before + single_cpu_after) / 2), 2),
        "server_cpu_s": round(loaded_cpu, 1),
        "peak_rss_mb": round(hwm / 2**20, 1), "exit_code": code,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
        for e in fails[:5]:
            print("failure:", e)
    sys.exit(1 if fails or code != 0 else 0)


if __name__ == "__main__":
    main()
