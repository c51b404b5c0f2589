#!/usr/bin/env bash
# The local Argilla stack for human review: redis-server (Debian), osmem-server (in-memory
# OpenSearch-compatible search engine from PyPI), argilla-server 2.8 on SQLite, and its worker.
#
#   bash scripts/argilla-stack.sh install   # virtualenv under $CURATE_HOME/argilla-venv (fast when done)
#   bash scripts/argilla-stack.sh start     # start everything, reindex, create users, wait until healthy
#   bash scripts/argilla-stack.sh stop
#   bash scripts/argilla-stack.sh status       # exit 0 when healthy
#   bash scripts/argilla-stack.sh credentials  # print the local credentials as shell exports
#
# Every server binds to 127.0.0.1. Settings (environment, with local defaults):
#   CURATE_HOME                      ~/.cache/curate (venv in argilla-venv/, data in argilla/, logs+pids in run/)
#   CURATE_ARGILLA_PORT              6900
#   CURATE_ARGILLA_OSMEM_PORT        9200
#   CURATE_ARGILLA_REDIS_PORT        6389
#   CURATE_ARGILLA_OWNER             owner's username           (default: argilla)
#   CURATE_ARGILLA_OWNER_API_KEY     owner's API key            (default: random, generated on first start)
#   CURATE_ARGILLA_OWNER_PASSWORD    owner's password           (default: random, generated on first start)
#   CURATE_ARGILLA_ANNOTATORS        comma-separated usernames  (default: annotator1,annotator2)
#   CURATE_ARGILLA_ANNOTATOR_PASSWORD  annotators' password     (default: random, generated on first start)
#   CURATE_ARGILLA_WORKSPACE         workspace every user joins (default: curate)
# Credentials: a value set in the environment wins; otherwise the stack's own file
# $CURATE_HOME/argilla/credentials.env (mode 600, written on first start with random values) holds
# them. Secrets never go on a command line (`ps` shows command lines): they travel by environment
# or by file. The local owner key has its own variable; ARGILLA_API_KEY is left to a production
# Argilla (the toolkit reads whichever variable [argilla] api_key_env names).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# argilla_server's CLI with osmem's missing scripted updates replaced (see that file).
COMPAT="$HERE/argilla_osmem_compat.py"
CURATE_HOME="${CURATE_HOME:-$HOME/.cache/curate}"
VENV="$CURATE_HOME/argilla-venv"
DATA="$CURATE_HOME/argilla"
RUN="$CURATE_HOME/run"
PY="$VENV/bin/python"
ARGILLA_PORT="${CURATE_ARGILLA_PORT:-6900}"
OSMEM_PORT="${CURATE_ARGILLA_OSMEM_PORT:-9200}"
REDIS_PORT="${CURATE_ARGILLA_REDIS_PORT:-6389}"
URL="http://127.0.0.1:$ARGILLA_PORT"
# Bump the stamp when the pins change so `install` rebuilds the environment.
REQUIREMENTS=("argilla-server==2.8.0" "click<8.2" "osmem-server==0.1.6")
STAMP="$VENV/.curate-requirements"

CREDENTIALS="$DATA/credentials.env"
WORKSPACE="${CURATE_ARGILLA_WORKSPACE:-curate}"
# Stacks started before credentials were generated used these; kept so such a stack stays usable.
LEGACY_OWNER_API_KEY="argilla.apikey" LEGACY_OWNER_PASSWORD="12345678" LEGACY_ANNOTATOR_PASSWORD="annotate123"

log() { printf '\033[1m[argilla]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

argilla_env() {
  export ARGILLA_HOME_PATH="$DATA"
  export ARGILLA_DATABASE_URL="sqlite+aiosqlite:///$DATA/argilla.db?check_same_thread=False"
  export ARGILLA_SEARCH_ENGINE=opensearch
  export ARGILLA_ELASTICSEARCH="http://127.0.0.1:$OSMEM_PORT"
  export ARGILLA_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  export ARGILLA_SHOW_HUGGINGFACE_SPACE_PERSISTENT_STORAGE_WARNING=false
  export HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1
  # Argilla's own module names (logging.py) must not shadow the stdlib: never run from its folder.
  cd "$CURATE_HOME"
}

random_secret() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom 2>/dev/null | head -c 32 || true; }

stored_credential() { if [ -f "$CREDENTIALS" ]; then sed -n "s/^$1=//p" "$CREDENTIALS" | tail -n 1; fi; }

