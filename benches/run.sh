#!/usr/bin/env bash
# Runs every benchmark and prints one report: ingestion vs raw fastembed, nDCG@10 per mode,
# gRPC latency/throughput at 1, 8 and 32 clients, bm25s (PyPI) next to Docent's BM25 Search, and
# peak RSS. Needs ../shared/data/scifact (or DATA=dir) and the model (scripts/setup-models.sh).
# Extra arguments go to the Rust driver (e.g. --index DIR to reuse an index, --queries N).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA:-$PWD/../shared/data/scifact}"
venv="target/bench-venv"
scripts/setup-models.sh
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet bm25s==0.2.14 PyStemmer==3.1.0 numpy
fi
bm25s_json=$("$venv/bin/python" benches/bm25s_baseline.py "$data" train)
echo "bm25s: $bm25s_json"
qps=$(printf '%s' "$bm25s_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["qps"])')
cargo bench --bench scifact -- --data "$data" --bm25s-qps "$qps" "$@"
