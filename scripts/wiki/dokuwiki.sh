#!/usr/bin/env bash
# A private DokuWiki (Debian package `dokuwiki`, 2022-07-31 "Igor") for Docent's connector tests.
#
#   dokuwiki.sh install              install php-cli, php-xml, php8.2-cgi and dokuwiki (idempotent)
#   dokuwiki.sh start DIR PORT       set DIR up (first time only) and serve it on 127.0.0.1:PORT
#   dokuwiki.sh stop DIR             stop the instance started in DIR (by DIR/pid)
#   dokuwiki.sh seed DIR PORT        create the example pages through the XML-RPC API
#
# All state lives in DIR (conf/, data/, sessions/, logs); the code is used read-only from
# /usr/share/dokuwiki. How: `php -d auto_prepend_file=DIR/prepend.php` defines DOKU_CONF=DIR/conf/
# before Debian's inc/preload.php runs, and DIR/conf/local.php sets savedir=DIR/data.
# Adapted from the verified recipe in shared/recipes/dokuwiki (77 API checks).
#
# Accounts (password "<login>-pass" unless DW_<LOGIN>_PASS is set):
#   admin  groups admin,user      superuser (@admin): the crawler; may call plugin.acl.*
#   alice  groups hr,user
#   bob    groups eng,user
#   carol  groups eng,user
#   dave   groups user
#   erin   groups hr,eng,user
# ACL rules (conf/acl.auth.php; most specific scope wins, max level among matching entries):
#   *             @ALL   1     everyone reads
#   *             @user  8
#   hr:*          @ALL   0     hr: only for @hr ...
#   hr:*          @hr    1
#   hr:handbook   bob    1     ... and bob on the handbook
#   eng:secret    @eng   0     not for @eng ...
#   eng:secret    carol  1     ... except carol (a user grant beside a group denial)
#   eng:design:*  dave   0     dave may not read the design namespace
#
# Env: DW_BCRYPT_COST (default 4: every basic-auth request verifies the hash),
#      PHP_CLI_SERVER_WORKERS (php -S worker processes; default 1 = serial requests).
set -euo pipefail

DW_CODE=/usr/share/dokuwiki
PACKAGES=(php-cli php-xml php8.2-cgi dokuwiki)
USERS=(admin alice bob carol dave erin)

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

installed() { [[ -d "$DW_CODE/inc" ]] && command -v php >/dev/null; }

cmd_install() {
  if installed; then
    echo "dokuwiki: already installed"
    return 0
  fi
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  # php8.2-cgi keeps apt from pulling in Apache as dokuwiki's web-server dependency.
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"; then
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
  fi
  installed || { echo "dokuwiki: install finished but $DW_CODE or php is missing" >&2; exit 1; }
}

password() {
  local var="DW_${1^^}_PASS"
  printf '%s' "${!var:-$1-pass}"
}

# Writes DIR's configuration, users and ACL rules (only when DIR/conf/local.php does not exist).
setup() {
  local D=$1
  mkdir -p "$D/conf" "$D/sessions"
  for sub in pages attic media media_attic meta media_meta cache index locks tmp log; do
    mkdir -p "$D/data/$sub" # init_paths() dies if any of these is missing
  done
  # The plugin cascade reads DOKU_CONF: keep Debian's defaults.
  cp /etc/dokuwiki/plugins.php /etc/dokuwiki/plugins.required.php "$D/conf/"
  printf '<?php\n' >"$D/conf/plugins.local.php" # present: DokuWiki won't try to write it

  cat >"$D/prepend.php" <<PHP
<?php
// auto_prepend_file for this instance only: point DokuWiki at the private conf dir.
if (!defined('DOKU_CONF')) define('DOKU_CONF', '$D/conf/');
PHP

  cat >"$D/conf/local.php" <<PHP
<?php
// Private instance settings (loaded after /etc/dokuwiki/dokuwiki.php)
\$conf['title']      = 'Docent test DokuWiki';
\$conf['savedir']    = '$D/data';
\$conf['useacl']     = 1;
\$conf['authtype']   = 'authplain';
\$conf['passcrypt']  = 'bcrypt';
\$conf['superuser']  = '@admin';
\$conf['manager']    = '@admin';
\$conf['remote']     = 1;
\$conf['remoteuser'] = '@admin,@user';   // who may call the API at all; the crawler is in @admin
\$conf['disableactions'] = 'register,resendpwd';
\$conf['dnslookups'] = 0;
\$conf['updatecheck'] = 0;
\$conf['userewrite'] = 0;
PHP

  local -A groups=([admin]=admin,user [alice]=hr,user [bob]=eng,user [carol]=eng,user
    [dave]=user [erin]=hr,eng,user)
  export DW_COST=${DW_BCRYPT_COST:-4}
  {
    echo '# users.auth.php'
    echo '# <?php exit()?>'
    echo '# login:passwordhash:Real Name:email:groups,comma,separated'
    local u hash
    for u in "${USERS[@]}"; do
      hash=$(DW_PW=$(password "$u") php -r \
        'echo password_hash(getenv("DW_PW"), PASSWORD_BCRYPT, ["cost" => (int)getenv("DW_COST")]);')
      echo "$u:$hash:${u^}:$u@example.invalid:${groups[$u]}"
    done
  } >"$D/conf/users.auth.php"

  # <page or ns:*> <@group|user> <level>; 0 none, 1 read, 2 edit, 4 create, 8 upload, 16 delete.
  cat >"$D/conf/acl.auth.php" <<'ACL'
# acl.auth.php
# <?php exit()?>
*	@ALL	1
*	@user	8
hr:*	@ALL	0
hr:*	@hr	1
hr:handbook	bob	1
eng:secret	@eng	0
eng:secret	carol	1
eng:design:*	dave	0
ACL
  chmod -R go-rwx "$D/conf" "$D/data" "$D/sessions"
}

# A GET on xmlrpc.php yields the fault "... accepts POST requests only" once OUR server answers
# (it also warms DokuWiki up: the first request creates the cookie salt and indexes).
probe() {
  local port=$1 out
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /lib/exe/xmlrpc.php HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$port" >&3
  out=$(timeout 10 cat <&3)
  exec 3<&-
  [[ "$out" == *"POST requests only"* ]]
}

cmd_start() {
  local D=${1:?usage: $0 start DIR PORT} PORT=${2:?usage: $0 start DIR PORT}
  installed || { echo "dokuwiki is not installed: run $0 install" >&2; exit 2; }
  [[ "$PORT" =~ ^[0-9]+$ ]] || { echo "PORT must be a number" >&2; exit 2; }
  mkdir -p "$D"
  D=$(cd "$D" && pwd) # absolute: DokuWiki resolves relative paths against its code dir
  [[ "$D" != *[\'\\]* ]] || { echo "DIR must not contain quotes or backslashes" >&2; exit 2; }
  [[ -f "$D/conf/local.php" ]] || setup "$D"

  if [[ -f "$D/pid" ]] && kill -0 -- "-$(cat "$D/pid")" 2>/dev/null; then
    echo "already running: pid $(cat "$D/pid")" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use" >&2
    exit 1
  fi

  # setsid: php -S leads its own process group (pgid == pid), so `stop` also ends
  # PHP_CLI_SERVER_WORKERS children. OPcache with revalidate_freq=0 makes edits to conf/*.php
  # (acl.auth.php included) visible on the very next request.
  : >"$D/server.log"
  setsid php \
    -d auto_prepend_file="$D/prepend.php" \
    -d session.save_path="$D/sessions" \
    -d opcache.revalidate_freq=0 \
    -d error_log="$D/php-error.log" -d log_errors=1 -d display_errors=0 \
    -S "127.0.0.1:$PORT" -t "$DW_CODE" >"$D/server.log" 2>&1 </dev/null &
  echo $! >"$D/pid"

  for _ in $(seq 200); do
    kill -0 "$(cat "$D/pid")" 2>/dev/null || { echo "php -S died:" >&2; cat "$D/server.log" >&2; exit 1; }
    if grep -q "Development Server (http://127.0.0.1:$PORT) started" "$D/server.log" &&
      (probe "$PORT") 2>/dev/null; then
      echo "dokuwiki: pid $(cat "$D/pid") http://127.0.0.1:$PORT/ (XML-RPC /lib/exe/xmlrpc.php)"
      return 0
    fi
    sleep 0.1
  done
  echo "timeout waiting for port $PORT" >&2
  cat "$D/server.log" >&2
  cmd_stop "$D"
  exit 1
}

cmd_stop() {
  local D=${1:?usage: $0 stop DIR} pid
  [[ -f "$D/pid" ]] || return 0
  pid=$(cat "$D/pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || { rm -f "$D/pid"; return 0; }
  # Signal the whole process group (see start); the parent alone would orphan workers.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$D/pid"
}

cmd_seed() {
  local D=${1:?usage: $0 seed DIR PORT} PORT=${2:?usage: $0 seed DIR PORT}
  # XML-RPC from PHP itself (always installed alongside): no other client needed.
  DW_URL="http://127.0.0.1:$PORT/lib/exe/xmlrpc.php" DW_USER=admin DW_PW=$(password admin) php -r '
    $pages = [
      "start" => "====== Start ======\nWelcome. See [[eng:overview]] and [[hr:handbook]].\n",
      "eng:overview" => "====== Engineering ======\nBuild with **cargo**.\n",
      "eng:secret" => "====== Secret ======\nLaunch codes: 1234.\n",
      "eng:design:arch" => "====== Architecture ======\nThree tiers.\n",
      "hr:handbook" => "====== Handbook ======\nHolidays: 25 days.\n",
      "hr:salaries" => "====== Salaries ======\nConfidential table.\n",
    ];
    foreach ($pages as $id => $text) {
      $x = fn($s) => htmlspecialchars($s, ENT_XML1);
      $body = "<?xml version=\"1.0\"?><methodCall><methodName>wiki.putPage</methodName><params>"
        . "<param><value><string>" . $x($id) . "</string></value></param>"
        . "<param><value><string>" . $x($text) . "</string></value></param>"
        . "<param><value><struct><member><name>sum</name><value><string>seed</string></value></member></struct></value></param>"
        . "</params></methodCall>";
      $ctx = stream_context_create(["http" => ["method" => "POST", "ignore_errors" => true,
        "header" => "Content-Type: text/xml\r\nAuthorization: Basic "
          . base64_encode(getenv("DW_USER") . ":" . getenv("DW_PW")) . "\r\n",
        "content" => $body]]);
      $out = file_get_contents(getenv("DW_URL"), false, $ctx);
      if ($out === false || strpos($out, "<boolean>1</boolean>") === false) {
        fwrite(STDERR, "seed: wiki.putPage $id failed: $out\n");
        exit(1);
      }
      echo "seeded $id\n";
    }'
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  seed) shift; cmd_seed "$@" ;;
  *) usage ;;
esac
