#!/usr/bin/env bash
# The local Argilla stack for human review: redis-server (Debian), osmem-server (in-memory
# OpenSearch-compatible search engine from PyPI), argilla-server 2.8 on SQLite, and its worker.
#
#   bash scripts/argilla-stack.sh install   # virtualenv under $CURATE_HOME/argilla-venv (fast when done)
#   bash scripts/argilla-stack.sh start     # start everything, reindex, create users, wait until healthy
#   bash scripts/argilla-stack.sh stop
#   bash scripts/argilla-stack.sh status    # exit 0 when healthy
#
# Every server binds to 127.0.0.1. Settings (environment, with local defaults):
#   CURATE_HOME                      ~/.cache/curate (venv in argilla-venv/, data in argilla/, logs+pids in run/)
#   CURATE_ARGILLA_PORT              6900
#   CURATE_ARGILLA_OSMEM_PORT        9200
#   CURATE_ARGILLA_REDIS_PORT        6389
#   ARGILLA_API_KEY                  owner's API key            (local default: argilla.apikey)
#   CURATE_ARGILLA_OWNER             owner's username           (local default: argilla)
#   CURATE_ARGILLA_OWNER_PASSWORD    owner's password           (local default: 12345678)
#   CURATE_ARGILLA_ANNOTATORS        comma-separated usernames  (local default: annotator1,annotator2)
#   CURATE_ARGILLA_ANNOTATOR_PASSWORD  annotators' password     (local default: annotate123)
#   CURATE_ARGILLA_WORKSPACE         workspace every user joins (default: curate)
# The defaults are for this throwaway local stack only; production points the toolkit at its
# own Argilla through [argilla] api_url and the env var named by [argilla] api_key_env.
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

export ARGILLA_API_KEY="${ARGILLA_API_KEY:-argilla.apikey}"
OWNER="${CURATE_ARGILLA_OWNER:-argilla}"
OWNER_PASSWORD="${CURATE_ARGILLA_OWNER_PASSWORD:-12345678}"
ANNOTATORS="${CURATE_ARGILLA_ANNOTATORS:-annotator1,annotator2}"
ANNOTATOR_PASSWORD="${CURATE_ARGILLA_ANNOTATOR_PASSWORD:-annotate123}"
WORKSPACE="${CURATE_ARGILLA_WORKSPACE:-curate}"

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
    && curl -fsS -m 3 -H "X-Argilla-Api-Key: $ARGILLA_API_KEY" "$URL/api/v1/me" >/dev/null 2>&1
}

# Each daemon runs in its own session so `stop` can end it with all its children.
spawn() {
  local name="$1"; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
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

stop_one() {
  local name="$1" pid
  [ -f "$RUN/$name.pid" ] || return 0
  pid="$(cat "$RUN/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
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
  CURATE_ARGILLA_URL="$URL" CURATE_ARGILLA_WS="$WORKSPACE" CURATE_ARGILLA_USERS="$ANNOTATORS" \
  CURATE_ARGILLA_PASSWORD_="$ANNOTATOR_PASSWORD" "$PY" - <<'PY'
import os, sys
import httpx

api = httpx.Client(base_url=os.environ["CURATE_ARGILLA_URL"], timeout=30,
                   headers={"X-Argilla-Api-Key": os.environ["ARGILLA_API_KEY"]})
ws_name = os.environ["CURATE_ARGILLA_WS"]
workspaces = {w["name"]: w for w in api.get("/api/v1/me/workspaces").raise_for_status().json()["items"]}
ws = workspaces.get(ws_name) or api.post("/api/v1/workspaces", json={"name": ws_name}).raise_for_status().json()
users = {u["username"]: u for u in api.get("/api/v1/users").raise_for_status().json()["items"]}
members = {u["username"] for u in api.get(f"/api/v1/workspaces/{ws['id']}/users").raise_for_status().json()["items"]}
me = api.get("/api/v1/me").raise_for_status().json()
wanted = [name.strip() for name in os.environ["CURATE_ARGILLA_USERS"].split(",") if name.strip()]
for name in wanted:
    if name not in users:
        body = {"username": name, "first_name": name, "role": "annotator", "password": os.environ["CURATE_ARGILLA_PASSWORD_"]}
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
  cmd_install
  mkdir -p "$RUN" "$DATA"
  if healthy; then
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
  trap 'log "start failed; stopping what was started"; cmd_stop >/dev/null 2>&1' EXIT
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
    # The CLI echoes the key it stored; keep that out of the logs.
    "$PY" -m argilla_server database users create --username "$OWNER" --first-name "$OWNER" --role owner \
      --password "$OWNER_PASSWORD" --api-key "$ARGILLA_API_KEY" --workspace "$WORKSPACE" >/dev/null 2>"$RUN/users.log" \
      || die "creating owner '$OWNER' failed; see $RUN/users.log"
  fi
  wait_until "redis-server" 20 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
  wait_until "osmem-server" 20 curl -fsS -m 2 "http://127.0.0.1:$OSMEM_PORT/"

  spawn server "$PY" "$COMPAT" start --host 127.0.0.1 --port "$ARGILLA_PORT" --no-access-log
  spawn worker "$PY" "$COMPAT" worker --num-workers 1
  # osmem keeps its index in memory only: rebuild it from SQLite on every start.
  "$PY" -m argilla_server search-engine reindex >"$RUN/reindex.log" 2>&1 || die "search-engine reindex failed; see $RUN/reindex.log"
  wait_until "argilla-server" 180 curl -fsS -m 2 -H "X-Argilla-Api-Key: $ARGILLA_API_KEY" "$URL/api/v1/me"
  ensure_annotators 2>"$RUN/users.log" || die "creating annotators failed; see $RUN/users.log"
  healthy || die "stack is not healthy after start; see $RUN/"
  trap - EXIT
  log "running at $URL (owner '$OWNER', annotators '$ANNOTATORS', workspace '$WORKSPACE') in $((SECONDS - started))s"
}

cmd_status() {
  local name state ok=0
  for name in redis osmem server worker; do
    if pid_alive "$name"; then state="running (pid $(cat "$RUN/$name.pid"))"; else state="stopped"; ok=1; fi
    printf '%-8s %s\n' "$name" "$state"
  done
  if curl -fsS -m 3 -H "X-Argilla-Api-Key: $ARGILLA_API_KEY" "$URL/api/v1/me" >/dev/null 2>&1; then
    echo "api      healthy at $URL"
  else
    echo "api      not answering at $URL"; ok=1
  fi
  return $ok
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
