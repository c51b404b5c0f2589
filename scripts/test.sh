#!/usr/bin/env bash
# The README's test command: install everything, then run the whole suite (slow tests too).
# Services the tests need are started by the test fixtures through the scripts in scripts/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
set +e
# --durations: every CI log names the slowest tests, so the suite's time can be followed (docs/benchmarks.md).
uv run --locked pytest --durations=30 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
