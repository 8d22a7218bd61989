"""`bitnet-graph serve` through the official `openai` client and raw HTTP: outputs equal
`exec`'s token for token, concurrency is batch invariant, bad input gets OpenAI-shaped
errors and leaves the server answering, a dropped stream frees its sequence."""

import concurrent.futures
import json
import signal
import socket
import time

import openai
import pytest

from conftest import CTX, Server, exec_json, exec_solo_many, get, post, stream

N = 24  # tokens per comparison: enough to cover several steps, quick on the tiny model


def client(server, key="unused"):
    return openai.OpenAI(base_url=server.url("/v1"), api_key=key, max_retries=0, timeout=120)


def stream_chat(c, model, messages, n, **extra):
    """Streams a chat completion; returns (text, token ids, finish_reason, usage)."""
    text, tokens, finish, usage = "", [], None, None
    s = c.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=n, stream=True,
        stream_options={"include_usage": True}, extra_body={"return_tokens": True, **extra})
    for chunk in s:
        d = chunk.model_dump()
        if d.get("usage"):
            usage = d["usage"]
        for ch in d["choices"]:
            text += ch["delta"].get("content") or ""
            tokens += ch.get("tokens") or []
            finish = ch["finish_reason"] or finish
    return text, tokens, finish, usage


def expected_finish(ref, n):
    return "length" if ref["n_generated_tokens"] == n else "stop"


@pytest.mark.parametrize("system", [None, "You are terse."])
def test_chat_equals_exec_chat(server, model_name, system):
    prompt = "What is the capital of France?"
    ref = exec_json(prompt, N, chat=True, system=system)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    c = client(server)
    r = c.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=N,
                                  extra_body={"return_tokens": True})
    d = r.model_dump()
    assert d["object"] == "chat.completion" and d["id"].startswith("chatcmpl-") and d["model"] == model_name
    ch = d["choices"][0]
    assert (ch["message"]["role"], ch["message"]["content"]) == ("assistant", ref["text"])
    assert ch["tokens"] == ref["generated_tokens"]
    assert ch["finish_reason"] == expected_finish(ref, N)
    u = d["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (
        ref["n_prompt_tokens"], ref["n_generated_tokens"], ref["n_prompt_tokens"] + ref["n_generated_tokens"])
    text, tokens, finish, usage = stream_chat(c, model_name, messages, N)
    assert (text, tokens, finish) == (ref["text"], ref["generated_tokens"], expected_finish(ref, N))
    assert usage["completion_tokens"] == ref["n_generated_tokens"]


def test_completion_equals_exec(server, model_name):
    prompt = "The capital of France is"
    ref = exec_json(prompt, N)
    c = client(server)
    r = c.completions.create(model=model_name, prompt=prompt, temperature=0, max_tokens=N, extra_body={"return_tokens": True})
    d = r.model_dump()
    assert d["object"] == "text_completion"
    assert d["choices"][0]["text"] == ref["text"]
    assert d["choices"][0]["tokens"] == ref["generated_tokens"]
    assert d["choices"][0]["finish_reason"] == expected_finish(ref, N)
    assert d["usage"]["prompt_tokens"] == ref["n_prompt_tokens"]
    text, tokens, finish = "", [], None
    for chunk in c.completions.create(model=model_name, prompt=prompt, temperature=0, max_tokens=N, stream=True,
                                      extra_body={"return_tokens": True}):
        ch = chunk.model_dump()["choices"][0]
        text += ch["text"]
        tokens += ch.get("tokens") or []
        finish = ch["finish_reason"] or finish
    assert (text, tokens, finish) == (ref["text"], ref["generated_tokens"], expected_finish(ref, N))


def test_sixteen_concurrent_streams_equal_solo_exec(server, model_name):
    prompts = [f"Story number {i}: once upon a time" if i % 2 else f"Question {i}: why is the sky blue?" for i in range(16)]
    refs = exec_solo_many(prompts, N, chat=True)
    assert refs[0]["generated_tokens"] == exec_json(prompts[0], N, chat=True)["generated_tokens"]

    def one(p):
        return stream_chat(client(server), model_name, [{"role": "user", "content": p}], N)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, prompts))
    for p, ref, (text, tokens, finish, usage) in zip(prompts, refs, results):
        assert tokens == ref["generated_tokens"], p
        assert text == ref["text"], p
        assert finish == expected_finish(ref, N)


