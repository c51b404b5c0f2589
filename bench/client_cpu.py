"""Client CPU per 1,000 LLM requests: curate.llm against the raw libraries, in the same run.

The endpoint is the fault injector (tests/fault_server.py), a stand-in with no faults and a fixed
latency, in its own process: its CPU is read from /proc apart from the clients'. Its replies can
be shaped like the answers stage's (`--reply answers`: 2.5 KB of reasoning in `reasoning_content`
and 1.4 KB of answer, tagged per request, as bench/full_flow.py sends) or a short "ok".

Each client runs in a child process of its own (a fresh interpreter: no warm caches or shared
pools between clients), sends a few warm-up requests, then `--requests` distinct requests at
`--concurrency`. Its CPU is the child's own user + system time over that window
(`resource.getrusage(RUSAGE_SELF)`, every thread), so other jobs on a loaded box slow it down
but barely change it. Clients:

- `httpx2`: raw `httpx2.AsyncClient` (the HTTP client the openai SDK uses; pool of C) posting the
  JSON body and `json.loads`-ing the reply: the floor for any client built on it;
- `httpx` (not run by default): the same with `httpx` 0.28, whose pool scans every connection on
  each request (about 4x the CPU of the others at C = 256);
- `openai`: raw `openai.AsyncOpenAI` (pool of C, no retries) with a semaphore of C;
- `curate`: `curate.llm.complete_frame`, no cache;
- `curate+cache`: the same with the workspace's SQLite cache (every call committed);
- `answers`: `curate.llm.sampling.sample_candidates` with the cache and a per-candidate seed, the
  answers stage's path (K = 4 candidates per question).

`--before DIR` also runs each curate client from another copy of the package (an older commit's
`curate/`, unpacked into DIR), as "CLIENT (before)", right after the same client from this tree.
`--repeats` runs the whole set again, interleaved, so drifting load hits every client alike. The
load average (`os.getloadavg()`) is recorded before and after. `--profile CLIENT` runs that one
client under py-spy (`uvx py-spy`, every thread, native frames off) and writes a flame text file.

    uv run python bench/client_cpu.py [--requests 4096] [--concurrency 256] [--latency 0.5] [--reply answers]
        [--clients httpx2,openai,curate,curate+cache,answers] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))
if "--src" in sys.argv:  # a child measuring another copy of curate (--before): it goes first
    sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1])

CLIENTS = ("httpx2", "openai", "curate", "curate+cache", "answers", "httpx")
RAW = ("httpx2", "openai", "httpx")
BEFORE = " (before)"
TEMPERATURE, TOP_P, MAX_TOKENS = 0.6, 0.95, 4096
# The answers stage's reply shape (bench/full_flow.py): reasoning in its own field, then the answer.
REASONING = ("Let me think about what the question asks and what is known about it. " * 36)[:2500]
ANSWER = ("The events are documented in several independent sources; here is a summary. {request} " * 16)[:1400]
QUESTION = "What happened in the square in early June of that year, and how is it remembered today? Question {i}."


def replies(kind: str) -> dict:
    if kind == "answers":
        return {"plan": [f"reasoning:{REASONING}|{ANSWER}"] * 3}
    return {"plan": [], "reply": "ok {request}"}


def cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


# ----------------------------------------------------------------------------------------------
# the clients (each runs in a child process)
# ----------------------------------------------------------------------------------------------


def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag}] " + QUESTION.format(i=i) for i in range(n)]


async def raw_httpx(base_url: str, texts: list[str], concurrency: int, module: str) -> int:
    httpx = importlib.import_module(module)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120,
                                 headers={"Authorization": "Bearer none"}) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int, text: str) -> bool:
            body = {"model": "bench", "messages": [{"role": "user", "content": text}], "temperature": TEMPERATURE,
                    "top_p": TOP_P, "max_tokens": MAX_TOKENS, "seed": i % 4}
            async with slots:
                r = await client.post("/chat/completions", content=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})
                message = json.loads(r.content)["choices"][0]["message"]
                return bool(message.get("content"))

        return sum(await asyncio.gather(*(one(i, t) for i, t in enumerate(texts))))


async def raw_openai(base_url: str, texts: list[str], concurrency: int) -> int:
    import openai

    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120,
                                  http_client=openai.DefaultAsyncHttpxClient(limits=limits)) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int, text: str) -> bool:
            async with slots:
                r = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": text}],
                                                         temperature=TEMPERATURE, top_p=TOP_P, max_tokens=MAX_TOKENS,
                                                         seed=i % 4)
                return bool(r.choices[0].message.content)

        return sum(await asyncio.gather(*(one(i, t) for i, t in enumerate(texts))))


def run_client(kind: str, base_url: str, texts: list[str], concurrency: int, workdir: Path) -> int:
    if kind in ("httpx", "httpx2"):
        return asyncio.run(raw_httpx(base_url, texts, concurrency, kind))
    if kind == "openai":
        return asyncio.run(raw_openai(base_url, texts, concurrency))

    import polars as pl

    from curate.config import EndpointConfig
    from curate.llm import LLMCache, complete_frame
    from curate.llm.sampling import sample_candidates

    endpoint = EndpointConfig(base_url=base_url, model="bench", max_concurrency=concurrency, timeout_s=120,
                              temperature=TEMPERATURE, top_p=TOP_P, max_tokens=MAX_TOKENS)
    cache = None if kind == "curate" else LLMCache(workdir / f"cache-{len(texts)}.sqlite")
    if kind == "answers":
        k = 4
        requests = pl.DataFrame({
            "candidate_id": [f"c{i}" for i in range(len(texts))],
            "candidate_index": [i % k for i in range(len(texts))],
            "prompt": [texts[i - i % k] for i in range(len(texts))],  # K candidates of one question
        })
        raw, _ = sample_candidates(requests, endpoint, stage="answers", overrides={"seed": 0}, cache=cache)
        return int((raw["status"] == "ok").sum())
    frame = pl.DataFrame({"request_id": [f"r{i}" for i in range(len(texts))], "prompt": texts})
    out = complete_frame(frame, endpoint, stage="bench", cache=cache, overrides={"seed": 0})
    return int((out["status"] == "ok").sum())


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_client(args.child, args.base_url, prompts(16, f"warmup-{args.tag}"), 16, Path(tmp))  # imports, first connections
        texts = prompts(args.requests, args.tag)
        cpu, wall = cpu_seconds(), time.perf_counter()
        ok = run_client(args.child, args.base_url, texts, args.concurrency, Path(tmp))
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    curate = sys.modules.get("curate")
    print("RESULT " + json.dumps({"ok": ok, "wall_s": wall, "cpu_s": cpu,
                                  "curate_from": curate and str(Path(curate.__file__).parent.parent)}), flush=True)


# ----------------------------------------------------------------------------------------------
# the parent: server, children, table
# ----------------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """User + system seconds of another process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(kind: str, base_url: str, args: argparse.Namespace, tag: str, profile: Path | None) -> dict:
    """Run one client in a child process; its RESULT line (ok, wall_s, cpu_s, curate_from)."""
    kind, before = kind.removesuffix(BEFORE), kind.endswith(BEFORE)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--base-url", base_url,
           "--requests", str(args.requests), "--concurrency", str(args.concurrency), "--tag", tag]
    if before:
        cmd += ["--src", str(args.before)]
    if profile is not None:
        cmd = [shutil.which("uvx") or "uvx", "py-spy", "record", "--format", "raw", "--threads", "--rate", "200",
               "-o", str(profile), "--", *cmd]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client {kind} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--reply", choices=("answers", "short"), default="answers")
    parser.add_argument("--clients", default=",".join(CLIENTS[:-1]))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", choices=CLIENTS, help="run this client once under py-spy instead")
    parser.add_argument("--profile-out", type=Path, default=Path("client_cpu.pyspy.txt"))
    parser.add_argument("--before", type=Path, help="a folder holding another copy of the curate package (e.g. from "
                        "`git archive REV curate | tar -x -C DIR`): its curate clients run too, as 'CLIENT (before)'")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    # Imported here, not at the top: it imports curate from this tree, and a --before child must not.
    from llm_throughput import server_call, start_server

    load_before = os.getloadavg()
    server, base_url = start_server(args.latency)
    rows = []
    try:
        server_call_json(base_url, "/config", replies(args.reply))
        kinds = [variant for kind in args.clients.split(",")
                 for variant in ([kind, kind + BEFORE] if args.before and kind not in RAW else [kind])]
        plan = [(args.profile, args.profile_out)] if args.profile else \
            [(kind, None) for _ in range(args.repeats) for kind in kinds]
        for i, (kind, profile) in enumerate(plan):
            server_call(base_url, "/reset", "POST")
            server_cpu = process_cpu(server.pid)
            load = os.getloadavg()[0]
            got = run_child(kind, base_url, args, f"{kind}-{i}", profile)
            stats = server_call(base_url, "/stats")
            row = {"client": kind, "curate_from": got["curate_from"], "requests": args.requests, "ok": got["ok"], "wall_s": round(got["wall_s"], 2),
                   "req_per_s": round(args.requests / got["wall_s"], 1),
                   "utilization": round(args.requests / got["wall_s"] / (args.concurrency / args.latency), 3),
                   "cpu_s_per_1000": round(got["cpu_s"] / args.requests * 1000, 3),
                   "server_cpu_s_per_1000": round((process_cpu(server.pid) - server_cpu) / stats["requests"] * 1000, 3),
                   "server_max_in_flight": stats["max_in_flight"], "load_1min_at_start": load}
            rows.append(row)
            print(row, flush=True)
    finally:
        server.terminate()
        server.wait()
    report = {"machine": f"{platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}",
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "latency_s": args.latency,
              "concurrency": args.concurrency, "reply": args.reply, "rows": rows}
    print(f"\nload average before {load_before}, after {report['load_average_after']}")
    print("| client | requests | req/s | utilization | client CPU s / 1,000 req | x raw openai | server CPU s / 1,000 req | load (1 min) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    raw = [r["cpu_s_per_1000"] for r in rows if r["client"] == "openai"]
    base = sum(raw) / len(raw) if raw else None
    for r in rows:
        ratio = f"{r['cpu_s_per_1000'] / base:.2f}" if base else ""
        print(f"| {r['client']} | {r['requests']} | {r['req_per_s']} | {r['utilization']:.1%} | {r['cpu_s_per_1000']} | "
              f"{ratio} | {r['server_cpu_s_per_1000']} | {r['load_1min_at_start']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def server_call_json(base_url: str, path: str, payload: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(base_url + path, method="POST", data=json.dumps(payload).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


if __name__ == "__main__":
    main()
