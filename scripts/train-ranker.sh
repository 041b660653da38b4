#!/usr/bin/env bash
# Trains the second ranking stage of one embedding model and writes its weights file (see
# benches/ranker.rs): src/retrieve/ranker.json for the default all-MiniLM-L6-v2, or
# src/retrieve/ranker-NAME.json with `--model NAME` (multilingual-e5-small). The daemon embeds
# both and picks one by the embedder's model id (RankerModel::for_model).
# Train splits only: SciFact train (../shared/data/scifact) and the QA train sets in benches/qa.
# Deterministic: the same data gives the same weights. Indexes and passage vectors are kept in
# target/tune/ (target/tune-NAME/ for another model) between runs (the first run embeds SciFact
# and the handbook: tens of minutes).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model=all-MiniLM-L6-v2
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ "$model" = all-MiniLM-L6-v2 ]; then
  scripts/setup-models.sh
  out=src/retrieve/ranker.json
else
  scripts/setup-models.sh --multilingual
  out="src/retrieve/ranker-$model.json"
fi
mkdir -p target/tune
# The dev profile optimises dependencies (tantivy, ONNX Runtime bindings); Docent's own code
# runs unoptimised, which is fast enough for training.
cargo bench --profile dev --bench ranker -- --model "$model" --write "$out" "${args[@]}"
