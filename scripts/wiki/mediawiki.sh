#!/usr/bin/env bash
# A private MediaWiki (Debian package `mediawiki`, 1.39 LTS) for Docent's connector tests.
#
#   mediawiki.sh install                      install php and mediawiki (idempotent)
#   mediawiki.sh start DIR PORT [--private]   set DIR up (first time only), serve it on 127.0.0.1:PORT
#   mediawiki.sh stop DIR                     stop the instance started in DIR (by DIR/pid)
#
# All state lives in DIR (LocalSettings.php, the SQLite databases in DIR/data, DIR/server.log,
# DIR/pid, DIR/credentials.env); the code is used read-only from /usr/share/mediawiki. The
# server is PHP's built-in one (`php -S`, no Apache), pointed at DIR by MW_CONFIG_FILE; it serves
# one request at a time unless PHP_CLI_SERVER_WORKERS says otherwise. `start` on a DIR that was
# set up before serves the same wiki again (stop + start = an outage, not a reset); the port is
# fixed at the first start ($wgServer).
#
# Accounts (written to DIR/credentials.env):
#   $MW_ADMIN_USER / $MW_ADMIN_PASS   (default Admin / docent-admin-pass) sysop + bureaucrat
#   $MW_ADMIN_USER@$MW_BOT_APPID / $MW_BOT_PASS   a bot password of that account (default
#       Admin@docent / docentbotpassword000000000000000; 32 characters, only a-z and 0-9: a
#       bot password with a '-' is stored but then refused at login in 1.39), with grants to
#       read in bulk and to edit, create, move, delete, undelete and protect (tests seed through it;
#       a production crawler needs only "basic,highvolume")
# --private: `$wgGroupPermissions['*']['read'] = false` (only logged-in users may read).
#
# Seeding: through the API (action=edit with a csrf token after action=login with the bot
# password) or `MW_CONFIG_FILE=DIR/LocalSettings.php php /usr/share/mediawiki/maintenance/edit.php
# -u Admin TITLE < text`; both record the edit in recent changes.
set -euo pipefail

MW_CODE=/usr/share/mediawiki
PACKAGES=(php-cli php-sqlite3 php-mbstring php-xml php-intl mediawiki)
ADMIN_USER=${MW_ADMIN_USER:-Admin}
ADMIN_PASS=${MW_ADMIN_PASS:-docent-admin-pass}
BOT_APPID=${MW_BOT_APPID:-docent}
BOT_PASS=${MW_BOT_PASS:-docentbotpassword000000000000000}
BOT_GRANTS=basic,highvolume,editpage,createeditmovepage,delete,protect,editprotected

