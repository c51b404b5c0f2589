#!/usr/bin/env bash
# The README's test command: install everything, then run the whole suite (slow tests too).
# Services the tests need are started by the test fixtures through the scripts in scripts/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
set +e
# --durations: every CI log names the slowest tests, so the suite's time can be followed (docs/benchmarks.md).
# Two worker processes (pytest-xdist): much of a test's time is spent waiting on the LLM server, Argilla,
# Prefect or a child process, so two workers keep both cores busy. Tests that share one service's state run
# on one worker (tests/fixtures/session_services.py). CURATE_TEST_WORKERS=0 runs in one process.
uv run --locked pytest -n "${CURATE_TEST_WORKERS:-2}" --dist loadgroup --durations=30 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
