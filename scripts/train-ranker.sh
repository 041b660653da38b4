#!/usr/bin/env bash
# Trains the second ranking stage and writes src/retrieve/ranker.json (see benches/ranker.rs).
# Train splits only: SciFact train (../shared/data/scifact) and the QA train sets in benches/qa.
# Deterministic: the same data gives the same weights. Indexes and passage vectors are kept in
# target/tune/ between runs (the first run embeds SciFact and the handbook: tens of minutes).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup-models.sh
mkdir -p target/tune
# The dev profile optimises dependencies (tantivy, ONNX Runtime bindings); Docent's own code
# runs unoptimised, which is fast enough for training.
cargo bench --profile dev --bench ranker -- --write src/retrieve/ranker.json "$@"
