"""Prefect overhead on a 10k-question run: the same stages as plain functions vs inside the flow.

Work: ingest (fastText language ID) and blocked detection (one LLM call per prompt, then the rule
refusal classifier) over 10,000 prompts. The LLM is tests/fault_server.py's fixed-latency
endpoint: on 2 shared CPU cores a real model would take hours for 10k calls and its timing noise
would swamp what is measured here, while a fixed latency keeps the work the same in both runs
and realistic in shape (I/O-bound LLM calls plus per-row CPU work).

Both sides get an empty workspace and LLM cache, the same config and the same in-flight bound
(plain: one call of the stage with `max_concurrency` requests in flight; flow: shards of
`--shard-size` run one at a time with the same `max_concurrency`), so the difference is Prefect:
flow and task runs, state reports to the server, the LLM concurrency slot, shard checkpoints.

    uv run python bench/prefect_overhead.py [--questions 10000] [--latency 0.05] [--concurrency 16]

Runs against the Prefect server at PREFECT_API_URL or 127.0.0.1:4200 when one answers, else
against Prefect's embedded test server (its start-up is reported separately, not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("CURATE_PROGRESS", "0")

REFUSAL = "I'm sorry, but I can't help with that request."


def prompts(n: int) -> list[str]:
    base = [
        line.strip()
        for name in ("censored.txt", "uncensored.txt", "other.txt")
        for line in (REPO / "data" / "deccp" / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return [f"{base[i % len(base)]} (case {i // len(base)})" for i in range(n)]


def write_config(root: Path, seeds: Path, base_url: str, args: argparse.Namespace) -> Path:
    path = root / "curate.toml"
    path.write_text(
        f'workspace = "{root / "ws"}"\nlanguages = ["en"]\n'
        f'[llm]\nbase_url = "{base_url}"\nmax_concurrency = {args.concurrency}\nmax_retries = 1\n'
        f'[stages.orchestrate]\nseeds = ["{seeds}"]\nshard_size = {args.shard_size}\nmax_workers = 1\nllm_slots = 1\n',
        encoding="utf-8",
    )
    return path


def run_plain(config_path: Path) -> float:
    """The same two stages through the runner, without Prefect."""
    from curate.config import load_config
    from curate.orchestrate import orchestration_config
    from curate.pipeline import stage
    from curate.runner import Services, prepare, run_call
    from curate.workspace import Workspace

    started = time.perf_counter()
    cfg = load_config(config_path)
    ws = Workspace(cfg.workspace_path)
    sources = [Path(p) for p in orchestration_config(cfg).seeds]
    with ws.locked(), Services(ws, cfg) as services:
        for name in ("ingest", "blocked"):
            call, _ = prepare(stage(name), cfg, ws, services, have=ws.has_table, sources=sources)
            run_call(ws, call)
    return time.perf_counter() - started


def run_flow(config_path: Path) -> float:
    from flows.curation import curation_flow

    started = time.perf_counter()
    summaries = curation_flow(str(config_path), until="blocked")
    elapsed = time.perf_counter() - started
    assert [s["stage"] for s in summaries] == ["ingest", "blocked"] and not any(s["skipped"] for s in summaries)
    return elapsed


@contextlib.contextmanager
def prefect_api(api_url: str | None):
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = api_url or os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"
    try:
        up = httpx.get(f"{url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        up = False
    if up:
        with temporary_settings({PREFECT_API_URL: url}):
            yield f"server {url}"
        return
    from prefect.testing.utilities import prefect_test_harness

    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        yield f"embedded test server (start-up {time.perf_counter() - started:.1f}s, not counted)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05, help="Seconds per LLM reply.")
    parser.add_argument("--concurrency", type=int, default=16, help="LLM requests in flight.")
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=4, help="Rounds; plain and flow alternate order.")
    parser.add_argument("--api-url", default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    from tests.fault_server import FaultConfig, FaultServer

    results: dict[str, list[float]] = {"plain": [], "flow": []}
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as tmp, FaultServer(
        FaultConfig(latency_s=args.latency, reply=REFUSAL)
    ) as llm, prefect_api(args.api_url) as where:
        seeds = Path(tmp) / "prompts.txt"
        seeds.write_text("\n".join(prompts(args.questions)) + "\n", encoding="utf-8")
        for round_ in range(args.repeat):
            order = ("plain", "flow") if round_ % 2 == 0 else ("flow", "plain")
            for kind in order:
                root = Path(tmp) / f"{kind}-{round_}"
                root.mkdir()
                config = write_config(root, seeds, llm.base_url, args)
                seconds = run_plain(config) if kind == "plain" else run_flow(config)
                results[kind].append(seconds)
                print(f"round {round_ + 1} {kind:5s} {seconds:7.2f}s", flush=True)
        requests = llm.stats()["requests"]

    plain, flow = statistics.median(results["plain"]), statistics.median(results["flow"])
    summary = {
        "questions": args.questions, "latency_s": args.latency, "concurrency": args.concurrency,
        "shard_size": args.shard_size, "shards": -(-args.questions // args.shard_size), "prefect": where,
        "plain_s": [round(x, 2) for x in results["plain"]], "flow_s": [round(x, 2) for x in results["flow"]],
        "median_plain_s": round(plain, 2), "median_flow_s": round(flow, 2),
        "overhead_pct_of_medians": round(100 * (flow - plain) / plain, 1),
        "overhead_pct_of_best": round(100 * (min(results["flow"]) - min(results["plain"])) / min(results["plain"]), 1),
        "llm_requests": requests,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
