"""Peak RSS and wall time of the choosing `judge` stage (best of K, preference pairs, the report)
over synthetic judge_score outputs, at full size.

The workspace is bench/release_workspace.py's (K = 4 candidates of ~4 KB per translation, every
97th a filtered refusal) plus what judge_score writes, synthetic but of its shape and types:
- `judge_score/scored`: one row per usable candidate, SCORED_SCHEMA (curate.judge.scoring).
  Satisfaction 0-4 spread evenly over each question x language group (so most groups have a chosen
  answer and siblings a margin below it: many preference pairs), 2% failed calls (null scores, an
  error), 1% harmful, 3% wrong language, refusal scores 0-1;
- `judge_score/scores`: the long table, one row per candidate x metric (satisfaction, harmful) for
  one judge;
- `answers/rejects`: the filtered candidates (status "rejected", reason "refusal") with their texts.
Generated in a process of its own (`--generate`); the stage then runs in a child (bench/full_size.py's
`measure`: its own peak RSS, VmHWM), outputs written through `Workspace.run_stage`:
- `judge`: as the runner runs it, inputs as file paths (the pairs written batch by batch);
- `judge_held`: the candidates given as a lazy scan instead of their file, so the pairs' texts are
  read for the pairs' rows and held whole, as the stage did before (killed past --cap-gb).

    nice -n 10 uv run python bench/judge_choose_memory.py --rows 100000 400000 --steps judge_held,judge
    nice -n 10 uv run python bench/judge_choose_memory.py --rows 1400000 --keep /tmp/judge-1.4m
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.full_size import child_result, report_step  # noqa: E402
from bench.release_workspace import TOPICS, write_workspace  # noqa: E402
from curate.judge.config import JudgeConfig, NamedJudge  # noqa: E402
from curate.judge.scoring import SCORE_SCHEMA, SCORED_SCHEMA  # noqa: E402
from curate.stages.judge import judge_stage  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

CONFIG = JudgeConfig(judges=[NamedJudge(name="local", model="smollm2")])


def scored_for(candidates: pl.LazyFrame) -> pl.LazyFrame:
    """judge_score/scored for the usable candidates (status ok, an answer), lazily."""
    i = pl.col("candidate_id").str.slice(5).cast(pl.Int64)
    roll = (i * 7919 + 13) % 100  # a deterministic per-candidate draw, 0-99
    failed = roll < 2
    sat = pl.when(failed).then(None).otherwise(((i * 3 + i // 4) % 5).cast(pl.Float64))
    return candidates.filter((pl.col("status") == "ok") & pl.col("answer").is_not_null()).select(
        "candidate_id", "translation_id", "question_id", "language",
        topic=pl.lit(pl.Series(TOPICS)).gather(pl.col("question_id").str.slice(2).cast(pl.Int64) % len(TOPICS)),
        model="model", candidate_index="candidate_index",
        status=pl.when(failed).then(pl.lit("error")).otherwise(pl.lit("ok")),
        judge_error=pl.when(failed).then(pl.lit("local: judge_satisfaction: timeout after 120 s")),
        satisfaction=sat, satisfaction_min=sat.cast(pl.Int64), satisfaction_max=sat.cast(pl.Int64),
        satisfaction_spread=pl.when(~failed).then(pl.lit(0, pl.Int64)),
        satisfaction_error=pl.when(failed).then(pl.lit("local: timeout after 120 s")),
        harmful=pl.when(~failed).then(roll == 50), harm_votes=pl.when(~failed).then((roll == 50).cast(pl.Int64)),
        harm_disagree=pl.when(~failed).then(pl.lit(False)), harm_error=pl.lit(None, pl.String),
        refused=roll >= 95, refusal_kind=pl.when(roll >= 95).then(pl.lit("evasion")),
        refusal_score=(roll / 99).round(3), refusal_detector=pl.lit("rules+llm"), refusal_error=pl.lit(None, pl.String),
        language_match=roll % 33 != 7, detected_language="language", language_confidence=pl.lit(0.93),
        answer_units=pl.col("answer").str.len_chars() // 5, reasoning_units=pl.col("reasoning").str.len_chars() // 5,
        repetition=((i % 17) / 100).cast(pl.Float64),
        judges=pl.lit("local=smollm2"), rubrics=pl.lit("judge_harm.j2@5d1c0e2a, judge_satisfaction.j2@9b7f3a11"),
    ).select([pl.col(c).cast(t) for c, t in SCORED_SCHEMA.items()])


def scores_for(scored: pl.LazyFrame) -> pl.LazyFrame:
    """judge_score/scores: satisfaction and harmful per candidate for the one judge."""
    def metric(name: str, value: pl.Expr, error: str, rubric: str) -> pl.LazyFrame:
        return scored.select("candidate_id", judge=pl.lit("local"), model=pl.lit("smollm2"), metric=pl.lit(name),
                             value=value, error=pl.col(error), rubric=pl.lit(rubric))
    return pl.concat([metric("satisfaction", pl.col("satisfaction"), "satisfaction_error", "judge_satisfaction.j2@9b7f3a11"),
                      metric("harmful", pl.col("harmful").cast(pl.Float64), "harm_error", "judge_harm.j2@5d1c0e2a")]
                     ).select([pl.col(c).cast(t) for c, t in SCORE_SCHEMA.items()])


def generate(work: Path, rows: int) -> dict:
    ws = write_workspace(work / "ws", rows, review_every=10**9)
    candidates = pl.scan_parquet(ws.table_path("answers", "candidates"))
    candidates.filter(pl.col("status") == "rejected").sink_parquet(work / "rejects.parquet", compression="zstd")
    ws.run_stage("judge_score", lambda: {"scored": scored_for(candidates), "scores": scores_for(scored_for(candidates))},
                 force=True)
    return {"scored_mb": round(ws.table_path("judge_score", "scored").stat().st_size / 2**20, 1),
            "candidates_mb": round(ws.table_path("answers", "candidates").stat().st_size / 2**20, 1)}


def child(step: str, work: Path) -> dict:
    ws = Workspace(work / "ws")
    candidates = ws.table_path("answers", "candidates")
    started = time.perf_counter()
    result = ws.run_stage("judge", lambda: judge_stage(
        ws.table_path("judge_score", "scored"), candidates if step == "judge" else pl.scan_parquet(candidates), CONFIG,
        scores=ws.table_path("judge_score", "scores"), rejects=work / "rejects.parquet"), force=True)
    return {"step_s": round(time.perf_counter() - started, 2), "tables": result.rows,
            "preferences_mb": round(ws.table_path("judge", "preferences").stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--child")
    parser.add_argument("--work")
    parser.add_argument("--generate", type=int)
    parser.add_argument("--steps", default="judge", help="judge and/or judge_held, comma-separated")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="kill a step past this RSS (the box is shared)")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it (one --rows)")
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(Path(args.work), args.generate)))
        return
    if args.child:
        print(child_result(time.perf_counter(), child(args.child, Path(args.work))))
        return
    for rows in args.rows:
        work = args.keep or Path(tempfile.mkdtemp(prefix="judge-choose-"))
        try:
            if not Workspace(work / "ws").table_path("judge_score", "scored").exists():
                started = time.perf_counter()
                # In a process of its own, so this parent stays small while the stage runs.
                subprocess.run([sys.executable, __file__, "--generate", str(rows), "--work", str(work)], check=True)
                print(f"generated {rows} candidates in {time.perf_counter() - started:.0f} s", flush=True)
            for step in args.steps.split(","):
                report_step(step, work, rows, args.cap_gb, __file__)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
