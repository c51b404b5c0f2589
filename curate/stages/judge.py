"""The judge stage: best of K, preference pairs and the report, from the scores of `judge_score`.

`judge_score` (curate.stages.judge_score) scores each candidate shard by shard; this stage reads
its per-candidate facts (`judge_score/scored`, no texts) and writes:

- `judge/judgments`: one row per candidate with every score as a column (see JUDGMENT_COLUMNS):
  satisfaction 0-4 (the rubric shared with `curate eval`), HarmBench harm, the refusal detector's
  evasion verdict and probability (an LLM judge settles its uncertain rows), language match, length
  and repetition, the judges' disagreement, and the best-of-K choice.
- `judge/scores`: one row per candidate x judge x metric, with the raw value, error and rubric
  version (judge_score/scores, streamed through).
- `judge/preferences`: chosen/rejected pairs for the `preference` export.

Several judges (endpoints or models) may be configured; each scores every candidate, the
judgments table holds their mean, min and max, and the spread is a disagreement signal. A failed or
unparseable judge call leaves the value null with the error; a row with any null score has
status "error" and is never auto-accepted.

Memory: the facts of every candidate (best of K ranks whole question x language groups: ~0.7 KB a
candidate, no texts), the pairs' keys, and the candidates' answers only as 64-bit hashes (to drop a
pair of identical answers). Given the candidates as a file (as the runner does), the pairs are
written batch by batch (curate.judge.pair_texts): their texts are never all held at once. Given
frames, the pairs' texts are read for the pairs' rows only and held.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from curate.judge.bestof import answer_hash, pair_keys, pick_best, reject_facts, with_pair_texts
from curate.judge.config import JudgeConfig, NamedJudge, with_judge_defaults
from curate.judge.pair_texts import write_pairs
from curate.judge.rubrics import rubric_version
from curate.judge.scoring import SCORE_SCHEMA, score_candidates
from curate.stages.declaration import Stage, reads
from curate.tables import ANSWER_REJECTS, CANDIDATES, JUDGE_SCORED, JUDGE_SCORE_SCORES, JUDGE_SCORES, JUDGMENTS, PREFERENCES
from curate.workspace import StageOutput

__all__ = ["JUDGMENT_COLUMNS", "STAGE", "JudgeConfig", "NamedJudge", "judge_candidates", "judge_stage"]

JUDGMENT_COLUMNS = [
    "candidate_id", "translation_id", "question_id", "language", "topic", "model", "candidate_index", "status",
    "judge_error", "satisfaction", "satisfaction_min", "satisfaction_max", "satisfaction_spread", "satisfaction_error",
    "harmful", "harm_votes", "harm_disagree", "harm_error", "refused", "refusal_kind", "refusal_score",
    "refusal_detector", "refusal_error", "language_match", "detected_language", "language_confidence",
    "answer_units", "reasoning_units", "repetition", "best_score", "best_rank", "best", "judges", "rubrics",
]
Table = pl.DataFrame | pl.LazyFrame | Path


def _distribution(df: pl.DataFrame, by: str) -> dict[str, dict[str, int]]:
    """Counts of each rounded satisfaction value (and 'null') per value of `by`."""
    if df.is_empty():
        return {}
    bucket = pl.col("satisfaction").round(0).cast(pl.Int64).cast(pl.String).fill_null("null")
    counts = df.group_by(pl.col(by).fill_null("(none)").alias("_by"), bucket.alias("_s")).len().sort("_by", "_s")
    out: dict[str, dict[str, int]] = {}
    for key, value, n in counts.iter_rows():
        out.setdefault(str(key), {})[value] = int(n)
    return out


def judge_report(judged: pl.DataFrame, pairs: int, config: JudgeConfig) -> dict[str, Any]:
    """The stage's report. The LLM usage is judge_score's (its report's `llm`): this stage makes no call."""
    rubrics = {"satisfaction": rubric_version(config.satisfaction_template), "refusal": rubric_version(config.refusal.judge_template)}
    if config.harm:
        rubrics["harm"] = rubric_version(config.harm_template)
    return {
        "judged": judged.height,
        "errors": int((judged["status"] == "error").sum()) if judged.height else 0,
        "judges": [{"name": j.name, "model": j.model, "base_url": j.base_url} for j in config.judges],
        "rubrics": rubrics,
        "satisfaction_by_language": _distribution(judged, "language"),
        "satisfaction_by_topic": _distribution(judged, "topic"),
        "harmful_by_language": {str(k): int(v) for k, v in judged.filter(pl.col("harmful").fill_null(False))
                                .group_by("language").len().sort("language").iter_rows()},
        "refused_by_language": {str(k): int(v) for k, v in judged.filter(pl.col("refused").fill_null(False))
                                .group_by("language").len().sort("language").iter_rows()},
        "judges_disagree": int(((judged["satisfaction_spread"].fill_null(0) > 1) | judged["harm_disagree"].fill_null(False)).sum())
        if judged.height else 0,
        "best_chosen": int(judged["best"].sum()) if judged.height else 0,
        "preference_pairs": pairs,
    }


def _lazy(table: Table) -> pl.LazyFrame:
    return pl.scan_parquet(table) if isinstance(table, Path) else table.lazy()


def _texts(table: pl.LazyFrame, ids: pl.Series, columns: list[str]) -> pl.DataFrame:
    """candidate_id and `columns` of the rows whose id is in `ids` (a missing column as nulls),
    read lazily: only those rows' texts are held."""
    have = table.collect_schema().names()
    return table.filter(pl.col("candidate_id").is_in(ids.implode())).select(
        "candidate_id", *[pl.col(c) if c in have else pl.lit(None, pl.String).alias(c) for c in columns],
    ).collect(engine="streaming")


def _pairs_in_memory(keys: pl.DataFrame, texts: pl.LazyFrame, rejects: pl.LazyFrame | None) -> pl.DataFrame:
    """The pairs with their texts, read for the pairs' rows only (candidates given as a frame)."""
    judged_ids = keys.filter(pl.col("rejected_source") == "judged")["rejected_candidate_id"]
    from_candidates = _texts(texts, pl.concat([keys["chosen_candidate_id"], judged_ids]).unique(),
                             ["prompt", "reasoning", "answer"])
    filtered_ids = keys.filter(pl.col("rejected_source") != "judged")["rejected_candidate_id"]
    from_rejects = (_texts(rejects, filtered_ids, ["reasoning", "answer"]) if rejects is not None and filtered_ids.len()
                    else pl.DataFrame(schema={"candidate_id": pl.String, "reasoning": pl.String, "answer": pl.String}))
    return with_pair_texts(keys, from_candidates, from_candidates, from_rejects)


def judge_stage(
    scored: Table, candidates: Table, config: JudgeConfig, *, scores: Table | None = None, rejects: Table | None = None,
) -> StageOutput:
    """Best of K and preference pairs from judge_score's facts; see the module docstring."""
    facts = _lazy(scored).collect()
    texts = _lazy(candidates)
    hashes = texts.select("candidate_id", answer_hash(pl.col("answer"))).collect(engine="streaming")
    aligned = facts.select("candidate_id").join(hashes, on="candidate_id", how="left", maintain_order="left")
    # One hash per fact (ids unique in the candidates): added as a column, no copy of the facts.
    with_hashes = (facts.with_columns(aligned["answer_hash"]) if aligned.height == facts.height
                   else facts.join(hashes, on="candidate_id", how="left", maintain_order="left"))
    del facts, aligned
    ranked = pick_best(with_hashes, config.best_of, harm_judged=config.harm)
    del with_hashes
    judgments = ranked.select(JUDGMENT_COLUMNS)

    rejected_from = _lazy(rejects) if rejects is not None else None
    usable = rejected_from is not None and "reject_reason" in rejected_from.collect_schema().names()
    reject_keys = reject_facts(rejected_from).collect(engine="streaming") if usable else None  # type: ignore[union-attr]
    keys = pair_keys(ranked, reject_keys, config.preference)
    if isinstance(candidates, Path) and (not usable or isinstance(rejects, Path)):
        # Written batch by batch beside the candidates (the same filesystem as the stage's folder:
        # the store moves the file into place): the pairs' texts are never all held at once.
        fd, name = tempfile.mkstemp(prefix=".judge-preferences-", suffix=".parquet", dir=candidates.parent)
        os.close(fd)
        pairs: pl.DataFrame | Path = Path(name)
        n_pairs = write_pairs(keys, candidates, rejects if usable else None, pairs)  # type: ignore[arg-type]
    else:
        pairs = _pairs_in_memory(keys, texts, rejected_from if usable else None)
        n_pairs = pairs.height
    # The long table passes through: streamed from judge_score's file to this stage's.
    long = scores if isinstance(scores, pl.DataFrame) else pl.DataFrame(schema=SCORE_SCHEMA) if scores is None else _lazy(scores)
    return StageOutput(
        tables={"judgments": judgments, "scores": long, "preferences": pairs},
        report=judge_report(judgments, n_pairs, config),
    )


def judge_candidates(
    candidates: pl.DataFrame, config: JudgeConfig, *, rejects: pl.DataFrame | None = None,
    questions: pl.DataFrame | None = None, cache: Any = None, refresh: bool = False,
) -> StageOutput:
    """Both judge stages on frames in memory, unsharded: judge_score's scoring of every candidate,
    then this stage's choosing (what `curate judge` writes, for a caller without a workspace)."""
    scored, scores, _ = score_candidates(candidates, config.scoring(), questions=questions, cache=cache, refresh=refresh)
    return judge_stage(scored, candidates, config, scores=scores, rejects=rejects)


def _always(settings: JudgeConfig) -> bool:
    return True


STAGE = Stage(
    name="judge", run=judge_stage, config=JudgeConfig,
    summary="Choose the best of K and the preference pairs from judge_score's scores "
            "(judge/judgments, judge/scores, judge/preferences).",
    # Candidates give the pairs' texts; rejects give the preference pairs their filtered refusals (optional).
    reads={"scored": reads(JUDGE_SCORED), "scores": reads(JUDGE_SCORE_SCORES), "candidates": reads(CANDIDATES),
           "rejects": reads(ANSWER_REJECTS, when=_always)},
    # Read in batches, never whole: the candidates' and rejects' texts, and the long scores table.
    as_paths=("scored", "scores", "candidates", "rejects"),
    writes=(JUDGMENTS, JUDGE_SCORES, PREFERENCES),
    fill=with_judge_defaults,
    # Not sharded: best of K compares the candidates of one question with each other.
    report_keys=("judged", "errors", "best_chosen", "preference_pairs", "rubrics"),
)

