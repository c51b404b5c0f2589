#!/usr/bin/env bash
# Run every benchmark under bench/; figures and machine notes go to docs/benchmarks.md.
# Benchmarks are slow and noisy by nature: run them on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
mkdir -p bench/results
run() { echo "== $*"; uv run --locked python "$@"; }
run bench/llm_throughput.py --latency 2.0 --rounds 4
run bench/dedupe_bench.py all --json bench/results/dedupe.json
run bench/curation.py --seeds 20000
run bench/refusal_rules.py --rows 20000
run bench/release.py --rows 100000
run bench/eval_bootstrap.py
run bench/prefect_overhead.py --questions 10000
bash scripts/argilla-stack.sh start
run bench/argilla_bench.py --records 3000
echo "record the figures in docs/benchmarks.md"