def test_logprobs_stop_seed_and_extensions(server, model_name):
    c = client(server)
    msgs = [{"role": "user", "content": "Count: one, two,"}]
    r = c.chat.completions.create(model=model_name, messages=msgs, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens > 0
    for e in content:
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True) and all(t <= 0 for t in tops)
        # Greedy: the chosen token is the most likely one.
        assert e.logprob == tops[0] and e.token == e.top_logprobs[0].token
    assert "".join(e.token for e in content) == r.choices[0].message.content
    lc = c.completions.create(model=model_name, prompt="Hello", temperature=0, max_tokens=4, logprobs=2)
    assert len(lc.choices[0].logprobs.tokens) == 4 and len(lc.choices[0].logprobs.top_logprobs[0]) == 2

    # A stop string cuts the text before it and ends with finish_reason "stop".
    ref = exec_json("The capital of France is", N)
    text = ref["text"]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    if stop.strip():
        r = c.completions.create(model=model_name, prompt="The capital of France is", temperature=0, max_tokens=N, stop=[stop])
        assert r.choices[0].text == text[: text.index(stop)] and r.choices[0].finish_reason == "stop"

    # A seed makes sampling reproducible; llama.cpp's sampler extensions are accepted.
    kw = dict(model=model_name, prompt="Hello", max_tokens=12, temperature=0.9, seed=7,
              frequency_penalty=0.5, presence_penalty=0.2, extra_body={"top_k": 20, "min_p": 0.01, "repeat_penalty": 1.1})
    assert c.completions.create(**kw).choices[0].text == c.completions.create(**kw).choices[0].text