usage() {
  sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

installed() { [[ -f "$MW_CODE/maintenance/install.php" ]] && command -v php >/dev/null; }

cmd_install() {
  if installed; then
    echo "mediawiki: already installed"
    return 0
  fi
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"; then
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
  fi
  installed || { echo "mediawiki: install finished but $MW_CODE or php is missing" >&2; exit 1; }
}

# php with this instance's settings (maintenance scripts read MW_CONFIG_FILE too).
mwphp() { MW_CONFIG_FILE="$1/LocalSettings.php" php "${@:2}"; }

# Runs install.php into DIR (only when DIR/LocalSettings.php does not exist yet).
setup() {
  local D=$1 PORT=$2 PRIVATE=$3
  [[ $BOT_PASS =~ ^[a-z0-9]{32}$ ]] ||
    { echo "mediawiki: MW_BOT_PASS must be 32 characters of a-z and 0-9" >&2; exit 1; }
  mkdir -p "$D/data"
  php "$MW_CODE/maintenance/install.php" --dbtype=sqlite --dbpath="$D/data" --dbname=testwiki \
    --server="http://127.0.0.1:$PORT" --scriptpath="" --confpath="$D" --pass="$ADMIN_PASS" \
    --lang=en --quiet TestWiki "$ADMIN_USER" >"$D/install.log" 2>&1 ||
    { cat "$D/install.log" >&2; echo "mediawiki: install.php failed" >&2; exit 1; }
  cat >>"$D/LocalSettings.php" <<'PHP'

# --- added by scripts/wiki/mediawiki.sh ---
$wgShowExceptionDetails = true;
$wgEnableBotPasswords = true;
# No object cache: a test sees every change at once.
$wgMainCacheType = CACHE_NONE;
# Run deferred jobs (link updates) within the request that queued them.
$wgJobRunRate = 1;
$wgRunJobsAsync = false;
PHP
  if [[ $PRIVATE == 1 ]]; then
    printf "\$wgGroupPermissions['*']['read'] = false;\n" >>"$D/LocalSettings.php"
  fi
  mwphp "$D" "$MW_CODE/maintenance/createBotPassword.php" --appid "$BOT_APPID" \
    --grants "$BOT_GRANTS" "$ADMIN_USER" "$BOT_PASS" >>"$D/install.log" 2>&1 ||
    { cat "$D/install.log" >&2; echo "mediawiki: createBotPassword.php failed" >&2; exit 1; }
  cat >"$D/credentials.env" <<ENV
MW_URL=http://127.0.0.1:$PORT
MW_ADMIN_USER=$ADMIN_USER
MW_ADMIN_PASS=$ADMIN_PASS
MW_BOT_USER=$ADMIN_USER@$BOT_APPID
MW_BOT_PASS=$BOT_PASS
ENV
}

# True when process PID listens on 127.0.0.1:PORT (or when ss is missing: no way to tell).
listens() {
  ! command -v ss >/dev/null || ss -Hltnp "sport = :$2" | grep -F "127.0.0.1:$2 " | grep -q "pid=$1,"
}

# True when api.php answers on PORT.
answers() {
  php -r '$c = stream_context_create(["http" => ["timeout" => 2]]);
    exit(@file_get_contents("http://127.0.0.1:" . $argv[1] . "/api.php?action=query&meta=siteinfo&format=json", false, $c) === false ? 1 : 0);' "$1"
}

cmd_start() {
  [[ $# -ge 2 ]] || usage
  local D PORT=$2 PRIVATE=0
  [[ ${3:-} == --private ]] && PRIVATE=1
  installed || { echo "mediawiki: not installed; run '$0 install' first" >&2; exit 1; }
  mkdir -p "$1"
  D=$(cd "$1" && pwd)
  if [[ -f $D/pid ]] && kill -0 "$(cat "$D/pid")" 2>/dev/null; then
    echo "mediawiki: already running in $D (pid $(cat "$D/pid"))" >&2
    exit 1
  fi
  [[ -f $D/LocalSettings.php ]] || setup "$D" "$PORT" "$PRIVATE"
  # Its own session and process group, so `stop` ends the server and nothing else.
  # OPcache with revalidate_freq=0: a setting a test appends to LocalSettings.php holds from
  # the next request (with the default of 2 s, CI saw a test's hook ignored).
  MW_CONFIG_FILE="$D/LocalSettings.php" setsid php -d opcache.revalidate_freq=0 \
    -S "127.0.0.1:$PORT" -t "$MW_CODE" \
    >>"$D/server.log" 2>&1 </dev/null &
  echo $! >"$D/pid"
  for _ in $(seq 1 150); do
    # Alive first, and the one listening (with ss): a port picked free may have been taken
    # by another server, whose answers must not pass for this one's.
    if ! kill -0 "$(cat "$D/pid")" 2>/dev/null; then
      tail -20 "$D/server.log" >&2
      echo "mediawiki: the server exited (port $PORT in use?)" >&2
      rm -f "$D/pid"
      exit 1
    fi
    if answers "$PORT" && listens "$(cat "$D/pid")" "$PORT"; then
      echo "mediawiki: serving $D on http://127.0.0.1:$PORT (pid $(cat "$D/pid"))"
      return 0
    fi
    sleep 0.2
  done
  echo "mediawiki: api.php did not answer on port $PORT within 30 s" >&2
  cmd_stop "$D"
  exit 1
}

cmd_stop() {
  [[ $# -ge 1 ]] || usage
  local D=$1 pid
  [[ -f $D/pid ]] || { echo "mediawiki: not running in $D"; return 0; }
  pid=$(cat "$D/pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$D/pid"
  echo "mediawiki: stopped $D"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac
