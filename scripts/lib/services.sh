# shellcheck shell=bash
# Service bring-up and throwaway-database cleanup for scripts/test.
#
# Sourced, not executed. Expects `set -euo pipefail` in the caller. Every
# ensure_* function returns non-zero (after printing why) instead of exiting,
# so the caller decides whether a missing service is fatal.

SOKO_PG_DEFAULT_URL="postgres://postgres@127.0.0.1:5432/postgres"
SOKO_REDIS_DEFAULT_URL="redis://127.0.0.1:6379"
SOKO_SERVICE_TIMEOUT="${SOKO_TEST_SERVICE_TIMEOUT:-30}"
SOKO_LOCK_FILE="/tmp/soko-test.lock"

log()  { printf 'scripts/test: %s\n' "$*" >&2; }
warn() { printf 'scripts/test: WARNING: %s\n' "$*" >&2; }
err()  { printf 'scripts/test: ERROR: %s\n' "$*" >&2; }
die()  { err "$@"; exit 1; }

is_ci() {
  case "${CI:-}" in
    true | TRUE | True | 1 | yes) return 0 ;;
    *) return 1 ;;
  esac
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# wait_for DESCRIPTION CMD...: retry CMD once a second for SOKO_SERVICE_TIMEOUT s.
wait_for() {
  local what="$1" i
  shift
  for ((i = 0; i < SOKO_SERVICE_TIMEOUT; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  err "$what did not come up within ${SOKO_SERVICE_TIMEOUT}s"
  return 1
}

SOKO_APT_UPDATED=0
# apt_install PKG...: install Debian packages (root only).
apt_install() {
  if ! is_root; then
    err "packages needed but not installed: $*"
    err "install them as root:  sudo apt-get update && sudo apt-get install -y $*"
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    err "packages needed but not installed: $* (no apt-get here; install them by hand)"
    return 1
  fi
  log "installing: $* (apt-get)"
  if [[ "$SOKO_APT_UPDATED" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 9>&- || return 1
    SOKO_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >&2 9>&-
}

# ensure_cmds PACKAGE CMD...: install PACKAGE when any CMD is missing.
ensure_cmds() {
  local pkg="$1" c
  shift
  for c in "$@"; do
    if ! command -v "$c" >/dev/null 2>&1; then
      apt_install "$pkg" || return 1
      break
    fi
  done
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || { err "'$c' still missing after installing $pkg"; return 1; }
  done
}

# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

pg_query() { # URL SQL
  PGCONNECT_TIMEOUT=5 psql "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}

pg_server_installed() {
  command -v pg_ctlcluster >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

pg_start_local() {
  local ver name
  read -r ver name < <(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }') || true
  if [[ -z "${ver:-}" ]]; then
    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    name=main
    if [[ -z "$ver" || ! -d "/etc/postgresql/$ver/main" ]]; then
      ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
      log "no PostgreSQL cluster found; creating $ver/main on port 5432"
      pg_createcluster "$ver" main --port 5432 >&2 9>&- || return 1
    fi
  fi
  log "starting PostgreSQL cluster $ver/$name"
  # Non-zero also when the cluster is already running (e.g. not listening on
  # TCP); the wait below decides.
  pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 9>&- ||
    warn "pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
}

# Allow user postgres over TCP 127.0.0.1 without a password (local server, root only).
pg_fix_local_auth() {
  local hba line='host all postgres 127.0.0.1/32 trust  # added by soko scripts/test'
  is_root || return 1
  hba="$(runuser -u postgres -- psql -X -A -t -q -c 'show hba_file' 2>/dev/null)" || return 1
  [[ -f "$hba" ]] || return 1
  if ! grep -qF 'added by soko scripts/test' "$hba"; then
    log "adding '$line' to the top of $hba"
    sed -i "1i $line" "$hba"
  fi
  runuser -u postgres -- psql -X -A -t -q -c 'select pg_reload_conf()' >/dev/null
  sleep 1
}

ensure_postgres() {
  if [[ -n "${SOKO_TEST_POSTGRES_URL:-}" ]]; then
    log "postgres: using preset SOKO_TEST_POSTGRES_URL (bring-up skipped)"
    return 0
  fi
  ensure_cmds postgresql-client psql pg_isready || return 1
  local url="$SOKO_PG_DEFAULT_URL"
  if ! pg_isready -q -h 127.0.0.1 -p 5432 -t 3; then
    if ! pg_server_installed; then
      log "postgres: not reachable and not installed"
      apt_install postgresql || return 1
      # The package may have started it already.
      pg_isready -q -h 127.0.0.1 -p 5432 -t 3 || pg_start_local || return 1
    else
      log "postgres: not reachable; starting the installed server"
      pg_start_local || return 1
    fi
    wait_for "PostgreSQL on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432 -t 2 || return 1
  fi
  if ! pg_query "$url" 'select 1' >/dev/null 2>&1; then
    log "postgres: reachable but '$url' is refused; trying to allow local trust auth"
    if ! pg_fix_local_auth || ! pg_query "$url" 'select 1' >/dev/null; then
      err "cannot log in to PostgreSQL as postgres over 127.0.0.1 without a password;"
      err "fix pg_hba.conf or set SOKO_TEST_POSTGRES_URL=postgres://user:pass@host:port/postgres"
      return 1
    fi
  fi
  export SOKO_TEST_POSTGRES_URL="$url"
  log "postgres: ok ($url)"
}

# --------------------------------------------------------------------------
# MariaDB / MySQL
# --------------------------------------------------------------------------

my_client() { command -v mariadb || command -v mysql; }
my_admin() { command -v mariadb-admin || command -v mysqladmin; }

urldecode() { local s="${1//+/ }"; printf '%b' "${s//%/\\x}"; }

# my_query URL SQL: run SQL through the mariadb client, tab-separated, no headers.
my_query() {
  local url="$1" sql="$2" re='^mysql://(([^:@/]*)(:([^@/]*))?@)?([^:/?]+)(:([0-9]+))?(/([^?]*))?'
  if [[ ! "$url" =~ $re ]]; then
    err "cannot parse MySQL URL: $url"
    return 2
  fi
  local user pass host port db
  user="$(urldecode "${BASH_REMATCH[2]:-root}")"
  pass="$(urldecode "${BASH_REMATCH[4]:-}")"
  host="${BASH_REMATCH[5]}"
  port="${BASH_REMATCH[7]:-3306}"
  db="${BASH_REMATCH[9]:-mysql}"
  local -a envs=()
  [[ -n "$pass" ]] && envs=(MYSQL_PWD="$pass")
  env "${envs[@]}" "$(my_client)" --no-defaults --protocol=tcp -h "$host" -P "$port" -u "$user" \
    --connect-timeout=5 -N -B -e "$sql" "$db"
}

my_ping() { "$(my_admin)" --no-defaults --protocol=tcp -h 127.0.0.1 -P 3306 --connect-timeout=2 ping; }

my_server_bin() {
  local b
  for b in /usr/sbin/mariadbd /usr/sbin/mysqld; do
    [[ -x "$b" ]] && { echo "$b"; return 0; }
  done
  return 1
}

my_start_local() {
  local bin datadir
  bin="$(my_server_bin)" || return 1
  if ! id mysql >/dev/null 2>&1; then
    err "system user 'mysql' does not exist; the MariaDB install looks broken"
    return 1
  fi
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  datadir="$( (my_print_defaults --mysqld 2>/dev/null || true) | sed -n 's/^--datadir=//p' | tail -n 1)"
  datadir="${datadir:-/var/lib/mysql}"
  if [[ ! -d "$datadir/mysql" ]]; then
    log "initialising MariaDB data directory $datadir"
    mariadb-install-db --user=mysql --datadir="$datadir" >/dev/null 9>&- || return 1
  fi
  log "starting $bin"
  start-stop-daemon --start --oknodo --background --exec "$bin" -- --user=mysql >&2 9>&-
}

# Create 'soko'@'127.0.0.1' (and @localhost, for servers that resolve names)
# with an empty password and all privileges, via the local socket as OS root.
my_fix_local_auth() {
  is_root || return 1
  log "creating MariaDB user 'soko'@'127.0.0.1' (empty password, ALL PRIVILEGES) via the local socket"
  "$(my_client)" --protocol=socket -uroot -e "
    CREATE USER IF NOT EXISTS 'soko'@'127.0.0.1' IDENTIFIED BY '';
    CREATE USER IF NOT EXISTS 'soko'@'localhost' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'soko'@'127.0.0.1' WITH GRANT OPTION;
    GRANT ALL PRIVILEGES ON *.* TO 'soko'@'localhost' WITH GRANT OPTION;"
}

ensure_mysql() {
  if [[ -n "${SOKO_TEST_MYSQL_URL:-}" ]]; then
    log "mysql: using preset SOKO_TEST_MYSQL_URL (bring-up skipped)"
    return 0
  fi
  ensure_cmds mariadb-client mariadb mariadb-admin || return 1
  # `ping` succeeds as soon as the server answers, even with access denied.
  if ! my_ping >/dev/null 2>&1; then
    if ! my_server_bin >/dev/null; then
      log "mysql: not reachable and not installed"
      apt_install mariadb-server || return 1
      my_ping >/dev/null 2>&1 || my_start_local || return 1
    else
      log "mysql: not reachable; starting the installed server"
      my_start_local || return 1
    fi
    wait_for "MariaDB on 127.0.0.1:3306" my_ping || return 1
  fi
  local url
  for url in mysql://root@127.0.0.1:3306/mysql mysql://soko@127.0.0.1:3306/mysql; do
    if my_query "$url" 'select 1' >/dev/null 2>&1; then
      export SOKO_TEST_MYSQL_URL="$url"
      log "mysql: ok ($url)"
      return 0
    fi
  done
  url=mysql://soko@127.0.0.1:3306/mysql
  if my_fix_local_auth && my_query "$url" 'select 1' >/dev/null; then
    export SOKO_TEST_MYSQL_URL="$url"
    log "mysql: ok ($url)"
    return 0
  fi
  err "cannot log in to MariaDB over 127.0.0.1 as root or soko without a password;"
  err "create such a user or set SOKO_TEST_MYSQL_URL=mysql://user:pass@host:port/mysql"
  return 1
}

# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------

redis_ping() { [[ "$(timeout 5 redis-cli -u "$1" ping 2>/dev/null)" == PONG ]]; }

ensure_redis() {
  if [[ -n "${SOKO_TEST_REDIS_URL:-}" ]]; then
    log "redis: using preset SOKO_TEST_REDIS_URL (bring-up skipped)"
    return 0
  fi
  ensure_cmds redis-tools redis-cli || return 1
  local url="$SOKO_REDIS_DEFAULT_URL"
  if ! redis_ping "$url"; then
    if ! command -v redis-server >/dev/null 2>&1; then
      log "redis: not reachable and not installed"
      apt_install redis-server || return 1
    else
      log "redis: not reachable; starting the installed server"
    fi
    if ! redis_ping "$url"; then
      if ! is_root; then
        err "redis-server must be started as root here (or set SOKO_TEST_REDIS_URL)"
        return 1
      fi
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 9>&- ||
        warn "redis-server failed to start (see /var/log/redis/ci.log)"
      wait_for "Redis on 127.0.0.1:6379" redis_ping "$url" || return 1
    fi
  fi
  export SOKO_TEST_REDIS_URL="$url"
  log "redis: ok ($url)"
}

# --------------------------------------------------------------------------
# Milvus: one standalone server for the whole run (PyPI's milvus==2.3.5 gives `milvus-server`,
# a real Milvus with its own etcd). It binds fixed ports (19530, etcd's 2379 and others) and does
# not complain when another process binds them too, so one that already answers is used as is,
# and tests give each test its own collection.
# --------------------------------------------------------------------------
SOKO_MILVUS_DEFAULT_ADDR=127.0.0.1:19530
SOKO_MILVUS_PID=""
SOKO_MILVUS_DATA=""

# milvus_ping ADDR: Milvus's own CheckHealth over gRPC answers OK and healthy (isHealthy=true is
# the bytes 10 01 at the end of the message). Anything else on the port fails this.
milvus_ping() {
  local dir rc=1
  dir="$(mktemp -d)"
  if printf '\0\0\0\0\0' |
    curl -s -m 5 --http2-prior-knowledge -X POST -H 'content-type: application/grpc' -H 'te: trailers' \
      --data-binary @- -D "$dir/headers" -o "$dir/body" \
      "http://$1/milvus.proto.milvus.MilvusService/CheckHealth" &&
    grep -q '^grpc-status: 0' "$dir/headers" && [[ "$(xxd -p "$dir/body" | tr -d '\n')" == *1001 ]]; then
    rc=0
  fi
  rm -rf "$dir"
  return "$rc"
}

# milvus_started ADDR: the server this run started answers; a server that died (its ports taken
# by another Milvus, say) ends the wait at once instead of after the timeout.
milvus_started() {
  local child dead=0
  kill -0 "$SOKO_MILVUS_PID" 2>/dev/null || dead=1
  # The wrapper outlives the server it runs: a zombie child means the server is gone.
  for child in $(pgrep -P "$SOKO_MILVUS_PID"); do
    [[ "$(ps -o stat= -p "$child" 2>/dev/null)" == Z* ]] && dead=1
  done
  if ((dead)); then
    SOKO_SERVICE_TIMEOUT=0
    err "milvus-server exited (see $SOKO_MILVUS_DATA.log)"
    return 1
  fi
  milvus_ping "$1"
}

ensure_milvus() {
  if [[ -n "${SOKO_TEST_MILVUS_ADDRESS:-}" ]]; then
    log "milvus: using preset SOKO_TEST_MILVUS_ADDRESS (bring-up skipped)"
    return 0
  fi
  local addr="$SOKO_MILVUS_DEFAULT_ADDR"
  if ! milvus_ping "$addr"; then
    if ! command -v milvus-server >/dev/null 2>&1; then
      log "milvus: not running and not installed; pip install milvus==2.3.5"
      python3 -m pip install -q --disable-pip-version-check "milvus==2.3.5" >&2 9>&- ||
        { err "pip install milvus==2.3.5 failed"; return 1; }
      hash -r
      command -v milvus-server >/dev/null || { err "milvus-server is not on PATH after pip install"; return 1; }
    fi
    SOKO_MILVUS_DATA="$(mktemp -d "${TMPDIR:-/tmp}/soko-milvus.XXXXXX")"
    log "milvus: starting milvus-server --data $SOKO_MILVUS_DATA"
    milvus-server --data "$SOKO_MILVUS_DATA" >"$SOKO_MILVUS_DATA.log" 2>&1 9>&- &
    SOKO_MILVUS_PID=$!
    # Its first start unpacks the server and starts etcd: allow longer than a database.
    local SOKO_SERVICE_TIMEOUT=$((SOKO_SERVICE_TIMEOUT < 120 ? 120 : SOKO_SERVICE_TIMEOUT))
    wait_for "Milvus on $addr" milvus_started "$addr" || { tail -20 "$SOKO_MILVUS_DATA.log" >&2; return 1; }
  fi
  export SOKO_TEST_MILVUS_ADDRESS="$addr"
  log "milvus: ok ($addr${SOKO_MILVUS_PID:+, pid $SOKO_MILVUS_PID})"
}

# stop_milvus: stops the Milvus this run started (its wrapper and the server under it), by PID.
stop_milvus() {
  [[ -n "$SOKO_MILVUS_PID" ]] || return 0
  local children
  children="$(pgrep -P "$SOKO_MILVUS_PID" || true)"
  kill -TERM "$SOKO_MILVUS_PID" $children 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$SOKO_MILVUS_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$SOKO_MILVUS_PID" $children 2>/dev/null || true
  rm -rf "$SOKO_MILVUS_DATA" "$SOKO_MILVUS_DATA.log"
  SOKO_MILVUS_PID=""
}

# --------------------------------------------------------------------------
# Throwaway databases (soko_t_<hex>)
# --------------------------------------------------------------------------
# Databases still in use by a live connection are left alone (someone's
# `cargo test` may be running against the same server), and the whole cleanup
# is skipped while another scripts/test run on this machine holds the lock.

SOKO_DB_NAME_RE='^soko_t_[A-Za-z0-9_]+$'

pg_drop_test_dbs() {
  local url="$1" names db n=0
  names="$(pg_query "$url" "select datname from pg_database where datname like 'soko\_t\_%'")" || {
    warn "postgres: could not list soko_t_* databases"
    return 0
  }
  for db in $names; do
    [[ "$db" =~ $SOKO_DB_NAME_RE ]] || continue
    if [[ "$(pg_query "$url" "select count(*) from pg_stat_activity where datname = '$db'" 2>/dev/null || echo 1)" != 0 ]]; then
      warn "postgres: left $db in place (in use)"
      continue
    fi
    # Without FORCE: a database with live connections is refused, not killed.
    if pg_query "$url" "drop database if exists \"$db\"" >/dev/null 2>&1; then
      n=$((n + 1))
    else
      warn "postgres: left $db in place (in use?)"
    fi
  done
  ((n == 0)) || log "postgres: dropped $n soko_t_* database(s)"
}

my_drop_test_dbs() {
  local url="$1" names db busy n=0
  names="$(my_query "$url" "select schema_name from information_schema.schemata where schema_name like 'soko\\_t\\_%'")" || {
    warn "mysql: could not list soko_t_* databases"
    return 0
  }
  for db in $names; do
    [[ "$db" =~ $SOKO_DB_NAME_RE ]] || continue
    busy="$(my_query "$url" "select count(*) from information_schema.processlist where db = '$db'" 2>/dev/null || echo 1)"
    if [[ "$busy" != 0 ]]; then
      warn "mysql: left $db in place (in use)"
      continue
    fi
    if my_query "$url" "set session lock_wait_timeout = 5; drop database if exists \`$db\`" >/dev/null 2>&1; then
      n=$((n + 1))
    else
      warn "mysql: could not drop $db"
    fi
  done
  ((n == 0)) || log "mysql: dropped $n soko_t_* database(s)"
}

# Every scripts/test run holds a shared lock on fd 9 for its lifetime. Bash
# cannot mark it close-on-exec, so every long-lived child (servers started
# here, cargo) must be run with `9>&-`, or it would keep the lock held and
# block the cleanup of all later runs.
soko_lock_init() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>>"$SOKO_LOCK_FILE" || return 0
  chmod 0666 "$SOKO_LOCK_FILE" 2>/dev/null || true
  flock -s 9 || true
  SOKO_LOCK_HELD=1
}

# drop_test_dbs WANT_POSTGRES WANT_MYSQL (each 0/1)
drop_test_dbs() {
  local want_pg="$1" want_my="$2" exclusive=0
  if [[ "${SOKO_LOCK_HELD:-0}" == 1 ]]; then
    # Only clean up when no other scripts/test run is active on this machine.
    if flock -x -n 9; then
      exclusive=1
    else
      flock -s 9 || true # conversion is not atomic: make sure we hold it again
      log "another scripts/test run is active on this machine; leaving soko_t_* databases alone"
      return 0
    fi
  fi
  if [[ "$want_pg" == 1 && -n "${SOKO_TEST_POSTGRES_URL:-}" ]]; then
    if command -v psql >/dev/null 2>&1; then
      pg_drop_test_dbs "$SOKO_TEST_POSTGRES_URL"
    else
      warn "postgres: psql not installed; soko_t_* cleanup skipped"
    fi
  fi
  if [[ "$want_my" == 1 && -n "${SOKO_TEST_MYSQL_URL:-}" ]]; then
    if my_client >/dev/null; then
      my_drop_test_dbs "$SOKO_TEST_MYSQL_URL"
    else
      warn "mysql: mariadb client not installed; soko_t_* cleanup skipped"
    fi
  fi
  if [[ "$exclusive" == 1 ]]; then
    flock -s 9 || true
  fi
}