def error_of(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"], e
    return e


def still_answers(server, model_name):
    assert get(server.url("/health")).json() == {"status": "ok"}
    r = post(server.url("/v1/completions"), json={"model": model_name, "prompt": "Hi", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 0, r.text


def test_bad_inputs_get_openai_errors(server, model_name):
    chat = server.url("/v1/chat/completions")
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        (lambda: post(chat, content=b'{"messages": [', headers={"content-type": "application/json"}), 400, None),
        (lambda: post(chat, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400, None),
        (lambda: post(chat, json=[1, 2]), 400, None),
        (lambda: post(chat, json={"messages": "hi"}), 400, "messages"),
        (lambda: post(chat, json={"messages": msgs, "temperature": "hot"}), 400, "temperature"),
        (lambda: post(chat, json={"messages": msgs, "max_tokens": "many"}), 400, "max_tokens"),
        (lambda: post(chat, json={"messages": msgs, "max_tokens": -3}), 400, "max_tokens"),
        (lambda: post(chat, json={"messages": msgs, "temperature": -1}), 400, "temperature"),
        (lambda: post(chat, json={"messages": msgs, "top_p": 7}), 400, "top_p"),
        (lambda: post(chat, json={"messages": msgs, "n": 3}), 400, "n"),
        (lambda: post(chat, json={"messages": msgs, "model": "gpt-4o"}), 404, "model"),
        (lambda: post(chat, json={"messages": [{"role": "user", "content": "word " * (CTX * 2)}]}), 400, "messages"),
        (lambda: post(chat, content=b"x" * (5 << 20)), 413, None),
        (lambda: get(server.url("/v1/nope")), 404, None),
        (lambda: get(chat), 405, None),
        (lambda: post(server.url("/detokenize"), json={"tokens": [10 ** 9]}), 400, "tokens"),
    ]
    for send, status, param in cases:
        e = error_of(send(), status)
        assert e["param"] == param, e
        still_answers(server, model_name)
    # Over the context: the message names both numbers.
    r = post(chat, json={"messages": [{"role": "user", "content": "word " * (CTX * 2)}]})
    e = error_of(r, 400)
    assert e["code"] == "context_length_exceeded" and str(CTX) in e["message"], e
    n_prompt = len(post(server.url("/tokenize"), json={"content": "word " * (CTX * 2)}).json()["tokens"])
    assert any(str(n) in e["message"] for n in range(n_prompt, n_prompt + 16)), e
    # The openai client raises its own error types.
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="nope", messages=msgs)
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model=model_name, messages=msgs, n=2)


def test_tokenize_models_metrics(server, model_name):
    ref = exec_json("The capital of France is", 1)
    r = post(server.url("/tokenize"), json={"content": "The capital of France is", "add_special": True}).json()
    assert r["tokens"] == ref["prompt_tokens"]
    pieces = post(server.url("/tokenize"), json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world"
    ids = [p["id"] for p in pieces]
    assert post(server.url("/detokenize"), json={"tokens": ids}).json() == {"content": "Hello world"}
    models = client(server).models.list().data
    assert [m.id for m in models] == [model_name]
    m = server.metrics()
    assert m["bitnet_model_loaded"] == 1 and m["bitnet_sequences_max"] == 4
    assert m["bitnet_generated_tokens_total"] > 0 and m['bitnet_requests_total{outcome="completed"}'] > 0


def wait_idle(server, timeout=10):
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = server.metrics()
        if m["bitnet_sequences_busy"] == 0 and m["bitnet_queue_depth"] == 0:
            return m
        time.sleep(0.05)
    raise AssertionError(f"sequences still busy: {server.metrics()}")


def test_dropped_stream_frees_its_sequence(server, model_name):
    before = wait_idle(server)
    body = {"model": model_name, "messages": [{"role": "user", "content": "Tell me everything."}], "stream": True,
            "max_tokens": CTX, "ignore_eos": True, "temperature": 0}
    with stream("POST", server.url("/v1/chat/completions"), json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: ") and '"content"' in line:
                got += 1
            if got >= 5:
                break
        assert server.metrics()["bitnet_sequences_busy"] == 1
    # The client hung up half way: the scheduler cancels the sequence at its next step.
    after = wait_idle(server)
    assert after['bitnet_requests_total{outcome="cancelled"}'] == before['bitnet_requests_total{outcome="cancelled"}'] + 1
    still_answers(server, model_name)

    # A non-streaming request whose client hangs up is cancelled too.
    body["stream"] = False
    raw = json.dumps(body).encode()
    host, port = server.base[len("http://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        t0 = time.time()
        while server.metrics()["bitnet_sequences_busy"] != 1:
            assert time.time() - t0 < 10, server.metrics()
            time.sleep(0.02)
    t0 = time.time()
    while server.metrics()['bitnet_requests_total{outcome="cancelled"}'] != after['bitnet_requests_total{outcome="cancelled"}'] + 1:
        assert time.time() - t0 < 10, server.metrics()
        time.sleep(0.05)
    wait_idle(server)


def test_queue_full_is_503_and_api_key_is_401():
    s = Server("--parallel", "1", "--max-queue", "1", "--api-key", "sekret")
    try:
        url = s.url("/v1/chat/completions")
        auth = {"Authorization": "Bearer sekret"}
        msgs = [{"role": "user", "content": "go on"}]
        assert error_of(post(url, json={"messages": msgs}), 401)["code"] == "invalid_api_key"
        assert error_of(post(url, json={"messages": msgs}, headers={"Authorization": "Bearer nope"}), 401)
        assert error_of(get(s.url("/v1/models")), 401)
        assert get(s.url("/health")).status_code == 200
        long = {"messages": msgs, "stream": True, "max_tokens": CTX, "ignore_eos": True}
        with stream("POST", url, json=long, headers=auth, timeout=60) as a, \
                stream("POST", url, json=long, headers=auth, timeout=60) as b:
            assert a.status_code == 200 and b.status_code == 200
            e = error_of(post(url, json={"messages": msgs, "max_tokens": 1}, headers=auth), 503)
            assert e["code"] == "queue_full", e
        c = openai.OpenAI(base_url=s.url("/v1"), api_key="sekret", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url("/v1"), api_key="wrong", max_retries=0).models.list()
        assert c.chat.completions.create(model=c.models.list().data[0].id, messages=msgs, max_tokens=3).choices
    finally:
        s.stop()


def test_sigterm_ends_running_streams_and_exits_0():
    s = Server("--parallel", "2")
    body = {"messages": [{"role": "user", "content": "Talk."}], "stream": True, "max_tokens": CTX, "ignore_eos": True}
    with stream("POST", s.url("/v1/chat/completions"), json=body, timeout=60) as r:
        it = r.iter_lines()
        assert next(l for l in it if l.startswith("data: "))
        s.proc.send_signal(signal.SIGTERM)
        rest = [l for l in it if l.startswith("data: ")]
    last = json.loads(rest[-1][len("data: "):])
    assert last["error"]["code"] == "shutting_down", rest[-1]
    t0 = time.time()
    s.stop()
    assert time.time() - t0 < 15
