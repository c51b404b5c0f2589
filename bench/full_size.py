"""Full-size release benchmark: commit a draft release, export it for the Hub and verify it, at N
rows of realistic size (~4 KB of text per candidate, reasoning included), each step in its own
child process so its peak RSS is its own; against raw deltalake/polars doing the same I/O in the
same run.

    nice -n 10 uv run python bench/full_size.py            # 1.4M rows
    nice -n 10 uv run python bench/full_size.py --rows 200000

Steps:
- `create`: ReleaseStore.commit of the release-rows Parquet file (read in batches), as
  `curate release create --draft` does after its workspace stage: one pass that hashes (content
  hash v2), counts and checks row ids in a thread while it writes zstd Parquet data files, then
  file checksums, the Delta commit and the manifest;
- `export`: export_hf of that draft release (messages format, shards per language);
- `verify`: ReleaseStore.verify (every file's sha256, every row re-hashed);
- raw: write_deltalake of the same rows (streamed, zstd), pyarrow's ParquetWriter of the same rows
  (zstd, what create's write alone costs), a full batch read of that table, and polars' streaming
  scan_delta -> sink_parquet.
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

from curate.records import ReleaseRow, conform

STEPS = ("generate", "create", "export", "verify", "raw_write", "raw_parquet", "raw_read", "raw_export")
GEN_BATCH = 50_000
LANGUAGES = ["en", "zh", "es", "fr", "de", "ja", "ko", "ru", "ar", "vi"]


def _pool(seed: int, n: int, size: int) -> pl.Series:
    """n random chunks of `size` bytes of word-like text (a pool larger than a Parquet page, so
    compression sees text, not one repeated string)."""
    rng = np.random.default_rng(seed)
    words = ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 10))) for _ in range(5000)]
    chunks = []
    for _ in range(n):
        text = " ".join(words[i] for i in rng.integers(0, len(words), size // 4))
        chunks.append(text[:size])
    return pl.Series(chunks)


def generate(rows: int, path: Path) -> None:
    import pyarrow.parquet as pq

    pool = _pool(0, 20_000, 512)
    writer = None
    for start in range(0, rows, GEN_BATCH):
        i = pl.int_range(start, min(rows, start + GEN_BATCH), eager=True)
        pick = lambda k: pl.lit(pool).gather((i * (2 * k + 7919) + k * 104729) % len(pool))  # noqa: E731
        df = pl.DataFrame({"i": i}).select(
            row_id=pl.format("cand-{}", pl.col("i")),
            prompt=pl.concat_str(pl.format("question {}: ", pl.col("i")), pick(0).str.slice(0, 200)),
            language=pl.lit(LANGUAGES).list.get(pl.col("i") % len(LANGUAGES)),
            topic=pl.format("topic-{}", pl.col("i") % 120),
            reasoning=pl.concat_str([pick(k) for k in range(1, 6)], separator=" "),  # ~2.5 KB
            answer=pl.concat_str([pick(k) for k in range(6, 9)], separator=" "),  # ~1.5 KB
            n_reviews=pl.lit(0, pl.Int64),
            source=pl.lit("curate"),
            split=pl.when(pl.col("i") % 10 == 0).then(pl.lit("test")).otherwise(pl.lit("train")),
            candidate_id=pl.format("cand-{}", pl.col("i")),
            question_id=pl.format("q-{}", pl.col("i") // 4),
            seed_ids=pl.concat_list(pl.format("seed-{}", pl.col("i") % 997)),
        )
        table = conform(df, ReleaseRow).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()


def run_step(step: str, work: Path, rows: int) -> dict:
    from curate.release import ReleaseStore, export_hf

    source, store = work / "rows.parquet", ReleaseStore(work / "store")
    if step == "generate":
        generate(rows, source)
    elif step == "create":
        result = store.commit(source, {"config_hash": "bench", "draft": True,
                                                         "config": {"test_fraction": 0.1}}, tags=["draft"])
        return {"bytes": sum(f["size"] for f in result.manifest["files"])}
    elif step == "export":
        export_hf(store, 1, work / "hf", "messages", allow_draft=True)
    elif step == "verify":
        report = store.verify(1)
        assert report.ok, report.problems
    elif step == "raw_write":
        import pyarrow.dataset as ds
        from deltalake import WriterProperties, write_deltalake

        scanner = ds.dataset(source).scanner(batch_size=20_000, batch_readahead=1, fragment_readahead=1)
        write_deltalake(work / "raw", scanner.to_reader(), mode="overwrite",
                        writer_properties=WriterProperties(compression="ZSTD", max_row_group_size=20_000))
    elif step == "raw_parquet":
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        scanner = ds.dataset(source).scanner(batch_size=20_000, batch_readahead=1, fragment_readahead=1)
        with pq.ParquetWriter(work / "raw.parquet", scanner.projected_schema, compression="zstd") as writer:
            for batch in scanner.to_batches():
                writer.write_batch(batch)
    elif step == "raw_read":
        from deltalake import DeltaTable

        n = sum(b.num_rows for b in DeltaTable(str(work / "raw")).to_pyarrow_dataset().to_batches(
            batch_size=20_000, batch_readahead=1, fragment_readahead=1))
        assert n == rows
    elif step == "raw_export":
        pl.scan_delta(str(work / "raw")).sink_parquet(work / "raw_export.parquet", compression="zstd")
    return {}


def measure(step: str, work: Path, rows: int) -> dict:
    """Run one step in a child process: the step's wall time (imports excluded, they are the child's
    start-up), the child's peak RSS (imports included) and rows/s over the step."""
    child = subprocess.Popen([sys.executable, __file__, "--child", step, "--work", str(work), "--rows", str(rows)],
                             stdout=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)  # usage.ru_maxrss: the child's peak RSS in KiB (Linux)
    out = child.stdout.read().decode() if child.stdout else ""
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status})")
    extra = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {"step": step, "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
            "rows_per_s": round(rows / max(extra["step_s"], 1e-3)), **extra}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_400_000)
    parser.add_argument("--child")
    parser.add_argument("--work")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        extra = run_step(args.child, Path(args.work), args.rows)
        print(json.dumps({"step_s": round(time.perf_counter() - start, 1), **extra}))
        return
    work = Path(tempfile.mkdtemp(prefix="curate-full-size-"))
    print(f"rows={args.rows} work={work} load={os.getloadavg()}", flush=True)
    results = []
    for step in STEPS:
        results.append(measure(step, work, args.rows))
        print(json.dumps(results[-1]), flush=True)
    total = sum(r["step_s"] for r in results if r["step"] in ("create", "export", "verify"))
    print(f"create+export+verify: {total:.1f} s; load after: {os.getloadavg()}")
    print(f"input Parquet: {(work / 'rows.parquet').stat().st_size / 1e9:.2f} GB")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
