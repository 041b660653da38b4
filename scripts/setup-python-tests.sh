#!/usr/bin/env bash
# Python packages the tests run against real clients: PyPI's official slack_sdk (the fake Slack
# Web API and the request signatures are checked against it) and grpcio-tools (the Python example
# client is generated from proto/). One venv, reused across runs; pip's cache makes reruns fast.
set -euo pipefail
PYENV="${DOCENT_PYENV:-$HOME/.cache/docent/pyenv}"
if [[ ! -x "$PYENV/bin/python" ]]; then
  python3 -m venv "$PYENV"
fi
if ! "$PYENV/bin/python" -c 'import slack_sdk, grpc_tools' 2>/dev/null; then
  "$PYENV/bin/pip" install --quiet --disable-pip-version-check 'slack_sdk>=3.33,<4' 'grpcio-tools>=1.66,<2'
fi
echo "python test env: $PYENV"
