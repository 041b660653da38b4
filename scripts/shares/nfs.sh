#!/usr/bin/env bash
# A private NFS server for tests: nfs-ganesha (VFS FSAL) + rpcbind on 127.0.0.1.
#
#   nfs.sh install      install nfs-ganesha, nfs-ganesha-vfs and rpcbind (idempotent)
#   nfs.sh start DIR    serve DIR/export over NFSv3 (with the NFSACL side protocol) and NFSv4
#                       (config, log and pid under DIR)
#   nfs.sh stop DIR     stop the server started with DIR
#
# ganesha binds port 2049 (fixed) and rpcbind port 111: only one server per machine can run at a
# time, so tests that use this script must be serialised. rpcbind is shared and left running by
# `stop`. The export uses No_Root_Squash so a crawler with AUTH_SYS uid 0 reads every file, and
# attribute caching is off (Attr_Expiration_Time = 0) so that files changed directly on the local
# filesystem are seen by the next listing.
set -euo pipefail

die() { echo "nfs.sh: $*" >&2; exit 1; }

install() {
    local pkgs=(nfs-ganesha nfs-ganesha-vfs rpcbind)
    local ok
    ok=$(dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -c "install ok installed" || true)
    if [ "$ok" = "${#pkgs[@]}" ]; then return 0; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${pkgs[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; }
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_rpcbind() {
    if port_open 111; then return 0; fi
    # `rpcbind -h 127.0.0.1` crashes on this platform; plain -f (foreground) works.
    mkdir -p /run/rpcbind
    (setsid rpcbind -f </dev/null >/dev/null 2>&1 &)
    for _ in $(seq 1 50); do port_open 111 && return 0; sleep 0.1; done
    die "rpcbind did not start"
}

start() {
    local dir=${1:?usage: nfs.sh start DIR}
    dir=$(cd "$dir" && pwd)
    command -v ganesha.nfsd >/dev/null || die "ganesha.nfsd not installed (run: nfs.sh install)"
    if port_open 2049; then die "port 2049 is already in use (another NFS server is running)"; fi
    mkdir -p "$dir/export" "$dir/recovery"
    cat >"$dir/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Protocols = 3, 4;
    Bind_addr = 127.0.0.1;
    NFS_Port = 2049;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_NFSACL = true;
}
NFSV4 {
    Graceless = true;
    RecoveryRoot = "$dir/recovery";
}
MDCACHE {
    Dir_Chunk = 0;
}
EXPORT_DEFAULTS {
    Attr_Expiration_Time = 0;
}
EXPORT {
    Export_Id = 1;
    Path = "$dir/export";
    Pseudo = "$dir/export";
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = RO;
    Squash = No_Root_Squash;
    SecType = sys;
    Attr_Expiration_Time = 0;
    CLIENT {
        Clients = 127.0.0.1;
        Access_Type = RO;
    }
    FSAL {
        Name = VFS;
    }
}
LOG {
    Default_Log_Level = EVENT;
}
CONF
    start_rpcbind
    # In the foreground of a setsid'd child, so that its pid is known here: a ganesha that
    # never opens the port is killed, not left to take 2049 from every later test.
    setsid ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid" \
        </dev/null >>"$dir/ganesha.out" 2>&1 &
    local pid=$!
    for _ in $(seq 1 300); do
        if port_open 2049; then return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    sleep 0.5
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/ganesha.pid"
    tail -20 "$dir/ganesha.log" >&2 || true
    tail -5 "$dir/ganesha.out" >&2 || true
    die "ganesha did not open port 2049"
}

stop() {
    local dir=${1:?usage: nfs.sh stop DIR}
    [ -f "$dir/ganesha.pid" ] || return 0
    local pid
    pid=$(cat "$dir/ganesha.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/ganesha.pid"
    for _ in $(seq 1 100); do port_open 2049 || return 0; sleep 0.1; done
    die "port 2049 still open after stopping ganesha"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) die "usage: nfs.sh install | start DIR | stop DIR" ;;
esac
