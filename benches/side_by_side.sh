#!/usr/bin/env bash
# Side-by-side speed of this engine, bitnet.cpp and ik_llama.cpp on one file, alternated in one
# run so that a noisy shared machine moves all of them alike (README, Performance).
#
#   benches/side_by_side.sh MODEL.gguf [IK_MODEL.gguf]
#
# MODEL is an I2_S file (e.g. `bitnet-graph synth --preset 2b4t --seed 1 …`); IK_MODEL is the
# same weights converted for ik_llama.cpp (`../shared/tools/ik_llama.cpp/run llama-quantize
# --allow-requantize --output-tensor-type f16 MODEL OUT IQ2_BN_R4 2`; left out: ik is skipped).
# Environment: ROUNDS (3), THREADS ("2 1"), PP (128), TG (64), REPS (2), BIN
# (target/release/bitnet-graph), PEERS (../shared/tools). Each round runs, per thread count:
# ours (auto: AVX-512 where the CPU has it), ours with BITNET_DISABLE_AVX512=1 (the AVX2
# path), bitnet.cpp's llama-bench, ik_llama.cpp's llama-bench; each reports the mean of REPS
# repetitions. The summary gives the median over rounds and the range, and the ratios of the
# medians.
set -euo pipefail
model=${1:?usage: benches/side_by_side.sh MODEL.gguf [IK_MODEL.gguf]}
ik_model=${2:-}
rounds=${ROUNDS:-3} threads=${THREADS:-"2 1"} pp=${PP:-128} tg=${TG:-64} reps=${REPS:-2}
bin=${BIN:-target/release/bitnet-graph}
peers=${PEERS:-../shared/tools}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

ours() { # label, env...
  local label=$1 t=$2; shift 2
  env "$@" "$bin" bench "$model" -p "$pp" -n "$tg" -r "$reps" -t "$t" --json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(sys.argv[1], sys.argv[2], j["pp_tok_s"], j["tg_tok_s"], j.get("bandwidth_gb_s", 0), j.get("roofline_fraction", 0))' "$label" "$t" >>"$log"
}
peer() { # label, threads, run script, model
  local label=$1 t=$2 run=$3 m=$4
  "$run" llama-bench -m "$m" -p "$pp" -n "$tg" -r "$reps" -t "$t" -o json 2>/dev/null |
    python3 -c '
import json, sys
rows = json.load(sys.stdin)
pp = [r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0]
tg = [r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0]
print(sys.argv[1], sys.argv[2], pp[0] if pp else 0, tg[0] if tg else 0, 0, 0)' "$label" "$t" >>"$log"
}

for r in $(seq 1 "$rounds"); do
  for t in $threads; do
    echo "round $r/$rounds, $t thread(s)" >&2
    ours bitnet-graph "$t"
    ours bitnet-graph-avx2 "$t" BITNET_DISABLE_AVX512=1
    peer bitnet.cpp "$t" "$peers/bitnet.cpp/run" "$model"
    [ -n "$ik_model" ] && peer ik_llama.cpp "$t" "$peers/ik_llama.cpp/run" "$ik_model"
  done
done

python3 - "$log" "$pp" "$tg" <<'EOF'
import statistics, sys
from collections import defaultdict
path, pp, tg = sys.argv[1], sys.argv[2], sys.argv[3]
runs = defaultdict(list)
for line in open(path):
    label, t, p, g, bw, roof = line.split()
    runs[(label, int(t))].append((float(p), float(g), float(bw), float(roof)))
def cell(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"
print(f"| engine | threads | pp{pp} tok/s, median (range) | tg{tg} tok/s | probe GB/s | decode / roofline |")
print("|---|---|---|---|---|---|")
for (label, t), v in sorted(runs.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
    bw = [x[2] for x in v]
    roof = [x[3] * 100 for x in v]
    extra = (cell(bw), f"{statistics.median(roof):.0f} % ({min(roof):.0f}–{max(roof):.0f})") if bw[0] else ("", "")
    print(f"| {label} | {t} | {cell([x[0] for x in v])} | {cell([x[1] for x in v])} | {extra[0]} | {extra[1]} |")
print()
med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
for t in sorted({k[1] for k in med}, reverse=True):
    ours = med.get(("bitnet-graph", t))
    for peer in ("bitnet.cpp", "ik_llama.cpp", "bitnet-graph-avx2"):
        if ours and (peer, t) in med and med[(peer, t)][0] and med[(peer, t)][1]:
            p, g = med[(peer, t)]
            print(f"{t} thread(s): bitnet-graph / {peer}: pp ×{ours[0] / p:.2f}, tg ×{ours[1] / g:.2f}")
EOF
