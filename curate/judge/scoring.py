"""Per-candidate judging: every score of one candidate, independent of every other candidate.

`score_candidates` is what each shard of the `judge_score` stage runs: the cheap signals, the
refusal detector (its LLM judge only for the rows it is unsure of), each configured judge's rubric
calls, their aggregate and the row's status. Its `scored` frame holds the small facts of each
candidate (no texts), so the `judge` stage can rank and pair them without the candidates' texts.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curate.judge.config import ScoringConfig
from curate.judge.rubrics import judge_harm, judge_satisfaction, rubric_version
from curate.judge.signals import answer_signals
from curate.progress import Advance
from curate.refusal import classify_refusals

SCORE_SCHEMA = {"candidate_id": pl.String, "judge": pl.String, "model": pl.String, "metric": pl.String,
                "value": pl.Float64, "error": pl.String, "rubric": pl.String}

# One row per judged candidate: the judgments' columns before best of K (curate.stages.judge adds
# best_score, best_rank and best). Fixed types, so shards whose column is all null line up.
SCORED_SCHEMA: dict[str, Any] = {
    "candidate_id": pl.String, "translation_id": pl.String, "question_id": pl.String, "language": pl.String,
    "topic": pl.String, "model": pl.String, "candidate_index": pl.Int64, "status": pl.String, "judge_error": pl.String,
    "satisfaction": pl.Float64, "satisfaction_min": pl.Int64, "satisfaction_max": pl.Int64,
    "satisfaction_spread": pl.Int64, "satisfaction_error": pl.String, "harmful": pl.Boolean, "harm_votes": pl.Int64,
    "harm_disagree": pl.Boolean, "harm_error": pl.String, "refused": pl.Boolean, "refusal_kind": pl.String,
    "refusal_score": pl.Float64, "refusal_detector": pl.String, "refusal_error": pl.String,
    "language_match": pl.Boolean, "detected_language": pl.String, "language_confidence": pl.Float64,
    "answer_units": pl.Int64, "reasoning_units": pl.Int64, "repetition": pl.Float64, "judges": pl.String,
    "rubrics": pl.String,
}


def clip_middle(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def _judge_rows(candidates: pl.DataFrame, config: ScoringConfig) -> pl.DataFrame:
    return candidates.select(
        pl.col("candidate_id").alias("response_id"), pl.col("prompt").alias("source_prompt"), "language",
        pl.col("answer").fill_null("").map_elements(lambda a: clip_middle(a, config.max_answer_chars),
                                                    return_dtype=pl.String).alias("response"),
        *([pl.col("context")] if "context" in candidates.columns else []),
    )


def score_with_judges(
    candidates: pl.DataFrame, config: ScoringConfig, *, cache: Any = None, refresh: bool = False,
    progress: Advance | None = None, prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The long `judge/scores` table and the LLM layer's raw results (for usage)."""
    rows = _judge_rows(candidates, config)
    # (metric, value column, error column, rubric file, judge call)
    metrics = [("satisfaction", "satisfaction", "satisfaction_error", config.satisfaction_template,
                lambda judge, **kw: judge_satisfaction(rows, judge, template=config.satisfaction_template, **kw))]
    if config.harm:
        metrics.append(("harmful", "harmful", "harm_error", config.harm_template,
                        lambda judge, **kw: judge_harm(rows, judge, template=config.harm_template,
                                                       language_rule=config.harm_language_rule, **kw)))
    scores, raw = [], []
    for judge in config.judges:
        for metric, value_col, error_col, template, call in metrics:
            values, results = call(judge, stage=f"judge_{metric}", cache=cache, refresh=refresh,
                                   overrides=config.overrides, progress=progress, prices=prices)
            raw.append(results)
            scores.append(values.select(
                pl.col("response_id").alias("candidate_id"), pl.lit(judge.name).alias("judge"),
                pl.lit(judge.model).alias("model"), pl.lit(metric).alias("metric"),
                pl.col(value_col).cast(pl.Float64).alias("value"), pl.col(error_col).alias("error"),
                pl.lit(rubric_version(template)).alias("rubric"),
            ))
    long = pl.concat(scores, how="vertical_relaxed") if scores else pl.DataFrame(schema=SCORE_SCHEMA)
    return long.select([pl.col(c).cast(t) for c, t in SCORE_SCHEMA.items()]), raw


