"""Merging a sharded stage's output: peak memory of the streamed merge against the in-memory one.

A sharded stage (answers) leaves one checkpoint folder per shard. `Workspace.run_stage` then
writes the stage's tables from them. Two ways, each in a child process of its own that reports its
own peak RSS (VmHWM), on the same shard files in the same run:

- `memory`: what map_shards did before: read every shard's frame, `pl.concat` them, write the
  table (plain polars: the raw-library way);
- `stream`: what it does now: a lazy scan of the shard files in input order, `sink_parquet`
  (polars' streaming engine), then counts, summary and error rows read back from the written file;
- `stream_per_file`: the same, but the scan built as it was before answers17: one `scan_parquet`
  per shard file, concatenated (`ShardCheckpoints.scan` now makes one multi-file scan per run of
  files with the same schema). Its peak grows with the number of shard files.

    nice -n 10 uv run python bench/shard_merge.py --rows 200000 --shard-size 2000
    nice -n 10 uv run python bench/shard_merge.py --rows 1400000 --shard-size 2000 --modes stream
    nice -n 10 uv run python bench/shard_merge.py --rows 1400000 --shard-size 500 --modes stream,stream_per_file

Rows are synthetic candidates of realistic size (~3 KB reasoning + ~1 KB answer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.full_size

from bench.full_size import status_gb  # noqa: E402
from curate.shards import ShardCheckpoints  # noqa: E402
from curate.workspace import StageOutput, Workspace  # noqa: E402

LANGUAGES = ["en", "zh", "es", "fr", "de", "ja", "ko", "ru", "ar", "vi"]


def text_pool(seed: int, n: int, size: int) -> list[str]:
    """n word-like texts of `size` characters (varied, so compression sees text, not one string)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
    return [letters[rng.integers(0, len(letters), size)].tobytes().decode() for _ in range(n)]


def make_shards(folder: Path, rows: int, shard_size: int) -> ShardCheckpoints:
    checkpoints = ShardCheckpoints(folder / "stages" / "answers" / ".shards" / f"bench-{shard_size}")
    reasoning, answers = pl.Series(text_pool(1, 4000, 3072)), pl.Series(text_pool(2, 4000, 1024))
    for index, start in enumerate(range(0, rows, shard_size)):
        i = pl.int_range(start, min(rows, start + shard_size), eager=True)
        shard = pl.DataFrame({"i": i}).select(
            candidate_id=pl.format("ca-{}", pl.col("i")), translation_id=pl.format("tr-{}", pl.col("i") // 4),
            language=pl.lit(pl.Series(LANGUAGES)).gather(pl.col("i") % len(LANGUAGES)),
            # Two pool pieces per text: every row distinct, as real answers are (no dictionary pages).
            reasoning=pl.lit(reasoning).gather((pl.col("i") * 7919) % len(reasoning)).str.slice(0, 2048)
            + pl.lit(answers).gather((pl.col("i") + pl.col("i") // len(answers)) % len(answers)),
            answer=pl.lit(answers).gather((pl.col("i") * 104729) % len(answers)).str.slice(0, 512)
            + pl.lit(reasoning).gather((pl.col("i") + pl.col("i") // len(reasoning)) % len(reasoning)).str.slice(0, 512),
            status=pl.lit("ok"), error=pl.lit(None, pl.String),
        )
        checkpoints.save(index, StageOutput(tables={"candidates": shard}, report={"kept": shard.height}))
    return checkpoints


def merge(mode: str, folder: Path, shard_size: int) -> dict:
    checkpoints = ShardCheckpoints(folder / "stages" / "answers" / ".shards" / f"bench-{shard_size}")
    shards = sorted(int(p.name) for p in checkpoints.folder.iterdir())
    ws = Workspace(folder)

    def stage() -> StageOutput:
        if mode == "stream":
            return StageOutput(tables=checkpoints.scan(shards, ["candidates"]))  # type: ignore[arg-type]
        if mode == "stream_per_file":
            scans = [pl.scan_parquet(checkpoints.table_path(i, "candidates")) for i in shards]
            return StageOutput(tables={"candidates": pl.concat(scans, how="diagonal_relaxed")})  # type: ignore[dict-item]
        frames = [checkpoints.load(i).tables["candidates"] for i in shards]  # type: ignore[union-attr]
        return StageOutput(tables={"candidates": pl.concat(frames, how="diagonal_relaxed")})

    started, cpu = time.perf_counter(), time.process_time()
    result = ws.run_stage("answers", stage, force=True)
    wall = time.perf_counter() - started
    return {"mode": mode, "rows": result.rows["candidates"], "wall_s": round(wall, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
            "peak_rss_mb": round(status_gb("self") * 1024),  # its own (VmHWM), not the parent's carried over
            "bytes_mb": round(result.outputs["candidates"].stat().st_size / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--modes", default="memory,stream",
                        help="memory, stream and/or stream_per_file (memory holds every row)")
    parser.add_argument("--child", choices=["memory", "stream", "stream_per_file"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(merge(args.child, args.folder, args.shard_size)))
        return
    with tempfile.TemporaryDirectory(prefix="shard-merge-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        make_shards(folder, args.rows, args.shard_size)
        print(f"{args.rows} rows in shards of {args.shard_size}: written in {time.perf_counter() - started:.1f} s")
        print("| merge | rows | wall s | CPU s | peak RSS MB | table MB |\n|---|---:|---:|---:|---:|---:|")
        print(f"load average {os.getloadavg()}")
        for mode in args.modes.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--folder", str(folder),
                                  "--shard-size", str(args.shard_size)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {r['mode']} | {r['rows']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} | {r['bytes_mb']} |")
        print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
