#!/usr/bin/env bash
# A private Milvus Lite server (PyPI `milvus-lite`, a pure-Python engine that speaks the Milvus
# gRPC API: milvus.proto.milvus.MilvusService) for the tests of Docent's `backend = "milvus"`.
#
#   milvus.sh install               install milvus-lite and pymilvus into the venv (idempotent)
#   milvus.sh start DIR PORT        install if needed, serve DIR/data on 127.0.0.1:PORT in the
#                                   background, wait until the gRPC port answers, print the pid
#   milvus.sh stop DIR              stop the server started with DIR (by DIR/milvus.pid)
#   milvus.sh status DIR            print "running PID PORT" (exit 0) or "stopped" (exit 1)
#   milvus.sh descriptors OUT       write the Milvus API's FileDescriptorSet (milvus.proto and its
#                                   imports, as compiled into pymilvus) to OUT, for
#                                   tonic_prost_build::Builder::compile_fds (no .proto sources needed)
#
# State lives in DIR: data/ (the engine's WAL, segments and LOCK), milvus.pid, milvus.port and
# milvus.log. One server per DIR (the engine locks DIR/data); any number of DIRs/ports side by side.
# The server needs pymilvus at run time (it serves pymilvus's generated MilvusService stubs), so
# both are installed. Start takes ~2 s (Python imports), RSS ~150 MB idle; see docs/milvus.md.
#
# Env: DOCENT_PYENV    the venv (default ~/.cache/docent/pyenv; created if missing)
#      MILVUS_LITE_VERSION, PYMILVUS_VERSION   pins (defaults below)
set -euo pipefail

PYENV=${DOCENT_PYENV:-$HOME/.cache/docent/pyenv}
CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/python-constraints.txt"
MILVUS_LITE_VERSION=${MILVUS_LITE_VERSION:-3.2.2}
PYMILVUS_VERSION=${PYMILVUS_VERSION:-3.0.2}

die() { echo "milvus.sh: $*" >&2; exit 1; }
usage() { sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

installed() {
    [ -x "$PYENV/bin/milvus-lite" ] || return 1
    "$PYENV/bin/python" - "$MILVUS_LITE_VERSION" "$PYMILVUS_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("milvus-lite"), version("pymilvus")) == tuple(sys.argv[1:3]) else 1)
PY
}

cmd_install() {
    if installed; then return 0; fi
    if [ ! -x "$PYENV/bin/python" ]; then
        mkdir -p "$(dirname "$PYENV")"
        python3 -m venv "$PYENV"
    fi
    "$PYENV/bin/pip" install --quiet --disable-pip-version-check -c "$CONSTRAINTS" \
        "milvus-lite==$MILVUS_LITE_VERSION" "pymilvus==$PYMILVUS_VERSION" >&2
    installed || die "install finished but milvus-lite $MILVUS_LITE_VERSION / pymilvus $PYMILVUS_VERSION are missing"
}

# The pid in DIR/milvus.pid if that process is alive and is a milvus-lite server.
live_pid() {
    local dir=$1 pid
    [ -f "$dir/milvus.pid" ] || return 1
    pid=$(cat "$dir/milvus.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "server --data-dir $dir/data " || return 1
    echo "$pid"
}

cmd_start() {
    local dir=${1:-} port=${2:-}
    [ -n "$dir" ] && [ -n "$port" ] || usage
    [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number: $port"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local pid
    if pid=$(live_pid "$dir"); then
        if [ "$(cat "$dir/milvus.port" 2>/dev/null)" = "$port" ]; then
            echo "$pid" # already running here on this port: idempotent
            return 0
        fi
        die "a server for $dir is already running (pid $pid) on port $(cat "$dir/milvus.port")"
    fi
    port_open "$port" && die "port $port is already in use"
    cmd_install
    mkdir -p "$dir/data"
    # setsid: its own process group, so the caller's Ctrl-C or job control does not reach it.
    # A background job of a non-interactive shell starts with SIGINT ignored, and Python then never
    # installs its KeyboardInterrupt handler (plain `milvus-lite server &` ignores SIGINT; SIGTERM
    # kills it without closing the engine). So a small launcher maps SIGINT and SIGTERM to
    # KeyboardInterrupt, which run_server handles: stop gRPC (5 s grace), close the engine, release
    # DIR/data/LOCK. -u: unbuffered log.
    setsid "$PYENV/bin/python" -u -c '
import signal, sys
def _stop(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGINT, _stop)
signal.signal(signal.SIGTERM, _stop)
from milvus_lite.cmdline import main
sys.exit(main(sys.argv[1:]))
' server --data-dir "$dir/data" --host 127.0.0.1 --port "$port" </dev/null >>"$dir/milvus.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/milvus.pid"
    echo "$port" >"$dir/milvus.port"
    # The port is bound only after the data dir is opened (WAL replayed): open == ready.
    for _ in $(seq 1 600); do
        if port_open "$port"; then echo "$pid"; return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$dir/milvus.log" >&2 || true
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/milvus.pid"
    die "milvus-lite did not open port $port"
}

cmd_stop() {
    local dir=${1:-}
    [ -n "$dir" ] || usage
    [ -d "$dir" ] || return 0
    local pid port
    pid=$(live_pid "$dir") || { rm -f "$dir/milvus.pid"; return 0; }
    port=$(cat "$dir/milvus.port" 2>/dev/null || true)
    # SIGTERM → KeyboardInterrupt in the launcher: graceful (in-flight requests get up to 5 s).
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        # Acknowledged writes are already in the engine's WAL (flushed to the OS per write), so a
        # hard kill loses nothing that was acknowledged; the flock on DIR/data/LOCK dies with it.
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$dir/milvus.pid"
    if [ -n "$port" ]; then
        for _ in $(seq 1 50); do port_open "$port" || return 0; sleep 0.1; done
        die "port $port still open after stopping pid $pid"
    fi
}

cmd_status() {
    local dir=${1:-}
    [ -n "$dir" ] || usage
    local pid
    if [ -d "$dir" ] && pid=$(live_pid "$dir"); then
        echo "running $pid $(cat "$dir/milvus.port" 2>/dev/null)"
        return 0
    fi
    echo "stopped"
    return 1
}

cmd_descriptors() {
    local out=${1:-}
    [ -n "$out" ] || usage
    cmd_install
    "$PYENV/bin/python" - "$out" <<'PY'
import sys
from google.protobuf import descriptor_pb2
from pymilvus.grpc_gen import milvus_pb2  # imports common, schema, rg, feder, msg
import pymilvus
fds, seen = descriptor_pb2.FileDescriptorSet(), set()
def add(fd):  # dependencies first, each file once
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        add(dep)
    fd.CopyToProto(fds.file.add())
add(milvus_pb2.DESCRIPTOR)
with open(sys.argv[1], "wb") as f:
    f.write(fds.SerializeToString())
print(f"pymilvus {pymilvus.__version__}: {', '.join(f.name for f in fds.file)} -> {sys.argv[1]}")
PY
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start "${2:-}" "${3:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    descriptors) cmd_descriptors "${2:-}" ;;
    *) usage ;;
esac
