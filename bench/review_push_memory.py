"""Peak RSS of the review push alone (`push_workspace`) over a synthetic judged workspace.

The workspace is bench/release_workspace.py's (K = 4 candidates of ~4 KB per translation) plus a
synthetic judge/judgments table: the best of K is candidate 0; its satisfaction is 4 (the policy
accepts it, an audit share goes to people), 2 for every 10th translation (near the threshold: people)
and missing for every 50th (a failed judgment: people). The push runs in a child process sending to
bench/full_flow.py's `DiscardingArgilla` (a stand-in client that drops the records), so what is
measured is the push's own reading, routing, payloads and ledger.

Besides wall time and peak RSS, the child reports its CPU time (every thread of the process) and
per pushed record: records/s and CPU seconds per 1,000 records. `--baseline DIR` pushes the same
workspace with the code of another checkout first (e.g. `git archive main | tar -x -C DIR`), so a
change is compared with what it replaces in the same run, back to back.

    nice -n 10 uv run python bench/review_push_memory.py --rows 100000 400000
    nice -n 10 uv run python bench/review_push_memory.py --rows 1400000 --reuse /tmp/judge-1.4m
    nice -n 10 uv run python bench/review_push_memory.py --rows 400000 --reuse /tmp/judge-400k --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

# The code under test: this checkout, or the one a --baseline run names (its `curate` and `bench`).
CODE_ENV = "CURATE_BENCH_CODE"
sys.path.insert(0, os.environ.get(CODE_ENV) or str(Path(__file__).resolve().parent.parent))

from bench.full_flow import DiscardingArgilla  # noqa: E402
from bench.full_size import child_result, report_step  # noqa: E402
from bench.release_workspace import write_workspace  # noqa: E402
from curate.review.push import push_workspace  # noqa: E402
from curate.review.routing import RoutingConfig  # noqa: E402
from curate.review.settings import load_review_settings  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

SETTINGS = Path(__file__).resolve().parent.parent / "annotations" / "review.toml"


def judgments_for(ws: Workspace) -> pl.DataFrame:
    df = pl.scan_parquet(ws.table_path("answers", "candidates")).select(
        "candidate_id", "language", "candidate_index", translation=pl.col("translation_id").str.slice(3).cast(pl.Int64)
    ).collect()
    best = pl.col("candidate_index") == 0
    score = (pl.when(pl.col("translation") % 50 == 0).then(None).when(pl.col("translation") % 10 == 0).then(2.0)
             .otherwise(4.0))
    return df.select(
        "candidate_id", "language", topic=pl.lit("tibet"),
        status=pl.when(score.is_null()).then(pl.lit("error")).otherwise(pl.lit("ok")),
        satisfaction=score, satisfaction_min=score.cast(pl.Int64), satisfaction_max=score.cast(pl.Int64),
        satisfaction_spread=pl.when(score.is_not_null()).then(pl.lit(0)),
        harm_disagree=pl.when(score.is_not_null()).then(pl.lit(False)),
        harmful=pl.when(score.is_not_null()).then(pl.lit(False)), harm_votes=pl.when(score.is_not_null()).then(pl.lit(0)),
        refused=pl.lit(False), refusal_kind=pl.lit(None, pl.String), refusal_score=pl.lit(0.0),
        language_match=pl.lit(True), detected_language="language",
        judge_error=pl.when(score.is_null()).then(pl.lit("local: judge_satisfaction: timeout")),
        judges=pl.lit("local=smollm2"), rubrics=pl.lit("judge_satisfaction.j2@abc"),
        best=best, best_score=pl.when(best).then(score).otherwise(score - 1),
    ).unique("candidate_id", keep="first", maintain_order=True)


def child(work: Path) -> dict:
    settings = load_review_settings(SETTINGS)
    client = DiscardingArgilla(settings)
    # Every run is a first push: routed afresh, to an empty ledger (a --reuse folder keeps the last run's).
    shutil.rmtree(work / "ws" / "route", ignore_errors=True)
    for ledger in (work / "ws" / "review").glob("push_ledger.sqlite*"):
        ledger.unlink()
    started, cpu = time.perf_counter(), time.process_time()
    report = push_workspace(Workspace(work / "ws"), client, settings, campaign="bench", workspace="bench",  # type: ignore[arg-type]
                            min_submitted=1, routing=RoutingConfig())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"code": os.environ.get(CODE_ENV) or "this checkout", "step_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "pushed": report.pushed, "records_per_s": round(report.pushed / wall, 1),
            "cpu_s_per_1k_records": round(1000 * cpu / max(report.pushed, 1), 3), "routed": report.routed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--child")
    parser.add_argument("--work")
    parser.add_argument("--generate", type=int)
    parser.add_argument("--baseline", type=Path, help="push each workspace with this checkout's code first, then this one's")
    parser.add_argument("--reuse", type=Path, help="push the workspace DIR/ws as it is (e.g. bench/judge_choose_memory.py's "
                        "--keep folder, whose judge/judgments the choosing stage wrote); one --rows")
    args = parser.parse_args()
    if args.generate:
        ws = write_workspace(Path(args.work) / "ws", args.generate)
        ws.run_stage("judge", lambda: {"judgments": judgments_for(ws)}, force=True)
        return
    if args.child:
        print(child_result(time.perf_counter(), child(Path(args.work))))
        return
    for rows in args.rows:
        work = args.reuse or Path(tempfile.mkdtemp(prefix="push-memory-"))
        try:
            if not args.reuse:
                # Generated in a process of its own, so this parent stays small while the push runs.
                subprocess.run([sys.executable, __file__, "--generate", str(rows), "--work", str(work)], check=True)
            if args.baseline:
                os.environ[CODE_ENV] = str(args.baseline.resolve())
                report_step("review_push", work, rows, 8, __file__)
                os.environ.pop(CODE_ENV)
            report_step("review_push", work, rows, 8, __file__)
        finally:
            if not args.reuse:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
