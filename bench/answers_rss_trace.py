"""Where the answers stage's memory goes over time: RSS every second against the shards finished,
then the peak of each table's streamed merge (write) on its own.

    nice -n 10 uv run python bench/answers_rss_trace.py --translations 12500 [--latency 0.2 --shard-size 125]

bench/full_flow.py gives one figure per step (the peak); this one says *when* it is reached. The
stand-in endpoint (bench/full_flow.py's fault injector and replies, fixed latency, no faults) runs
in a process of its own, the synthetic translations are written by full_flow's `flow_generate`
child, and the answers stage runs here, as `curate answers` runs it (`execute_stage`: shards on
`llm_slots` threads, checkpointed, streamed merge). A thread samples this process's VmRSS and the
checkpointed shards every second. Each table write is wrapped to reset the peak first
(`/proc/self/clear_refs`), so the merge's own peak is printed apart from the shards'. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.full_flow import replies, run_flow_stage, write_config  # noqa: E402


def status_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def serve(latency: float) -> None:
    """The stand-in endpoint, in this (child) process; prints its port."""
    from tests.fault_server import FaultConfig, FaultServer

    server = FaultServer(FaultConfig(latency_s=latency, keep_bodies=False, **replies()))

    async def run() -> None:
        await server.serve()
        print(f"PORT {server.port}", flush=True)
        while True:  # the injector keeps every request body; drop them so this process stays small
            await asyncio.sleep(5)
            server.bodies.clear(), server.arrivals.clear(), server.attempts.clear(), server.completed.clear()

    asyncio.run(run())


def trace_writes() -> list[dict]:
    """Wrap the workspace's table write so each reports its own peak RSS (the merge, per table)."""
    import curate.workspace as workspace

    writes: list[dict] = []
    write = workspace.atomic_write_parquet

    def traced(path: Path, df):  # noqa: ANN001 - as atomic_write_parquet
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before, started = status_mb(), time.monotonic()
        write(path, df)
        if ".shards" not in str(path):  # checkpoints are written as shards land; the merge is the rest
            writes.append({"table": path.name, "rss_before_mb": round(before), "peak_mb": round(status_mb("VmHWM")),
                           "s": round(time.monotonic() - started, 2)})

    workspace.atomic_write_parquet = traced
    return writes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--translations", type=int, default=2500)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--shard-size", type=int, default=125)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.latency)
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory(prefix="curate-answers-rss-") as tmp:
            work = Path(tmp)
            write_config(work, f"http://127.0.0.1:{port}/v1", 256, args.shard_size, 4, 4)
            subprocess.run([sys.executable, str(REPO / "bench" / "full_flow.py"), "--child", "flow_generate",
                            "--work", str(work), "--rows", str(args.translations)], check=True, stdout=subprocess.DEVNULL)
            writes = trace_writes()
            samples: list[tuple[float, int, float]] = []
            stop = threading.Event()

            def sample() -> None:
                started = time.monotonic()
                while not stop.wait(1.0):
                    done = sum(1 for _ in (work / "ws").glob("stages/answers/.shards/*/*/done.json"))
                    samples.append((round(time.monotonic() - started, 1), done, round(status_mb(), 1)))

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            out = run_flow_stage("answers", work)
            stop.set()
            thread.join()
    finally:
        server.kill()
    last = max((done for _, done, _ in samples), default=0)
    shard_phase = [rss for _, done, rss in samples if 0 < done < last]  # from the first shard to the merge
    print(json.dumps({"translations": args.translations, "shard_size": args.shard_size, "rows": out["rows"],
                      "step_s": round(out["t_end"] - out["t_start"], 1),
                      "shard_phase_rss_mb": {"min": min(shard_phase, default=None), "max": max(shard_phase, default=None)},
                      "merge_writes": writes}))
    print("seconds, shards checkpointed, RSS MB")
    for row in samples[:: max(1, len(samples) // 30)]:
        print(*row, sep=", ")


if __name__ == "__main__":
    main()
