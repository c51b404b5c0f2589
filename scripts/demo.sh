#!/usr/bin/env bash
# The README's main command: the whole job end to end, offline, on local services.
#
#   setup -> local LLM server -> local Argilla -> local Prefect server (UI) ->
#   curation flow over the deccp seeds -> records in Argilla -> review sync -> draft release ->
#   Hugging Face-format export of that draft
#
# Idempotent: services already running are reused, and a second run is fast because every stage
# whose inputs and config are unchanged is skipped and every LLM reply is cached.
#
# Knobs (environment): DEMO_SEEDS (seed lines to use, default 12; "all" for the 95),
# DEMO_CONFIG (default demo/curate.toml), DEMO_LLM_MODEL / DEMO_LLM_PORT (qwen0.5b on 8081),
# CURATE_HOME (service installs and data).
set -euo pipefail
cd "$(dirname "$0")/.."

STARTED=$(date +%s)
step() { printf '\n\033[1;36m==> [%3ss] %s\033[0m\n' "$(( $(date +%s) - STARTED ))" "$*"; }

export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false
CONFIG="${DEMO_CONFIG:-demo/curate.toml}"
DEMO_SEEDS="${DEMO_SEEDS:-12}"
# qwen0.5b: the smallest bundled model that writes usable questions (SmolLM2-135M does not).
DEMO_LLM_MODEL="${DEMO_LLM_MODEL:-qwen0.5b}"
DEMO_LLM_PORT="${DEMO_LLM_PORT:-8081}"
export CURATE__LLM__BASE_URL="${CURATE__LLM__BASE_URL:-http://127.0.0.1:$DEMO_LLM_PORT/v1}"
export ARGILLA_API_KEY="${ARGILLA_API_KEY:-argilla.apikey}"
PREFECT_PORT="${PREFECT_SERVER_PORT:-4200}"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"

step "setup (cached after the first run)"
bash scripts/setup.sh

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

step "local LLM server ($DEMO_LLM_MODEL on 127.0.0.1:$DEMO_LLM_PORT)"
# A llama.cpp server busy generating for another client can miss the script's 2 s health check;
# a server that holds the port is then still ours to use.
bash scripts/llm-server.sh start --model "$DEMO_LLM_MODEL" --port "$DEMO_LLM_PORT" \
  || { port_open "$DEMO_LLM_PORT" && echo "LLM server busy but listening on $DEMO_LLM_PORT; using it"; } || exit 1

step "local Argilla stack (127.0.0.1:6900)"
bash scripts/argilla-stack.sh start

step "local Prefect server with UI (127.0.0.1:$PREFECT_PORT)"
bash scripts/prefect-server.sh start --port "$PREFECT_PORT"

WORKSPACE="$(uv run --locked python -c "from curate.config import load_config; print(load_config('$CONFIG').workspace_path.resolve())")"
mkdir -p "$WORKSPACE"
if [ "$DEMO_SEEDS" = "all" ]; then
  SEEDS="data/deccp/censored.txt"
else
  SEEDS="$WORKSPACE/seeds-$DEMO_SEEDS.txt"
  head -n "$DEMO_SEEDS" data/deccp/censored.txt > "$SEEDS.tmp" && mv "$SEEDS.tmp" "$SEEDS"
fi

step "curation flow: ingest -> blocked -> keywords -> questions -> translate -> dedupe -> answers -> review push"
uv run --locked curate run -c "$CONFIG" --seeds "$SEEDS"

CANDIDATES="$(uv run --locked python -c "
from curate.workspace import Workspace
print(Workspace('$WORKSPACE').read('answers/candidates').height)" 2>/dev/null || echo 0)"
DRAFT_VERSION=""
EXPORT=""
if [ "$CANDIDATES" -gt 0 ]; then
  step "review-sync flow: pull responses and agreement"
  uv run --locked curate run -c "$CONFIG" --flow review-sync

  # A draft holds every candidate not rejected, reviewed or not, so the demo always ends with a
  # release to look at; `--flow release` without --draft releases accepted rows only.
  step "release flow: commit a draft release (pending candidates included, tagged \"draft\")"
  uv run --locked curate run -c "$CONFIG" --flow release --draft

  DRAFT_VERSION="$(uv run --locked python -c "
from curate.config import load_config
from curate.release import ReleaseStore, release_config, store_uri
cfg = load_config('$CONFIG'); print(ReleaseStore(store_uri(cfg, release_config(cfg))).resolve('draft'))")"
  EXPORT="$WORKSPACE/exports/draft-v$DRAFT_VERSION-hf"
  if [ -d "$EXPORT" ]; then
    step "export: draft release $DRAFT_VERSION already exported to $EXPORT"
  else
    step "export: draft release $DRAFT_VERSION as a Hugging Face dataset folder"
    uv run --locked curate export hf "$EXPORT" --release "$DRAFT_VERSION" -c "$CONFIG"
  fi
else
  step "no candidate answers survived the filters: nothing to review or release (see: uv run curate status -c $CONFIG)"
fi

RELEASES="$(uv run --locked python -c "
from curate.config import load_config
from curate.release.create import release_config, store_uri
cfg = load_config('$CONFIG'); print(store_uri(cfg, release_config(cfg)))")"
SUMMARY=""
if [ -n "$DRAFT_VERSION" ]; then
  SUMMARY="$(uv run --locked python -c "
from curate.config import load_config
from curate.release import ReleaseStore, release_config, store_uri
cfg = load_config('$CONFIG'); m = ReleaseStore(store_uri(cfg, release_config(cfg))).manifest($DRAFT_VERSION)
langs = ', '.join(f'{k}={v}' for k, v in m['by_language'].items())
print(f\"release {m['version']} (draft): {m['rows']} rows ({langs}), {m['unreviewed_rows']} not yet reviewed\")")"
fi
step "done in $(( $(date +%s) - STARTED ))s"
cat <<EOF

  Review in Argilla     http://127.0.0.1:6900   (annotators: annotator1 / annotator2, password annotate123;
                                                 owner: argilla / 12345678), dataset "demo" in workspace "curate"
  Prefect UI            http://127.0.0.1:$PREFECT_PORT   (flow runs, task runs per stage and shard, schedules)
  Workspace             $WORKSPACE   (uv run curate status -c $CONFIG)
  Release store         $RELEASES   (uv run curate versions list -c $CONFIG)
  Draft release         ${SUMMARY:-none (no candidates)}
  Draft export (HF)     ${EXPORT:-none}   (datasets.load_dataset on this folder)

  After reviewing:      uv run curate run -c $CONFIG --flow review-sync && uv run curate run -c $CONFIG --flow release
                        (accepted rows only; add --draft for another draft with the still-pending ones)
  On a schedule:        uv run curate serve -c $CONFIG      (nightly curation, hourly review sync)
  Stop the services:    bash scripts/prefect-server.sh stop; bash scripts/argilla-stack.sh stop; bash scripts/llm-server.sh stop
EOF
