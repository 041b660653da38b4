#!/usr/bin/env bash
# A private Samba server for the SMB connector's tests (and local trials).
#
#   smb.sh install          apt-get install samba smbclient samba-vfs-modules (idempotent)
#   smb.sh start DIR PORT   smbd on 127.0.0.1:PORT, state under DIR, share `docs` at DIR/share
#   smb.sh stop DIR         stops the smbd started with DIR
#
# Users (Unix and smbpasswd, password $SMB_TEST_PASSWORD or "Passw0rd!"): crawler (admin of
# the share: reads everything), alice, bob; groups hr, eng (alice in hr and eng, bob in hr).
# NT ACLs are stored as given (vfs acl_xattr, system ACLs ignored), so smbcacls sets exactly
# the DACL the connector then reads. Needs root (useradd, xattrs).
# Note: smbcacls (Samba 4.17) always connects to port 445/139; to use it, start on port 445.
set -euo pipefail

PASS="${SMB_TEST_PASSWORD:-Passw0rd!}"

install() {
    if command -v smbd >/dev/null && command -v smbclient >/dev/null && command -v smbcacls >/dev/null \
        && [ -e /usr/lib/x86_64-linux-gnu/samba/vfs/acl_xattr.so ]; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # samba-vfs-modules holds acl_xattr (NT ACLs stored as set), a recommends of samba.
    local pkgs=(samba smbclient samba-vfs-modules)
    apt-get install -y --no-install-recommends "${pkgs[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; }
}

# Idempotent, and safe when two starts run it at once (tests start servers in parallel): each
# step is skipped when done, and one that fails counts only if its result is still missing.
ensure_accounts() {
    local g u
    for g in hr eng; do
        getent group "$g" >/dev/null || groupadd -f "$g" || getent group "$g" >/dev/null
    done
    for u in crawler alice bob; do
        id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u" || id "$u" >/dev/null 2>&1
    done
    in_groups alice hr eng || usermod -a -G hr,eng alice || in_groups alice hr eng
    in_groups bob hr || usermod -a -G hr bob || in_groups bob hr
}

# Whether user $1 is in every group named after it.
in_groups() {
    local u=$1 g
    shift
    for g in "$@"; do
        [[ " $(id -nG "$u") " == *" $g "* ]] || return 1
    done
}

start() {
    local dir="$1" port="$2"
    mkdir -p "$dir"/{private,lock,state,cache,pid,log,share}
    dir="$(cd "$dir" && pwd)"
    chmod 0777 "$dir/share"
    cat >"$dir/smb.conf" <<EOF
[global]
    server role = standalone server
    workgroup = WORKGROUP
    netbios name = DOCENTTEST
    interfaces = lo
    bind interfaces only = yes
    smb ports = $port
    disable netbios = yes
    private dir = $dir/private
    lock directory = $dir/lock
    state directory = $dir/state
    cache directory = $dir/cache
    pid directory = $dir/pid
    log file = $dir/log/smbd.log
    passdb backend = tdbsam:$dir/private/passdb.tdb
    map to guest = never
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    server min protocol = SMB2_10
    vfs objects = acl_xattr
    acl_xattr:ignore system acls = yes

[docs]
    path = $dir/share
    read only = no
    admin users = crawler
    valid users = crawler alice bob
    vfs objects = acl_xattr
    acl_xattr:ignore system acls = yes

# The same folder, where the crawler is an ordinary user bound by each file's ACL.
[limited]
    path = $dir/share
    read only = yes
    valid users = crawler alice bob
    vfs objects = acl_xattr
    acl_xattr:ignore system acls = yes
EOF
    ensure_accounts
    for u in crawler alice bob; do
        printf '%s\n%s\n' "$PASS" "$PASS" | smbpasswd -c "$dir/smb.conf" -s -a "$u" >/dev/null
    done
    # Own session: on shutdown smbd signals its whole process group, which must not be ours.
    setsid smbd --foreground --no-process-group -s "$dir/smb.conf" </dev/null >>"$dir/log/stdout.log" 2>&1 &
    local smbd_pid=$!
    echo "$smbd_pid" >"$dir/pid.smbd"
    # SMB_WATCH_PID: stop smbd when that process (a test binary) is gone.
    if [ -n "${SMB_WATCH_PID:-}" ]; then
        ( while kill -0 "$SMB_WATCH_PID" 2>/dev/null && kill -0 "$smbd_pid" 2>/dev/null; do sleep 1; done
          kill "$smbd_pid" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 100); do
        # Alive first, and the listener must be this smbd (with ss): a port picked free by a
        # test may have been taken by another process before smbd could bind it.
        if kill -0 "$smbd_pid" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
            && { ! command -v ss >/dev/null \
                 || ss -Hltnp "sport = :$port" | grep -F "127.0.0.1:$port " | grep -q "pid=$smbd_pid,"; }; then
            echo "smbd listening on 127.0.0.1:$port (state in $dir)"
            return 0
        fi
        if ! kill -0 "$(cat "$dir/pid.smbd")" 2>/dev/null; then
            echo "smbd exited; see $dir/log" >&2
            tail -20 "$dir/log/smbd.log" "$dir/log/stdout.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    echo "smbd did not listen on 127.0.0.1:$port within 10 s" >&2
    stop "$dir"
    return 1
}

stop() {
    local dir="$1" pid
    [ -f "$dir/pid.smbd" ] || return 0
    pid="$(cat "$dir/pid.smbd")"
    # The per-connection children first: a client must see its connection drop.
    local children
    children="$(ps -o pid= --ppid "$pid" 2>/dev/null || true)"
    kill "$pid" $children 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" $children 2>/dev/null || true
    rm -f "$dir/pid.smbd"
}

case "${1:-}" in
    install) install; ensure_accounts ;;
    start) [ $# -eq 3 ] || { echo "usage: $0 start DIR PORT" >&2; exit 2; }; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
    *) echo "usage: $0 install | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
