"""Shared fixtures: the repository's paths, the shared models, and `bitnet-graph exec` as the
reference the bindings must reproduce."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import bitnet_graph

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
TINY = SHARED / "models" / "tiny-i2_s.gguf"
# The CLI built by `cargo build --release` (CI builds it with `cargo test --release`).
EXE = Path(os.environ.get("BITNET_GRAPH_BIN", ROOT / "target" / "release" / "bitnet-graph"))


def exec_json(*args, model=TINY):
    """Runs `bitnet-graph exec MODEL ARGS --json` and returns its report."""
    assert EXE.is_file(), f"{EXE} is missing: build it with `cargo build --release -p bitnet-graph`"
    out = subprocess.run(
        [str(EXE), "exec", str(model), *map(str, args), "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def tiny():
    """The tiny model of the official architecture, loaded once for the session."""
    assert TINY.is_file(), f"{TINY} is missing (../shared next to the checkout)"
    return bitnet_graph.Model(TINY)