# Effective credentials: environment, else the stack's file, else new random values (or, for a
# database an older script created without a file, the defaults it used). Written once, mode 600.
load_credentials() {
  local fresh_owner_key fresh_owner_password fresh_annotator_password
  if [ -f "$CREDENTIALS" ]; then
    fresh_owner_key="$(stored_credential CURATE_ARGILLA_OWNER_API_KEY)"
    fresh_owner_password="$(stored_credential CURATE_ARGILLA_OWNER_PASSWORD)"
    fresh_annotator_password="$(stored_credential CURATE_ARGILLA_ANNOTATOR_PASSWORD)"
  elif [ -f "$DATA/argilla.db" ] && [ -x "$PY" ] && OWNER="${CURATE_ARGILLA_OWNER:-argilla}" owner_exists; then
    fresh_owner_key="$LEGACY_OWNER_API_KEY" fresh_owner_password="$LEGACY_OWNER_PASSWORD"
    fresh_annotator_password="$LEGACY_ANNOTATOR_PASSWORD"
  else
    fresh_owner_key="$(random_secret)" fresh_owner_password="$(random_secret)"
    fresh_annotator_password="$(random_secret)"
  fi
  OWNER="${CURATE_ARGILLA_OWNER:-$(stored_credential CURATE_ARGILLA_OWNER)}"
  OWNER="${OWNER:-argilla}"
  ANNOTATORS="${CURATE_ARGILLA_ANNOTATORS:-$(stored_credential CURATE_ARGILLA_ANNOTATORS)}"
  ANNOTATORS="${ANNOTATORS:-annotator1,annotator2}"
  export CURATE_ARGILLA_OWNER_API_KEY="${CURATE_ARGILLA_OWNER_API_KEY:-$fresh_owner_key}"
  export CURATE_ARGILLA_OWNER_PASSWORD="${CURATE_ARGILLA_OWNER_PASSWORD:-$fresh_owner_password}"
  export CURATE_ARGILLA_ANNOTATOR_PASSWORD="${CURATE_ARGILLA_ANNOTATOR_PASSWORD:-$fresh_annotator_password}"
  if [ ! -f "$CREDENTIALS" ]; then
    mkdir -p "$DATA"
    ( umask 077
      printf '%s\n' "# Local Argilla stack credentials (scripts/argilla-stack.sh); environment variables override them." \
        "CURATE_ARGILLA_OWNER=$OWNER" "CURATE_ARGILLA_OWNER_API_KEY=$CURATE_ARGILLA_OWNER_API_KEY" \
        "CURATE_ARGILLA_OWNER_PASSWORD=$CURATE_ARGILLA_OWNER_PASSWORD" "CURATE_ARGILLA_ANNOTATORS=$ANNOTATORS" \
        "CURATE_ARGILLA_ANNOTATOR_PASSWORD=$CURATE_ARGILLA_ANNOTATOR_PASSWORD" > "$CREDENTIALS.tmp"
      mv "$CREDENTIALS.tmp" "$CREDENTIALS" )
  fi
  # curl reads the key header from a file, so the key is not in its command line either.
  mkdir -p "$RUN"
  ( umask 077; printf 'X-Argilla-Api-Key: %s\n' "$CURATE_ARGILLA_OWNER_API_KEY" > "$RUN/owner-key.header" )
}

api_me() { curl -fsS -m "${1:-3}" -H @"$RUN/owner-key.header" "$URL/api/v1/me"; }

