"""A synthetic workspace for the `release` stage at any size: keywords, questions, candidates of
realistic size (~4 KB of reasoning and answer each, K = 4 per translation), reviews of a sample of
them (corrections, stale answer versions, drafts, two campaigns) and, optionally, the judge's
routing. Clearly synthetic text (random word-like tokens), generated with vectorized polars so
that 1.4M candidates take about a minute. Used by bench/full_size.py and tests/test_release_lazy.py.

`edge_cases` adds what a small test needs and a benchmark does not: duplicated candidate ids,
null and blank answers, null prompts, candidates without a status of "ok".
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from curate.records import Candidate, Keyword, Question, ReviewItem, conform
from curate.review.identity import with_answer_version
from curate.review.routing import ROUTING_SCHEMA
from curate.workspace import Workspace

LANGUAGES = ["en", "zh", "es", "fr", "de", "ja", "ko", "ru", "ar", "vi", "pt", "hi"]
TOPICS = ["tiananmen", "tibet", "xinjiang", "taiwan", "hong-kong", "falun-gong", "censorship", "dissidents"]
K = 4
GEN_BATCH = 50_000
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def text_pool(seed: int, n: int, size: int) -> pl.Series:
    """n random chunks of `size` bytes of word-like text (a pool larger than a Parquet page, so
    compression sees text, not one repeated string)."""
    rng = np.random.default_rng(seed)
    words = ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 10))) for _ in range(5000)]
    return pl.Series([" ".join(words[i] for i in rng.integers(0, len(words), size // 4))[:size] for _ in range(n)])


def candidates_batch(start: int, stop: int, pool: pl.Series, edge_cases: bool) -> pl.DataFrame:
    i = pl.int_range(start, stop, eager=True)
    pick = lambda k: pl.lit(pool).gather((pl.col("i") * (2 * k + 7919) + k * 104729) % len(pool))  # noqa: E731
    translation = pl.col("i") // K
    frame = pl.DataFrame({"i": i}).select(
        candidate_id=pl.format("cand-{}", pl.col("i")),
        translation_id=pl.format("tr-{}", translation),
        question_id=pl.format("q-{}", translation // len(LANGUAGES)),
        language=pl.lit(LANGUAGES).list.get(translation % len(LANGUAGES)),
        prompt=pl.concat_str(pl.format("question {}: ", translation), pick(0).str.slice(0, 200)),
        candidate_index=(pl.col("i") % K).cast(pl.Int64),
        model=pl.when(pl.col("i") % 2 == 0).then(pl.lit("synthetic-r1-a")).otherwise(pl.lit("synthetic-r1-b")),
        reasoning=pl.concat_str([pick(k) for k in range(1, 6)], separator=" "),  # ~2.5 KB
        answer=pl.concat_str([pick(k) for k in range(6, 9)], separator=" "),  # ~1.5 KB
        finish_reason=pl.lit("stop"),
        prompt_tokens=pl.lit(60, pl.Int64),
        completion_tokens=pl.lit(1000, pl.Int64),
        status=pl.when(pl.col("i") % 97 == 5).then(pl.lit("rejected")).otherwise(pl.lit("ok")),
        reject_reason=pl.when(pl.col("i") % 97 == 5).then(pl.lit("refusal")),
        error=pl.lit(None, pl.String),
    )
    if edge_cases:
        n = pl.int_range(start, stop, eager=True)
        frame = frame.with_columns(
            reasoning=pl.when(n % 11 == 3).then(None).otherwise(pl.col("reasoning")),
            answer=pl.when(n % 53 == 7).then(pl.lit("   ")).when(n % 59 == 8).then(None).otherwise(pl.col("answer")),
            prompt=pl.when(n % 61 == 9).then(None).otherwise(pl.col("prompt")),
            status=pl.when(n % 43 == 4).then(pl.lit("error")).otherwise(pl.col("status")),
        )
    return frame


def write_candidates(path: Path, rows: int, edge_cases: bool = False) -> None:
    pool = text_pool(0, 20_000, 512)
    writer = None
    for start in range(0, rows, GEN_BATCH):
        batch = candidates_batch(start, min(rows, start + GEN_BATCH), pool, edge_cases)
        if edge_cases:  # a candidate id written twice (a rerun's row appended): the first one counts
            batch = pl.concat([batch, batch.slice(10, 3).with_columns(answer=pl.lit("a later duplicate"))])
        table = conform(batch, Candidate).to_arrow(compat_level=pl.CompatLevel.oldest())
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=8192)
    assert writer is not None
    writer.close()


def reviews_for(candidates: Path, every: int, seed: int) -> pl.DataFrame:
    """1-3 reviews of every `every`-th candidate (and of one unknown candidate), with corrections,
    harmful votes, drafts, a second campaign, and versions: current, stale or none."""
    rng = np.random.default_rng(seed)
    sample = (pl.scan_parquet(candidates).with_row_index("_n").filter(pl.col("_n") % every == 0)
              .select("candidate_id", "reasoning", "answer").collect())
    current = with_answer_version(sample)["answer_version"].to_list()
    items = []
    for n, (cid, version) in enumerate(zip(sample["candidate_id"].to_list(), current, strict=True)):
        for a in range(int(rng.integers(1, 4))):
            roll = float(rng.random())
            items.append({
                "review_id": f"r-{cid}-{a}", "candidate_id": cid, "campaign": "round2" if n % 5 == 0 else "pilot",
                "annotator": f"ann{a}", "accept": roll > 0.25, "satisfaction": int(rng.integers(0, 5)),
                "harmful": roll < 0.05, "corrected_answer": f"Corrected answer {n}." if 0.9 < roll < 0.95 else None,
                "status": "draft" if n % 17 == 3 else "submitted", "submitted_at": T0 + dt.timedelta(minutes=n * 3 + a),
                "answer_version": "0" * 12 if n % 13 == 2 else (None if n % 7 == 1 else version),
            })
    items.append({"review_id": "r-unknown", "candidate_id": "cand-unknown", "campaign": "pilot", "annotator": "ann0",
                  "accept": True, "status": "submitted", "submitted_at": T0})
    return conform(pl.DataFrame(items), ReviewItem)


def routing_for(candidates: Path) -> pl.DataFrame:
    """Candidate 0 of each translation is the best of K: auto-accepted (a share audited) or sent to
    people; the others are not chosen."""
    df = pl.scan_parquet(candidates).select("candidate_id", "language", "candidate_index").collect()
    n = pl.int_range(0, df.height, eager=True)
    first = pl.col("candidate_index") == 0
    return df.with_columns(n=n).select(
        "candidate_id", "language", topic=pl.lit(None, pl.String),
        policy_decision=pl.when(first).then(pl.lit("auto_accept")),
        route=pl.when(~first).then(pl.lit("not_chosen")).when(pl.col("n") % 3 == 0).then(pl.lit("human"))
        .otherwise(pl.lit("auto_accept")),
        route_reason=pl.when(~first).then(pl.lit("not_chosen")).when(pl.col("n") % 3 == 0).then(pl.lit("audit"))
        .otherwise(pl.lit("policy")),
        audit_key=pl.lit(0.5),
    ).select([pl.col(c).cast(t) for c, t in ROUTING_SCHEMA.items()])


def write_workspace(root: Path, rows: int, *, review_every: int = 50, routing: bool = False,
                    edge_cases: bool = False, seed: int = 0) -> Workspace:
    """A workspace at `root` holding answers/candidates (`rows` of them), review/reviews, questions/questions,
    keywords/keywords and, with `routing`, route/routing; written through the stage store."""
    ws = Workspace(root)
    stage_dir = ws.stage_dir("answers")
    stage_dir.mkdir(parents=True, exist_ok=True)
    scratch = stage_dir / "generated.parquet"
    write_candidates(scratch, rows, edge_cases)
    # Through run_stage so the manifest is complete; a LazyFrame is streamed to its file.
    ws.run_stage("answers", lambda: {"candidates": pl.scan_parquet(scratch)}, force=True)
    scratch.unlink()
    n_questions = -(-rows // (K * len(LANGUAGES)))
    keywords = conform(pl.DataFrame({"k": range(len(TOPICS) * 4)}).select(
        keyword_id=pl.format("kw-{}", pl.col("k")), keyword=pl.format("keyword {}", pl.col("k")), language=pl.lit("en"),
        count=pl.lit(2, pl.Int64), score=pl.lit(1.0),
        seed_ids=pl.concat_list(pl.format("seed-{}", pl.col("k")), pl.format("seed-{}-b", pl.col("k"))),
        topic=pl.lit(TOPICS).list.get(pl.col("k") % len(TOPICS))), Keyword)
    questions = conform(pl.DataFrame({"q": range(n_questions)}).select(
        question_id=pl.format("q-{}", pl.col("q")), keyword_id=pl.format("kw-{}", pl.col("q") % keywords.height),
        keyword=pl.lit("k"), text=pl.format("question {}", pl.col("q")), language=pl.lit("en"),
        topic=pl.when(pl.col("q") % 7 == 0).then(None).otherwise(pl.lit(TOPICS).list.get(pl.col("q") % len(TOPICS)))),
        Question)
    ws.run_stage("keywords", lambda: {"keywords": keywords}, force=True)
    ws.run_stage("questions", lambda: {"questions": questions}, force=True)
    candidates = ws.table_path("answers", "candidates")
    ws.run_stage("review", lambda: {"reviews": reviews_for(candidates, review_every, seed)}, force=True)
    if routing:
        ws.run_stage("route", lambda: {"routing": routing_for(candidates)}, force=True)
    return ws
