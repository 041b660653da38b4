#!/usr/bin/env bash
# Python packages the tests run against real clients: PyPI's official slack_sdk (the fake Slack
# Web API and the request signatures are checked against it), grpcio-tools (the Python example
# client is generated from proto/) and kubernetes-validate (the manifests in deploy/kubernetes
# are checked against the Kubernetes API schemas it bundles) and smbprotocol (the SMB tests hold a
# file open without sharing it, as another client). One venv, reused across runs; pip's
# cache makes reruns fast.
set -euo pipefail
PYENV="${DOCENT_PYENV:-$HOME/.cache/docent/pyenv}"
CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/python-constraints.txt"
if [[ ! -x "$PYENV/bin/python" ]]; then
  python3 -m venv "$PYENV"
fi
if ! "$PYENV/bin/python" -c 'import slack_sdk, grpc_tools, kubernetes_validate, smbprotocol' 2>/dev/null; then
  "$PYENV/bin/pip" install --quiet --disable-pip-version-check -c "$CONSTRAINTS" 'slack_sdk>=3.33,<4' \
    'grpcio-tools>=1.66,<2' 'kubernetes-validate>=1.30,<2' 'smbprotocol>=1.14,<2'
fi
echo "python test env: $PYENV"