cmd_install() {
  if [ -x "$PY" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${REQUIREMENTS[*]}" ]; then
    return 0
  fi
  log "creating $VENV (${REQUIREMENTS[*]})"
  mkdir -p "$CURATE_HOME"
  rm -rf "$VENV"
  if command -v uv >/dev/null 2>&1; then
    # Never fetch a Python build: only registries are reachable, so use an installed 3.11.
    UV_PYTHON_DOWNLOADS=never uv venv --quiet --python 3.11 "$VENV"
    VIRTUAL_ENV="$VENV" uv pip install --quiet "${REQUIREMENTS[@]}"
  else
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet "${REQUIREMENTS[@]}"
  fi
  echo "${REQUIREMENTS[*]}" > "$STAMP"
}

pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

healthy() {
  pid_alive redis && pid_alive osmem && pid_alive server && pid_alive worker \
    && api_me 3 >/dev/null 2>&1
}

# Busy is not down: when every process of the stack lives, a loaded server gets a deadline to
# answer before the stack is judged broken (and restarted, which would pull it from under its users).
healthy_or_busy() {
  pid_alive redis && pid_alive osmem && pid_alive server && pid_alive worker || return 1
  local deadline=$((SECONDS + ${CURATE_ARGILLA_READY_TIMEOUT:-120}))
  until api_me 10 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    pid_alive server || return 1
    sleep 1
  done
}

# The daemons this invocation started (name:pid), the only ones a failed start stops.
SPAWNED=()

# Each daemon runs in its own session so `stop` can end it with all its children. 7>&-: a daemon
# must not inherit the start lock, or it would hold it for its whole life.
spawn() {
  local name="$1"; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null 7>&- &
  echo $! >"$RUN/$name.pid"
  SPAWNED+=("$name:$!")
}

wait_until() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s; see $RUN/"
    sleep 0.3
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_pid() {
  local pid="$1"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

stop_one() {
  local name="$1"
  [ -f "$RUN/$name.pid" ] || return 0
  stop_pid "$(cat "$RUN/$name.pid")"
  rm -f "$RUN/$name.pid"
}

# A failed start stops the daemons it spawned, newest first, and nothing else.
stop_spawned() {
  local i name pid
  for ((i = ${#SPAWNED[@]} - 1; i >= 0; i--)); do
    name="${SPAWNED[i]%%:*}" pid="${SPAWNED[i]#*:}"
    stop_pid "$pid"
    [ "$(cat "$RUN/$name.pid" 2>/dev/null)" != "$pid" ] || rm -f "$RUN/$name.pid"
  done
}

# Starts and stops of one stack ($CURATE_HOME) take turns: a second start waits for the first and
# then finds the stack healthy, instead of racing it for the ports and tearing it down on failure.
take_lock() {
  mkdir -p "$RUN"
  exec 7>"$RUN/argilla-stack.lock"
  flock -w "${CURATE_ARGILLA_LOCK_TIMEOUT:-900}" 7 || die "another start or stop of this stack holds $RUN/argilla-stack.lock"
}

cmd_stop() {
  for name in worker server osmem redis; do stop_one "$name"; done
  log "stopped"
}

owner_exists() {
  [ -f "$DATA/argilla.db" ] && "$PY" - "$DATA/argilla.db" "$OWNER" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
try:
    found = con.execute("select 1 from users where username = ?", (sys.argv[2],)).fetchone()
except sqlite3.Error:
    found = None
sys.exit(0 if found else 1)
PY
}

# Annotators are created through the REST API with the owner's key (one short process), and
# every user joins the review workspace. Passwords and keys go through the environment only.
ensure_annotators() {
  CURATE_ARGILLA_URL="$URL" CURATE_ARGILLA_WS="$WORKSPACE" CURATE_ARGILLA_USERS="$ANNOTATORS" "$PY" - <<'PY'
import os, sys
import httpx

api = httpx.Client(base_url=os.environ["CURATE_ARGILLA_URL"], timeout=30,
                   headers={"X-Argilla-Api-Key": os.environ["CURATE_ARGILLA_OWNER_API_KEY"]})
ws_name = os.environ["CURATE_ARGILLA_WS"]
workspaces = {w["name"]: w for w in api.get("/api/v1/me/workspaces").raise_for_status().json()["items"]}
ws = workspaces.get(ws_name) or api.post("/api/v1/workspaces", json={"name": ws_name}).raise_for_status().json()
users = {u["username"]: u for u in api.get("/api/v1/users").raise_for_status().json()["items"]}
members = {u["username"] for u in api.get(f"/api/v1/workspaces/{ws['id']}/users").raise_for_status().json()["items"]}
me = api.get("/api/v1/me").raise_for_status().json()
wanted = [name.strip() for name in os.environ["CURATE_ARGILLA_USERS"].split(",") if name.strip()]
for name in wanted:
    if name not in users:
        body = {"username": name, "first_name": name, "role": "annotator", "password": os.environ["CURATE_ARGILLA_ANNOTATOR_PASSWORD"]}
        r = api.post("/api/v1/users", json=body)
        if r.status_code >= 400:
            sys.exit(f"creating annotator {name!r} failed: HTTP {r.status_code} {r.text[:200]}")
        users[name] = r.json()
for name in [me["username"], *wanted]:
    if name not in members:
        api.post(f"/api/v1/workspaces/{ws['id']}/users", json={"user_id": users[name]["id"]}).raise_for_status()
PY
}

cmd_start() {
  take_lock  # first: install, the credentials file and the ports are all shared with a concurrent start
  cmd_install
  mkdir -p "$RUN" "$DATA"
  load_credentials
  if healthy_or_busy; then
    log "already running at $URL"
    return 0
  fi
  command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run scripts/setup.sh (apt-get install redis-server)"
  # A half-running stack (one part crashed) is restarted whole: the search index must match SQLite.
  cmd_stop >/dev/null 2>&1
  for port in "$REDIS_PORT" "$OSMEM_PORT" "$ARGILLA_PORT"; do
    port_free "$port" || die "port 127.0.0.1:$port is taken by another process"
  done
  local started=$SECONDS
  # A start that dies midway takes down what it had started.
  trap 'log "start failed; stopping what this start started"; stop_spawned >/dev/null 2>&1' EXIT
  argilla_env

  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --protected-mode yes
  local osmem_bin
  osmem_bin="$("$PY" -c 'import osmem_server; print(osmem_server.resolve_binary())')"
  spawn osmem "$osmem_bin" --addr "127.0.0.1:$OSMEM_PORT" --no-stdin-watch --no-ja
  # Migrating costs a full server import (seconds); the stamp skips it once the schema is current.
  local migrated="$DATA/.migrated-${REQUIREMENTS[0]}"
  if [ ! -f "$migrated" ] || [ ! -f "$DATA/argilla.db" ]; then
    "$PY" -m argilla_server database migrate >"$RUN/migrate.log" 2>&1 || die "database migration failed; see $RUN/migrate.log"
    touch "$migrated"
  fi
  if ! owner_exists; then
    # Argilla's own `database users create`, run in-process with its arguments built from the
    # environment: this process's command line is just `python -`. It echoes the key; keep that out of logs.
    CURATE_ARGILLA_OWNER_NAME="$OWNER" CURATE_ARGILLA_WS="$WORKSPACE" "$PY" - >/dev/null 2>"$RUN/users.log" <<'PY' \
      || die "creating owner '$OWNER' failed; see $RUN/users.log"
import os, runpy, sys

env = os.environ
sys.argv = ["argilla_server", "database", "users", "create", "--username", env["CURATE_ARGILLA_OWNER_NAME"],
            "--first-name", env["CURATE_ARGILLA_OWNER_NAME"], "--role", "owner",
            "--password", env["CURATE_ARGILLA_OWNER_PASSWORD"], "--api-key", env["CURATE_ARGILLA_OWNER_API_KEY"],
            "--workspace", env["CURATE_ARGILLA_WS"]]
runpy.run_module("argilla_server", run_name="__main__", alter_sys=True)
PY
  fi
  wait_until "redis-server" 20 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
  wait_until "osmem-server" 20 curl -fsS -m 2 "http://127.0.0.1:$OSMEM_PORT/"

  spawn server "$PY" "$COMPAT" start --host 127.0.0.1 --port "$ARGILLA_PORT" --no-access-log
  spawn worker "$PY" "$COMPAT" worker --num-workers 1
  # osmem keeps its index in memory only: rebuild it from SQLite on every start.
  "$PY" -m argilla_server search-engine reindex >"$RUN/reindex.log" 2>&1 || die "search-engine reindex failed; see $RUN/reindex.log"
  wait_until "argilla-server" 180 api_me 2
  ensure_annotators 2>"$RUN/users.log" || die "creating annotators failed; see $RUN/users.log"
  healthy || die "stack is not healthy after start; see $RUN/"
  trap - EXIT
  log "running at $URL (owner '$OWNER', annotators '$ANNOTATORS', workspace '$WORKSPACE') in $((SECONDS - started))s"
  log "credentials in $CREDENTIALS (or: bash scripts/argilla-stack.sh credentials)"
}

cmd_status() {
  local name state ok=0
  load_credentials
  for name in redis osmem server worker; do
    if pid_alive "$name"; then state="running (pid $(cat "$RUN/$name.pid"))"; else state="stopped"; ok=1; fi
    printf '%-8s %s\n' "$name" "$state"
  done
  if api_me 10 >/dev/null 2>&1; then  # a loaded server can take seconds to answer
    echo "api      healthy at $URL"
  else
    echo "api      not answering at $URL"; ok=1
  fi
  return $ok
}

# Shell exports of the effective credentials, for `eval "$(bash scripts/argilla-stack.sh credentials)"`.
cmd_credentials() {
  load_credentials
  printf 'export %s=%q\n' CURATE_ARGILLA_OWNER "$OWNER" CURATE_ARGILLA_OWNER_API_KEY "$CURATE_ARGILLA_OWNER_API_KEY" \
    CURATE_ARGILLA_OWNER_PASSWORD "$CURATE_ARGILLA_OWNER_PASSWORD" CURATE_ARGILLA_ANNOTATORS "$ANNOTATORS" \
    CURATE_ARGILLA_ANNOTATOR_PASSWORD "$CURATE_ARGILLA_ANNOTATOR_PASSWORD" CURATE_ARGILLA_WORKSPACE "$WORKSPACE"
}

case "${1:-}" in
  install) take_lock; cmd_install ;;
  start) cmd_start ;;
  credentials) cmd_credentials ;;
  stop) take_lock; cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status|credentials" >&2; exit 2 ;;
esac
