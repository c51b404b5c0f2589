"""Endpoint utilization with one shared budget over concurrent shards, against the raw openai SDK.

The endpoint is the fault injector (tests/fault_server.py), a stand-in with no faults and a fixed
latency, in its own process. At each concurrency C, in the same run:

- "raw openai": one `openai.AsyncOpenAI` client with a semaphore of C sends all requests (the
  best a single client can do);
- "curate.llm, 4 slots": the same requests cut into shards, run by 4 threads the way the flow's
  threads task runner runs shards (a rolling window: a thread takes the next shard as soon as its
  last one is done), each shard a `complete_frame` call with `max_concurrency = C`, so all of them
  share the endpoint's one budget. The threads hold the process's LLM loop the way `map_shards`
  does, so every shard sends on one loop through one connection pool per endpoint;
- with `--per-shard-pools`, also "pool per shard": the same, but each shard's call opens a client
  (and connection pool) of its own, as before curate.llm.connections (the before/after comparison).

Ideal = C / latency. Utilization = req/s / ideal, shard tails included; "budget's meter" is the
same measured by the client's own budget (slot-seconds / (C x wall time), what a sharded stage
records as `endpoint_utilization`). The server reports the most requests it ever had in flight,
which must not exceed C, and how many TCP connections the clients opened.

    uv run python bench/endpoint_budget.py [--latency 1.0] [--rounds 8] [--levels 16,64,256] [--shards 8] [--per-shard-pools]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from llm_throughput import frame, run_raw, server_call, start_server  # noqa: E402

from curate.config import EndpointConfig  # noqa: E402
from curate.llm import complete_frame, connections  # noqa: E402
from curate.llm.budget import utilization_meter  # noqa: E402

SLOTS = 4


def own_client_per_call(endpoint, secret):
    """Stands in for `connections.shared_client` to measure the old way: no shared client, so each
    call opens its own (a pool per shard)."""
    return None


def run_shared(base_url: str, df: pl.DataFrame, concurrency: int, shards: int,
               per_shard_pools: bool = False) -> tuple[float, float, int, float | None]:
    """(wall s, client CPU s, ok rows, utilization by the budget's own meter)."""
    ep = EndpointConfig(base_url=base_url, model="bench", max_concurrency=concurrency, timeout_s=60, max_tokens=16)
    size = -(-df.height // shards)
    parts = [df.slice(offset, size) for offset in range(0, df.height, size)]
    cpu, wall = time.process_time(), time.perf_counter()
    shared_client = connections.shared_client
    if per_shard_pools:
        connections.shared_client = own_client_per_call
    try:
        with (nullcontext() if per_shard_pools else connections.held()), utilization_meter() as endpoint_use, \
                ThreadPoolExecutor(max_workers=SLOTS) as pool:
            outs = list(pool.map(lambda part: complete_frame(part, ep, stage="bench"), parts))
    finally:
        connections.shared_client = shared_client
    ok = sum(int((out["status"] == "ok").sum()) for out in outs)
    (use,) = endpoint_use().values()
    return time.perf_counter() - wall, time.process_time() - cpu, ok, use["utilization"]


def measure(base_url: str, latency: float, rounds: int, levels: list[int], shards: int, per_shard_pools: bool) -> list[dict]:
    run_raw(base_url, frame(8, "warmup"), 8)  # imports and first connections are not what we measure
    run_shared(base_url, frame(8, "warmup2"), 8, 4)
    rows = []
    for c in levels:
        n = c * rounds
        ideal = c / latency
        clients = [
            ("raw openai", lambda df: (*run_raw(base_url, df, c), None)),
            (f"curate.llm, {SLOTS} slots, {shards} shards", lambda df: run_shared(base_url, df, c, shards)),
        ]
        if per_shard_pools:
            clients.append((f"curate.llm, {SLOTS} slots, {shards} shards, pool per shard",
                            lambda df: run_shared(base_url, df, c, shards, per_shard_pools=True)))
        for name, fn in clients:
            server_call(base_url, "/reset", "POST")
            wall, cpu, ok, metered = fn(frame(n, f"{name}-{c}"))
            stats = server_call(base_url, "/stats")
            peak = stats["max_in_flight"]
            rows.append({"concurrency": c, "client": name, "requests": n, "ok": ok, "wall_s": round(wall, 2),
                         "req_per_s": round(n / wall, 1), "ideal_req_per_s": round(ideal, 1),
                         "utilization": round(n / wall / ideal, 3), "metered_utilization": metered, "server_max_in_flight": peak,
                         "server_connections": stats["connections"] - 1,  # less the /stats request itself
                         "cpu_ms_per_req": round(cpu / n * 1000, 2)})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--levels", default="16,64,256")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard-pools", action="store_true", help="also run shards with a connection pool each (before)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    proc, base_url = start_server(args.latency)
    try:
        rows = measure(base_url, args.latency, args.rounds, [int(x) for x in args.levels.split(",")], args.shards,
                       args.per_shard_pools)
    finally:
        proc.terminate()
    report = {"machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.python_version()}",
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "latency_s": args.latency, "rows": rows}
    print(f"\nload average before {load_before}, after {report['load_average_after']}")
    print("| concurrency | client | requests | req/s | ideal | utilization | budget's meter | server max in flight | connections | client CPU ms/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        metered = "" if r["metered_utilization"] is None else f"{r['metered_utilization']:.1%}"
        print(f"| {r['concurrency']} | {r['client']} | {r['requests']} | {r['req_per_s']} | {r['ideal_req_per_s']} | "
              f"{r['utilization']:.1%} | {metered} | {r['server_max_in_flight']} | {r['server_connections']} | {r['cpu_ms_per_req']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