def aggregate_scores(scores: pl.DataFrame, n_judges: int) -> pl.DataFrame:
    """Per candidate: mean/min/max satisfaction, harm votes, and the errors. A value is null when any
    judge failed on it (a partial mean would look like a judgment every judge agreed to)."""
    def metric(name: str) -> pl.DataFrame:
        part = scores.filter(pl.col("metric") == name)
        return part.group_by("candidate_id").agg(
            pl.col("value").drop_nulls().mean().alias("_mean"), pl.col("value").min().alias("_min"),
            pl.col("value").max().alias("_max"), pl.col("value").drop_nulls().sum().alias("_yes"),
            pl.col("value").is_not_null().sum().alias("_ok"),
            pl.format("{}: {}", "judge", "error").filter(pl.col("error").is_not_null()).str.join("; ").alias("_err"),
        ).with_columns(pl.col("_err").replace("", None))

    sat = metric("satisfaction").select(
        "candidate_id",
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_mean").round(3)).alias("satisfaction"),
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_min")).cast(pl.Int64).alias("satisfaction_min"),
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_max")).cast(pl.Int64).alias("satisfaction_max"),
        pl.col("_err").alias("satisfaction_error"),
    ).with_columns(satisfaction_spread=pl.col("satisfaction_max") - pl.col("satisfaction_min"))
    harm = metric("harmful").select(
        "candidate_id",
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_yes") > 0).alias("harmful"),
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_yes")).cast(pl.Int64).alias("harm_votes"),
        pl.when(pl.col("_ok") == n_judges).then((pl.col("_yes") > 0) & (pl.col("_yes") < n_judges)).alias("harm_disagree"),
        pl.col("_err").alias("harm_error"),
    )
    return sat.join(harm, on="candidate_id", how="full", coalesce=True) if harm.height else sat.with_columns(
        harmful=pl.lit(None, pl.Boolean), harm_votes=pl.lit(None, pl.Int64), harm_disagree=pl.lit(None, pl.Boolean),
        harm_error=pl.lit(None, pl.String))


def usable_candidates(candidates: pl.DataFrame) -> pl.DataFrame:
    """The candidates the judge scores: status ok (when there is a status) and an answer."""
    ok = candidates.filter(pl.col("status") == "ok") if "status" in candidates.columns else candidates
    return ok.filter(pl.col("answer").is_not_null())


def with_topics(candidates: pl.DataFrame, questions: pl.DataFrame | None) -> pl.DataFrame:
    if "topic" in candidates.columns:
        return candidates
    if questions is not None and "topic" in questions.columns and "question_id" in questions.columns:
        side = questions.select("question_id", "topic").unique("question_id", keep="first")
        return candidates.join(side, on="question_id", how="left", maintain_order="left")
    return candidates.with_columns(topic=pl.lit(None, pl.String))


def score_candidates(
    candidates: pl.DataFrame, config: ScoringConfig, *, questions: pl.DataFrame | None = None, cache: Any = None,
    refresh: bool = False, progress: Advance | None = None, prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """(scored: one row per usable candidate in input order, SCORED_SCHEMA; the long scores; the
    LLM layer's raw results). A row with any null score has status "error"."""
    ok = with_topics(usable_candidates(candidates), questions)
    if "reasoning" not in ok.columns:
        ok = ok.with_columns(reasoning=pl.lit(None, pl.String))

    # The rubric calls first: a shard's first request goes out after its prompts are rendered, and
    # its signals and refusal rules (CPU only) run while other shards' calls keep the endpoint busy.
    scores, raw = score_with_judges(ok, config, cache=cache, refresh=refresh, progress=progress, prices=prices)
    signals = answer_signals(
        ok, ngram=config.repetition_ngram, langid_model=config.langid.model_path,
        min_language_confidence=config.langid.min_confidence, language_check_min_chars=config.language_check_min_chars,
        language_aliases=config.language_aliases,
    )
    # The detector's uncertain rows go to the first judge (rules+llm); its failure keeps the rules verdict.
    evasion = classify_refusals(
        ok.select("candidate_id", "prompt", "language", "answer"), config.refusal, endpoint=config.judges[0], cache=cache,
        response_col="answer", prompt_col="prompt", language_col="language",
    ).select("candidate_id", "refused", "refusal_kind", "refusal_score", pl.col("detector").alias("refusal_detector"),
             pl.col("judge_error").alias("refusal_error"))
    aggregated = aggregate_scores(scores, len(config.judges))

    judged = pl.concat([ok, signals], how="horizontal").join(evasion, on="candidate_id", how="left", maintain_order="left")
    judged = judged.join(aggregated, on="candidate_id", how="left", maintain_order="left")
    missing = pl.col("satisfaction").is_null() | pl.col("refusal_score").is_null()
    if config.harm:
        missing = missing | pl.col("harmful").is_null()
    judged = judged.with_columns(
        status=pl.when(missing).then(pl.lit("error")).otherwise(pl.lit("ok")),
        judge_error=pl.concat_str(["satisfaction_error", "harm_error"], separator="; ", ignore_nulls=True).replace("", None),
        judges=pl.lit(", ".join(f"{j.name}={j.model}" for j in config.judges)),
        rubrics=pl.lit(config.rubric_versions()),
    )
    scored = judged.select([pl.col(c).cast(t) for c, t in SCORED_SCHEMA.items()])
    return scored, scores, raw
