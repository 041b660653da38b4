#!/usr/bin/env bash
# Generates the Python stubs of Docent's API from proto/ into $1 (default: examples/python/gen).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/examples/python/gen}"
py="${PYTHON:-python3}"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$root/proto" --python_out="$out" --grpc_python_out="$out" \
  "$root"/proto/docent/v1/*.proto
echo "$out"
