#!/usr/bin/env bash
# The README's main command: run the whole job end to end on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
uv run --locked curate ingest data/deccp/censored.txt
uv run --locked curate status
