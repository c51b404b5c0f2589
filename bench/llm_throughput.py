"""LLM client throughput, client CPU per request, and resume after kill -9.

The endpoint is the fault injector (tests/fault_server.py) with no faults and a fixed latency,
run in its own process so its CPU is not counted as the client's. At each concurrency the same
requests go through (a) curate.llm.complete_frame and (b) the raw openai AsyncOpenAI client with
a semaphore, in the same run. Ideal throughput is concurrency / latency.

    uv run python bench/llm_throughput.py [--latency 0.5] [--rounds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.config import EndpointConfig  # noqa: E402
from curate.llm import LLMCache, complete_frame  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fault_server", "--latency", str(latency)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = int(line.split()[1])
    return proc, f"http://127.0.0.1:{port}/v1"


def server_call(base_url: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(base_url + path, method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def frame(n: int, tag: str) -> pl.DataFrame:
    return pl.DataFrame({"request_id": [f"{tag}-{i}" for i in range(n)], "prompt": [f"{tag} request {i}" for i in range(n)]})


def run_ours(base_url: str, df: pl.DataFrame, concurrency: int, cache: LLMCache | None) -> tuple[float, float, int]:
    ep = EndpointConfig(base_url=base_url, model="bench", max_concurrency=concurrency, timeout_s=60, max_tokens=16)
    cpu, wall = time.process_time(), time.perf_counter()
    out = complete_frame(df, ep, stage="bench", cache=cache)
    return time.perf_counter() - wall, time.process_time() - cpu, int((out["status"] == "ok").sum())


def run_raw(base_url: str, df: pl.DataFrame, concurrency: int) -> tuple[float, float, int]:
    async def go() -> int:
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=60,
                                      http_client=openai.DefaultAsyncHttpxClient(limits=limits)) as client:
            slots = asyncio.Semaphore(concurrency)

            async def one(prompt: str) -> bool:
                async with slots:
                    r = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": prompt}],
                                                             temperature=0.6, top_p=0.95, max_tokens=16)
                    return bool(r.choices[0].message.content)

            return sum(await asyncio.gather(*(one(p) for p in df["prompt"])))

    cpu, wall = time.process_time(), time.perf_counter()
    ok = asyncio.run(go())
    return time.perf_counter() - wall, time.process_time() - cpu, ok


def throughput(base_url: str, latency: float, rounds: int, levels: list[int]) -> list[dict]:
    rows = []
    run_raw(base_url, frame(8, "warmup"), 8)  # imports and first connections are not what we measure
    run_ours(base_url, frame(8, "warmup2"), 8, None)
    with tempfile.TemporaryDirectory() as tmp:
        for c in levels:
            n = c * rounds
            ideal = c / latency
            for name, fn in (
                ("raw openai", lambda df: run_raw(base_url, df, c)),
                ("curate.llm", lambda df: run_ours(base_url, df, c, None)),
                ("curate.llm + cache", lambda df: run_ours(base_url, df, c, LLMCache(Path(tmp) / f"c{c}.sqlite"))),
            ):
                wall, cpu, ok = fn(frame(n, f"{name}-{c}"))
                rows.append({"concurrency": c, "client": name, "requests": n, "ok": ok, "wall_s": round(wall, 2),
                             "req_per_s": round(n / wall, 1), "ideal_req_per_s": round(ideal, 1),
                             "ratio_of_ideal": round(n / wall / ideal, 3), "cpu_ms_per_req": round(cpu / n * 1000, 2)})
                print(rows[-1], flush=True)
    return rows


def resume(base_url: str, n: int, concurrency: int) -> dict:
    """Kill -9 a `curate llm batch` run at about half, rerun it, and count repeats and losses."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs, out = tmp / "requests.jsonl", tmp / "out.parquet"
        frame(n, "resume").write_ndjson(reqs)
        env = {**os.environ, "CURATE__WORKSPACE": str(tmp / "ws"), "CURATE__LLM__BASE_URL": base_url,
               "CURATE__LLM__MODEL": "bench", "CURATE__LLM__MAX_CONCURRENCY": str(concurrency),
               "CURATE_CONFIG": "/nonexistent.toml", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "curate", "llm", "batch", str(reqs), str(out), "--quiet"]
        server_call(base_url, "/reset", "POST")
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        db = tmp / "ws" / "cache" / "llm-cache.sqlite"
        committed = 0
        while proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as conn:
                        committed = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
                except sqlite3.OperationalError:  # created but its tables not yet
                    committed = 0
                if committed >= n // 2:
                    break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(db) as conn:
            done = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        first = server_call(base_url, "/stats")
        server_call(base_url, "/reset", "POST")
        subprocess.run(cmd, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        second = server_call(base_url, "/stats")
        df = pl.read_parquet(out)
        return {
            "requests": n, "concurrency": concurrency, "killed_at_completed": done,
            "completed_by_server_before_kill": first["completed"],
            "in_flight_lost_at_kill": first["completed"] - done,
            "rerun_requests": second["requests"],
            "repeated_completed_calls": second["requests"] - (n - done),
            "rows_out": df.height, "lost_rows": n - df.height, "rows_ok": int((df["status"] == "ok").sum()),
            "rows_from_cache": int(df["cached"].sum()),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--levels", default="1,16,64,256")
    parser.add_argument("--resume-n", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    proc, base_url = start_server(args.latency)
    try:
        rows = throughput(base_url, args.latency, args.rounds, [int(x) for x in args.levels.split(",")])
        server_call(base_url, "/config", "POST")
        resume_row = resume(base_url, args.resume_n, 16)
        print(resume_row, flush=True)
    finally:
        proc.terminate()
    report = {"machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.python_version()}",
              "latency_s": args.latency, "throughput": rows, "resume": resume_row}
    print("\n| concurrency | client | requests | req/s | ideal | ratio | client CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['client']} | {r['requests']} | {r['req_per_s']} | {r['ideal_req_per_s']} | "
              f"{r['ratio_of_ideal']:.1%} | {r['cpu_ms_per_req']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
