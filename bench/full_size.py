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

The `release` workspace stage before the commit (the join of candidates, reviews, questions and
keywords into release rows), on a synthetic workspace of N candidates (bench/release_workspace.py:
~4 KB each, 1-3 reviews of every 50th, a draft so that every ok candidate is released):
- `stage_generate`: writes that workspace (not timed as a step of curate's);
- `stage`: the stage as `release create --draft` runs it (curate.release.assemble: facts, decide,
  texts joined back bucket by bucket);
- `stage_raw`: polars alone doing the same join lazily (votes per candidate, questions, keywords,
  row ids, sorted by row_id, sunk to zstd Parquet); killed if it passes --raw-cap-gb;
- `stage_memory` (only with --in-memory): the same stage with the candidates read whole, as before.

    nice -n 10 uv run python bench/full_size.py --rows 200000 --steps stage_generate,stage,stage_raw,stage_memory
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.release_workspace

from bench.release_workspace import write_workspace  # noqa: E402
from curate.records import ReleaseRow, conform  # noqa: E402

STEPS = ("generate", "create", "export", "verify", "raw_write", "raw_parquet", "raw_read", "raw_export",
         "stage_generate", "stage", "stage_raw")
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
    elif step.startswith("stage"):
        return stage_step(step, work, rows)
    return {}


def stage_step(step: str, work: Path, rows: int) -> dict:
    from curate.config import load_config, stage_config
    from curate.release.config import ReleaseBuild
    from curate.release.create import release_config, release_stage, run_release_stage, stage_inputs
    from curate.review.config import ReviewConfig, decision_rule
    from curate.workspace import Workspace

    ws_dir = work / "stage_ws"
    if step == "stage_generate":
        write_workspace(ws_dir, rows, review_every=50)
        return {"candidates_gb": round(Workspace(ws_dir).table_path("answers", "candidates").stat().st_size / 1e9, 2)}
    config = work / "stage.toml"
    config.write_text(f'workspace = "{ws_dir}"\n\n[stages.release]\nstore = "{work / "stage_store"}"\n', encoding="utf-8")
    cfg = load_config(config)
    rcfg = release_config(cfg).model_copy(update={"include_pending": True})
    build = ReleaseBuild(release=rcfg, rule=decision_rule(cfg))
    ws = Workspace(ws_dir)
    if step == "stage":
        inputs, gate = stage_inputs(ws, rcfg, stage_config(cfg, "review", ReviewConfig).routing)
        with ws.locked():
            result = run_release_stage(ws, inputs, build, gate, force=True)
        return {"released": result.rows["rows"], "excluded": result.rows["excluded"]}
    if step == "stage_memory":
        out = release_stage(ws.read("review/reviews"), ws.read("answers/candidates"), build,
                            questions=ws.read("questions/questions"), keywords=ws.read("keywords/keywords"))
        return {"released": out.tables["rows"].height}
    # stage_raw: polars alone, the same join, lazily.
    from curate.release.rows import row_id_for_candidate

    votes = pl.scan_parquet(ws.table_path("review", "reviews")).filter(pl.col("status") == "submitted").group_by(
        "candidate_id").agg(n_reviews=pl.len(), accept_votes=pl.col("accept").sum(), reject_votes=(~pl.col("accept")).sum())
    questions = pl.scan_parquet(ws.table_path("questions", "questions")).select("question_id", "keyword_id", "topic")
    keywords = pl.scan_parquet(ws.table_path("keywords", "keywords")).select("keyword_id", "seed_ids")
    (pl.scan_parquet(ws.table_path("answers", "candidates")).filter(pl.col("status") == "ok")
     .join(votes, on="candidate_id", how="left").filter(~(pl.col("reject_votes").fill_null(0) > pl.col("accept_votes").fill_null(0)))
     .join(questions, on="question_id", how="left").join(keywords, on="keyword_id", how="left")
     .with_columns(row_id=pl.col("candidate_id").map_elements(row_id_for_candidate, return_dtype=pl.String))
     .sort("row_id").sink_parquet(work / "stage_raw.parquet", compression="zstd"))
    return {"released": pl.scan_parquet(work / "stage_raw.parquet").select(pl.len()).collect().item()}


def status_gb(pid: int | str, field: str = "VmHWM") -> float:
    """A memory field of /proc/<pid>/status in GB ("self" for this process; 0.0 once the process is
    gone). VmHWM is the process's own peak RSS since its exec. Not ru_maxrss: Linux carries the
    parent's high-water mark over fork and exec, so a child's ru_maxrss never reads below what the
    parent held when it started the child."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 1024**2  # kB
    except (OSError, StopIteration):
        return 0.0


def child_result(started: float, extra: dict) -> str:
    """The last line a `--child` step prints: its wall time since `started`, its own peak RSS
    (VmHWM, read as it ends: no sample can miss its last moments) and the step's own figures."""
    return json.dumps({"step_s": round(time.perf_counter() - started, 2), **extra,
                       "peak_rss_gb": round(status_gb("self"), 3)}, default=str)


def measure(step: str, work: Path, rows: int, cap_gb: float | None = None, script: str = __file__) -> dict:
    """Run one step in a child process (`script --child STEP`, printing `child_result`): the step's
    wall time (imports excluded, they are the child's start-up), the child's own peak RSS (VmHWM,
    imports included: sampled every 50 ms while it runs, and the child's own reading as it ends) and
    rows/s over the step. A child past `cap_gb` of RSS is killed (the machine is shared) and
    reported as such, with the peak sampled until then."""
    child = subprocess.Popen([sys.executable, script, "--child", step, "--work", str(work), "--rows", str(rows)],
                             stdout=subprocess.PIPE)
    started, killed, peak = time.perf_counter(), False, 0.0
    while True:
        peak = max(peak, status_gb(child.pid))  # Popen returns after the exec: this is the child's own
        pid, status, _ = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if cap_gb and not killed and status_gb(child.pid, "VmRSS") > cap_gb:
            child.kill()
            killed = True
        time.sleep(0.05)
    out = child.stdout.read().decode() if child.stdout else ""
    if killed:
        return {"step": step, "killed_over_gb": cap_gb, "peak_rss_gb": round(peak, 3),
                "step_s": round(time.perf_counter() - started, 1)}
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status})")
    extra = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    peak = max(peak, extra.pop("peak_rss_gb", 0.0))
    return {"step": step, "peak_rss_gb": round(peak, 3), "rows_per_s": round(rows / max(extra["step_s"], 1e-3)), **extra}


