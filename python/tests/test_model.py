"""The Python package against `bitnet-graph exec` on the shared models: same tokens, same
text, same logits bits; batching, streaming, threads and Ctrl-C; errors as exceptions."""

import _thread
import inspect
import math
import signal
import threading
import time

import numpy as np
import pytest

import bitnet_graph
from conftest import TINY, exec_json

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a land far away,",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
]


def long_prompt(n_words):
    return " ".join(["the quick brown fox jumps over the lazy dog"] * (n_words // 9))


@pytest.fixture(scope="module")
def tiny_long():
    return bitnet_graph.Model(TINY, ctx_size=8192)


# --- equal to exec -------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_greedy_generate_equals_exec(tiny, prompt):
    ref = exec_json("-p", prompt, "-n", 24, "--temp", 0)
    assert ref["n_generated_tokens"] > 0
    assert tiny.generate(prompt, max_tokens=24, temperature=0) == ref["text"]


def test_seeded_sampling_equals_exec(tiny):
    """Every sampling keyword reaches the runtime as the CLI's flag does."""
    prompt = PROMPTS[1]
    ref = exec_json(
        "-p", prompt, "-n", 32, "--temp", 0.9, "--top-k", 7, "--top-p", 0.9, "--min-p", 0.02,
        "--repeat-penalty", 1.1, "--seed", 1234,
    )
    got = tiny.generate(
        prompt, max_tokens=32, temperature=0.9, top_k=7, top_p=0.9, min_p=0.02, repeat_penalty=1.1, seed=1234
    )
    assert got == ref["text"]
    # A different seed gives a different draw (the seed is really used).
    other = tiny.generate(
        prompt, max_tokens=32, temperature=0.9, top_k=7, top_p=0.9, min_p=0.02, repeat_penalty=1.1, seed=4321
    )
    assert other != got


def test_chat_equals_exec(tiny):
    ref = exec_json("-p", "Hello!", "--system", "Be brief.", "-n", 16, "--temp", 0)
    assert tiny.generate("Hello!", max_tokens=16, temperature=0, system="Be brief.") == ref["text"]
    ref = exec_json("-p", "Hello!", "--chat", "-n", 16, "--temp", 0)
    assert tiny.generate("Hello!", max_tokens=16, temperature=0, chat=True) == ref["text"]


def test_tokenize_equals_exec(tiny):
    prompt = PROMPTS[3]
    ref = exec_json("-p", prompt, "-n", 0)
    ids = tiny.tokenize(prompt)
    assert ids == ref["prompt_tokens"]
    assert tiny.tokenize(prompt, add_bos=False) == ids[1:]
    assert tiny.detokenize(ids[1:]) == prompt


def test_logits_equal_exec_bit_for_bit(tiny, tmp_path):
    prompt = PROMPTS[1]
    npy = tmp_path / "logits.npy"
    ref = exec_json("-p", prompt, "-n", 0, "--logits-out", npy)
    expected = np.load(npy)
    got = tiny.logits(ref["prompt_tokens"])
    assert got.dtype == np.float32
    assert got.shape == (len(ref["prompt_tokens"]), tiny.info["n_vocab"]) == expected.shape
    assert got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_logits_of_a_prompt_longer_than_a_ubatch_equal_exec(tiny_long, tmp_path):
    """Over 512 tokens the runtime returns the rows in chunks; the array joins them."""
    npy = tmp_path / "logits.npy"
    ref = exec_json("-p", long_prompt(600), "-n", 0, "-c", 8192, "--logits-out", npy)
    assert len(ref["prompt_tokens"]) > 512
    got = tiny_long.logits(ref["prompt_tokens"])
    assert np.array_equal(got.view(np.uint32), np.load(npy).view(np.uint32))


def test_greedy_token_is_argmax_of_logits(tiny):
    ids = tiny.tokenize(PROMPTS[0])
    first = tiny.generate(PROMPTS[0], max_tokens=1, temperature=0)
    best = int(np.argmax(tiny.logits(ids)[-1]))
    assert first == tiny.detokenize([best])


# --- batching and streaming ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny4():
    return bitnet_graph.Model(TINY, parallel=4)


def test_generate_batch_equals_solo_calls(tiny, tiny4):
    solo = [tiny.generate(p, max_tokens=20, temperature=0) for p in PROMPTS]
    assert tiny4.generate_batch(PROMPTS, max_tokens=20, temperature=0) == solo
    # Seeded sampling, and more prompts than slots (the fifth waits for a free one).
    prompts = PROMPTS + ["Seven"]
    kw = dict(max_tokens=16, temperature=1.0, seed=99)
    assert tiny4.generate_batch(prompts, **kw) == [tiny.generate(p, **kw) for p in prompts]
    assert tiny4.generate_batch([]) == []


def test_stream_joins_to_generate(tiny):
    text = tiny.generate(PROMPTS[1], max_tokens=40, temperature=0)
    pieces = list(tiny.stream(PROMPTS[1], max_tokens=40, temperature=0))
    assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == text
    # With a stop string taken from the middle of that text: it ends before it.
    words = [w for w in text.split() if len(w) > 2]
    assert words, text
    stop = words[len(words) // 2]
    cut = tiny.generate(PROMPTS[1], max_tokens=40, temperature=0, stop=[stop])
    assert cut == text[: text.index(stop)]
    assert "".join(tiny.stream(PROMPTS[1], max_tokens=40, temperature=0, stop=stop)) == cut


def test_stream_close_ends_it(tiny):
    s = tiny.stream(PROMPTS[0], max_tokens=50, temperature=0)
    assert iter(s) is s
    next(s)
    s.close()
    assert list(s) == []


# --- threads and signals --------------------------------------------------------------------


def test_two_threads_share_one_model(tiny):
    expected = {p: tiny.generate(p, max_tokens=24, temperature=0) for p in PROMPTS[:2]}
    results, errors = {}, []

    def work(p):
        try:
            for _ in range(2):
                results.setdefault(p, []).append(tiny.generate(p, max_tokens=24, temperature=0))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in PROMPTS[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {p: [t, t] for p, t in expected.items()}


def test_gil_is_released_while_generating(tiny):
    """The main thread keeps running Python while another thread generates: the longest
    pause between two of its iterations is a small part of the generation (holding the GIL
    through the generation would make it all of it)."""
    span = []

    def work():
        t0 = time.monotonic()
        tiny.generate(PROMPTS[1], max_tokens=60, temperature=0)
        span.append(time.monotonic() - t0)

    t = threading.Thread(target=work)
    t.start()
    last, longest = time.monotonic(), 0.0
    while t.is_alive():
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
    t.join()
    assert span and span[0] > 0.2, span
    assert longest < span[0] / 4, (longest, span)


@pytest.fixture
def sigint_raises():
    """Python's own Ctrl-C handler for the test, whatever the runner inherited: started as a
    background job (SIGINT ignored), the whole suite saw `_thread.interrupt_main` do nothing
    and these tests fail for how they were launched, not for the code."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_interrupts_generate(tiny_long, sigint_raises):
    # Greedy decoding of the tiny model's random weights never samples an end-of-generation
    # token: uninterrupted, this would run to the 8192-position context (minutes).
    prompt = PROMPTS[0]
    kw = dict(max_tokens=None, temperature=0)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            tiny_long.generate(prompt, **kw)
    finally:
        timer.cancel()
        timer.join()
    interrupted_after = time.monotonic() - t0
    # The model still works, and the interrupted call left nothing behind.
    expected = exec_json("-p", PROMPTS[0], "-n", 8, "--temp", 0, "-c", 8192)["text"]
    assert tiny_long.generate(PROMPTS[0], max_tokens=8, temperature=0) == expected
    # Within a step of the signal, not at the end of the generation (minutes).
    assert interrupted_after < 10, interrupted_after


def test_ctrl_c_interrupts_stream_and_batch(tiny_long, sigint_raises):
    prompt = PROMPTS[0]
    for run in (
        lambda: list(tiny_long.stream(prompt, max_tokens=None, temperature=0)),
        lambda: tiny_long.generate_batch([prompt, prompt], max_tokens=None, temperature=0),
    ):
        timer = threading.Timer(0.5, _thread.interrupt_main)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                run()
        finally:
            timer.cancel()
            timer.join()
        assert time.monotonic() - t0 < 10
    assert tiny_long.generate(PROMPTS[0], max_tokens=4, temperature=0)


# --- errors ---------------------------------------------------------------------------------


def test_bad_path_and_bad_gguf_raise_oserror(tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        bitnet_graph.Model(tmp_path / "no-such-model.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file" * 100)
    with pytest.raises(OSError, match="gguf"):
        bitnet_graph.Model(junk)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(TINY.read_bytes()[: 1 << 20])
    with pytest.raises(OSError):
        bitnet_graph.Model(cut)
    with pytest.raises(OSError):
        bitnet_graph.Model(tmp_path)  # a folder


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(backend="gpu"), "backend"),
        (dict(lm_head="q4"), "lm_head"),
        (dict(parallel=0), "parallel"),
        (dict(ctx_size=0), "ctx_size"),
        (dict(threads=-1), "threads"),
        (dict(ctx_size=-5), "ctx_size"),
    ],
)
def test_bad_model_options_raise_valueerror(kw, field):
    with pytest.raises(ValueError, match=field):
        bitnet_graph.Model(TINY, **kw)


def test_path_or_hf_not_both():
    with pytest.raises(ValueError, match="path"):
        bitnet_graph.Model()
    with pytest.raises(ValueError, match="path"):
        bitnet_graph.Model(TINY, hf="owner/name")


def test_prompt_over_the_context_raises_valueerror():
    small = bitnet_graph.Model(TINY, ctx_size=16)
    prompt = long_prompt(100)
    with pytest.raises(ValueError, match="context holds 16"):
        small.generate(prompt)
    with pytest.raises(ValueError, match="context holds 16"):
        list(small.stream(prompt))
    with pytest.raises(ValueError, match="context holds 16"):
        small.generate_batch(["hi", prompt])
    with pytest.raises(ValueError, match="context holds 16"):
        small.logits(small.tokenize(prompt))
    # A prompt that fits still runs, up to the full context.
    assert isinstance(small.generate("hi", max_tokens=None, temperature=0), str)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(temperature=math.nan), "temperature"),
        (dict(temperature=math.inf), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(min_p=-0.1), "min_p"),
        (dict(repeat_penalty=0.0), "repeat_penalty"),
        (dict(top_k=-1), "top_k"),
        (dict(max_tokens=-1), "max_tokens"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**64), "seed"),
        (dict(stop=[""]), "stop"),
        (dict(stop=["x"] * 17), "stop"),
    ],
)
def test_bad_sampling_values_raise_valueerror(tiny, kw, field):
    for call in (tiny.generate, tiny.stream, lambda p, **k: tiny.generate_batch([p], **k)):
        with pytest.raises(ValueError, match=field):
            call("hi", **kw)


def test_bad_types_and_ids(tiny):
    with pytest.raises(TypeError):
        tiny.generate("hi", stop=5)
    n_vocab = tiny.info["n_vocab"]
    for ids in ([-1], [n_vocab], [1, 2**40]):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tiny.detokenize(ids)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tiny.logits(ids)
    with pytest.raises(ValueError, match="empty"):
        tiny.logits([])


# --- the rest of the surface ------------------------------------------------------------------


def test_info(tiny):
    info = tiny.info
    ref = exec_json("-p", "hi", "-n", 0)
    assert info["arch"] == "bitnet-b1.58"
    assert info["path"] == str(TINY)
    assert info["backends"][0] == ref["backend"]
    assert info["threads"] == ref["threads"]
    assert info["kernels"] and all(":" in k for k in info["kernels"])
    types = dict(info["tensor_types"])
    assert "i2_s" in types and sum(types.values()) > 0
    for key in ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "n_ctx", "n_ctx_train", "n_params"):
        assert isinstance(info[key], int) and info[key] > 0, key
    assert "tiny-i2_s" in repr(tiny)


def test_keyword_defaults_are_the_runtimes():
    defaults = bitnet_graph._SAMPLING_DEFAULTS
    for method in (bitnet_graph.Model.generate, bitnet_graph.Model.stream, bitnet_graph.Model.generate_batch):
        params = inspect.signature(method).parameters
        for name, value in defaults.items():
            assert params[name].default == value, (method.__name__, name)


def test_hf_loads_from_the_cache_offline(tmp_path, monkeypatch, tiny):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--test--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "tiny-i2_s.gguf").symlink_to(TINY)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_name = bitnet_graph.Model(hf="test/tiny")
    assert by_name.generate(PROMPTS[0], max_tokens=8, temperature=0) == tiny.generate(
        PROMPTS[0], max_tokens=8, temperature=0
    )
    with pytest.raises(OSError, match="test/other"):
        bitnet_graph.Model(hf="test/other")
    with pytest.raises(ValueError, match="not/a/repo"):
        bitnet_graph.Model(hf="not/a/repo")
