#!/usr/bin/env bash
# Second command: run the whole test suite (unit, property and integration tests against a real
# daemon with the real embedding model). Fetches the model first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-models.sh
cargo test --workspace --locked "$@"