def report_step(step: str, work: Path, rows: int, cap_gb: float | None, script: str) -> dict:
    """`measure` one step, with the load average before and after; printed as one JSON line."""
    load = os.getloadavg()
    result = {"candidates": rows, **measure(step, work, rows, cap_gb, script=script), "load_before": load,
              "load_after": os.getloadavg()}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_400_000)
    parser.add_argument("--child")
    parser.add_argument("--work")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps (stage_memory: not by default)")
    parser.add_argument("--raw-cap-gb", type=float, default=10.0, help="kill stage_raw / stage_memory past this RSS")
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        print(child_result(start, run_step(args.child, Path(args.work), args.rows)))
        return
    # --work: reuse a kept folder (e.g. a generated workspace) and keep it.
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="curate-full-size-"))
    args.keep = args.keep or bool(args.work)
    print(f"rows={args.rows} work={work} load={os.getloadavg()}", flush=True)
    results = []
    for step in args.steps.split(","):
        capped = args.raw_cap_gb if step in ("stage_raw", "stage_memory") else None
        results.append(measure(step, work, args.rows, capped))
        print(json.dumps(results[-1]), flush=True)
    total = sum(r["step_s"] for r in results if r["step"] in ("create", "export", "verify"))
    print(f"create+export+verify: {total:.1f} s; load after: {os.getloadavg()}")
    if (work / "rows.parquet").exists():
        print(f"input Parquet: {(work / 'rows.parquet').stat().st_size / 1e9:.2f} GB")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
