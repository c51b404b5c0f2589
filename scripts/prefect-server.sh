#!/usr/bin/env bash
# A local Prefect server with its UI, bound to 127.0.0.1 only, analytics off.
#
#   bash scripts/prefect-server.sh start [--port 4200]   start (or reuse a running one) and wait until healthy
#   bash scripts/prefect-server.sh stop [--port 4200]    stop the server this script started
#   bash scripts/prefect-server.sh status [--port 4200]  exit 0 if it answers, 1 if not
#
# Its home (SQLite database, logs, pid file) is ${CURATE_HOME:-~/.cache/curate}/prefect, never
# the user's ~/.prefect profile. Point clients at it with PREFECT_API_URL=http://127.0.0.1:PORT/api.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CURATE_HOME="${CURATE_HOME:-$HOME/.cache/curate}"
HOME_DIR="$CURATE_HOME/prefect"
HOST=127.0.0.1
PORT="${PREFECT_SERVER_PORT:-4200}"
START_TIMEOUT_S="${PREFECT_SERVER_START_TIMEOUT_S:-120}"

log() { printf '\033[1m[prefect-server]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cmd="${1:-}"; shift || true
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    *) die "unknown option '$1'" ;;
  esac
done

PID_FILE="$HOME_DIR/server-$PORT.pid"
LOG_FILE="$HOME_DIR/server-$PORT.log"
URL="http://$HOST:$PORT"

healthy() { curl -fsS --max-time 10 "$URL/api/health" >/dev/null 2>&1; }

our_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

start() {
  if healthy; then
    log "already running at $URL (UI: $URL)"
    return 0
  fi
  # Busy is not down: a server that listens but is slow to answer under load gets a deadline to
  # become healthy; starting a second one on its port could only fail.
  if port_open && ! our_pid >/dev/null; then
    local waited_busy=0
    until healthy; do
      port_open || break  # it went away: start our own below
      [ "$waited_busy" -ge "$START_TIMEOUT_S" ] && die "something listens on $HOST:$PORT but is not healthy after ${START_TIMEOUT_S}s"
      sleep 1; waited_busy=$((waited_busy + 1))
    done
    if healthy; then log "already running at $URL (UI: $URL)"; return 0; fi
  fi
  mkdir -p "$HOME_DIR"
  if pid="$(our_pid)"; then
    log "process $pid is starting; waiting"
  else
    log "starting on $URL (home $HOME_DIR, log $LOG_FILE)"
    # setsid: the server outlives this script's shell; its pid file lets `stop` end exactly it.
    (
      cd "$REPO"
      export PREFECT_HOME="$HOME_DIR" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_API_URL="$URL/api" \
             PREFECT_UI_API_URL="$URL/api" PREFECT_SERVER_API_HOST="$HOST" PREFECT_SERVER_API_PORT="$PORT"
      setsid nohup "$REPO/.venv/bin/prefect" server start --host "$HOST" --port "$PORT" >"$LOG_FILE" 2>&1 7>&- &
      echo $! >"$PID_FILE"
    )
  fi
  local waited=0
  until healthy; do
    if ! our_pid >/dev/null; then
      tail -n 20 "$LOG_FILE" >&2 || true
      die "server exited during start (log: $LOG_FILE)"
    fi
    [ "$waited" -ge "$START_TIMEOUT_S" ] && die "not healthy after ${START_TIMEOUT_S}s (log: $LOG_FILE)"
    sleep 1; waited=$((waited + 1))
  done
  log "ready after ${waited}s: UI $URL, API $URL/api"
}

stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PID_FILE"
    if healthy; then log "a server answers at $URL but was not started by this script; leaving it"; else log "not running"; fi
    return 0
  fi
  log "stopping process group $pid"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  log "stopped"
}

# Starts and stops of one port take turns: two test fixtures starting at once would otherwise
# both find no pid file and start two servers on one port.
take_lock() {
  mkdir -p "$HOME_DIR"
  exec 7>"$HOME_DIR/server-$PORT.lock"
  flock -w "${CURATE_PREFECT_LOCK_TIMEOUT:-300}" 7 || die "another start or stop holds $HOME_DIR/server-$PORT.lock"
}

case "$cmd" in
  start) take_lock; start ;;
  stop) take_lock; stop ;;
  status)
    if healthy; then log "running at $URL"; exit 0; else log "not running at $URL"; exit 1; fi ;;
  *) die "usage: $0 start|stop|status [--port N]" ;;
esac
