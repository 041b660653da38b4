#!/usr/bin/env bash
# Starts the bundled small LLM (SmolLM2-135M-Instruct on llama-cpp-python's OpenAI-compatible
# server) on 127.0.0.1:${PORT:-8088}, installing it first if needed (scripts/setup-llm.sh).
# Point Docent at it with:   [llm] base_url = "http://127.0.0.1:8088/v1"  model = "smollm2"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-llm.sh
dir="${DOCENT_LLM_DIR:-$HOME/.cache/docent/llm}"
exec "$dir/venv/bin/python" -m llama_cpp.server --model "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --host 127.0.0.1 --port "${PORT:-8088}" --n_threads "${LLM_THREADS:-1}" --n_ctx 4096
