"""Release store benchmark: commit / read / verify / diff / HF export of N rows, against raw
polars+deltalake doing the same I/O in the same run.

    uv run python bench/release.py --rows 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl

from curate.records import ReleaseRow, conform
from curate.release import ReleaseStore, diff_releases, export_hf


def synthetic_rows(n: int, edit_every: int = 0) -> pl.DataFrame:
    i = pl.int_range(n, eager=True)
    answer = pl.concat_str(pl.lit("answer "), i.cast(pl.String), pl.lit(" " + "lorem ipsum " * 40))
    if edit_every:
        answer = pl.when(i % edit_every == 0).then(pl.lit("edited")).otherwise(answer)
    df = pl.DataFrame({"i": i}).select(
        row_id=pl.format("row-{}", pl.col("i")),
        prompt=pl.format("prompt {} about a blocked topic", pl.col("i")),
        language=pl.lit(["en", "zh", "es", "fr"]).list.get(pl.col("i") % 4),
        topic=pl.format("topic-{}", pl.col("i") % 50),
        reasoning=pl.concat_str(pl.lit("reasoning " * 60), pl.col("i").cast(pl.String)),
        answer=answer if not edit_every else answer,
        candidate_id=pl.format("cand-{}", pl.col("i")),
        seed_ids=pl.concat_list(pl.format("seed-{}", pl.col("i") % 997)),
    )
    return conform(df, ReleaseRow)


def timed(label: str, fn, results: dict) -> object:
    start = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    v1, v2 = synthetic_rows(args.rows), synthetic_rows(args.rows, edit_every=100)
    r: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ReleaseStore(root / "store")
        timed("curate commit v1", lambda: store.commit(v1, {"config_hash": "a", "config": {"test_fraction": 0.1}}), r)
        timed("curate commit v2", lambda: store.commit(v2, {"config_hash": "a", "config": {"test_fraction": 0.1}}), r)
        timed("curate read v1", lambda: store.read(1), r)
        timed("curate verify v1", lambda: store.verify(1), r)
        d = timed("curate diff v1 v2", lambda: diff_releases(store.read(1), store.read(2), 1, 2), r)
        timed("curate export hf", lambda: export_hf(store, 2, root / "hf", "messages"), r)
        size_mb = sum(f["size"] for f in store.manifest(1)["files"]) / 1e6

        raw = str(root / "raw")
        timed("raw write_delta v1", lambda: v1.write_delta(raw, mode="overwrite"), r)
        timed("raw write_delta v2", lambda: v2.write_delta(raw, mode="overwrite"), r)
        timed("raw read_delta v1", lambda: pl.read_delta(raw, version=0), r)
        timed("raw write_parquet", lambda: v2.write_parquet(root / "raw.parquet"), r)
    print(f"rows={args.rows} changed={d.changed.height} release size={size_mb:.1f} MB")
    for label, seconds in r.items():
        print(f"{label:24s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
