#!/usr/bin/env python3
"""Instructions per weight byte of one kernel under qemu-user (README, ARM).

    python3 benches/instr_count.py QEMU KERNEL_LOOP BACKEND CASE [--cpu CPU] [-L ROOT]

runs the `kernel_loop` example (benches/examples/kernel_loop.rs) twice under QEMU with
`-d in_asm,exec,nochain` (every translated block's instructions, and a line per execution of
a block), once with 2 and once with 6 calls of the kernel, one thread; the difference of the
two totals over 4 calls is the kernel's own instruction count, setup excluded. Prints
instructions per call and per weight byte. The counts are guest instructions as emulated:
a measure of the code's work per byte, not a speed (no latencies, no memory system).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
INSN = re.compile(r"^0x([0-9a-f]+):")


def count(cmd, env):
    """Guest instructions executed by `cmd` (all threads), from qemu's block log."""
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "q.log")
        out = subprocess.run(cmd[:1] + ["-d", "in_asm,exec,nochain", "-D", log] + cmd[1:],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"instr_count: {' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        sizes, total, block, n = {}, 0, None, 0
        with open(log, errors="replace") as f:
            for line in f:
                m = INSN.match(line)
                if m:
                    if block is None:
                        block = int(m.group(1), 16)
                    n += 1
                    continue
                if block is not None:
                    sizes[block] = n
                    block, n = None, 0
                m = TRACE.match(line)
                if m:
                    total += sizes.get(int(m.group(1), 16), 0)
        if block is not None:
            sizes[block] = n
        return total, out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qemu")
    ap.add_argument("kernel_loop")
    ap.add_argument("backend")
    ap.add_argument("case")
    ap.add_argument("--cpu", default="max")
    ap.add_argument("-L", dest="root", default=None)
    a = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    base = [a.qemu, "-cpu", a.cpu] + (["-L", a.root] if a.root else [])
    lo, out = count(base + [a.kernel_loop, a.backend, a.case, "2"], env)
    hi, _ = count(base + [a.kernel_loop, a.backend, a.case, "6"], env)
    m = re.search(r"weight_bytes (\d+)", out)
    if not m:
        sys.exit(f"instr_count: no weight_bytes in the output: {out!r}")
    per_call = (hi - lo) / 4
    kernel = out.strip().splitlines()[-1].split(f" {a.case} weight_bytes")[0]
    print(f"{a.backend:8} {a.cpu:11} {a.case:10} {per_call:12.0f} instr/call {per_call / int(m.group(1)):7.3f} instr/weight byte  ({kernel})")


if __name__ == "__main__":
    main()
