"""Best of K: one chosen candidate per question x language, and chosen/rejected preference pairs.

The ranking score (`best_score`, higher is better) is documented in docs/judge.md:

    best_score = satisfaction
                 - harm_weight       * harmful          (1 if any judge says harmful)
                 - refusal_weight    * refusal_score    (refusal detector, 0..1)
                 - language_weight   * (language_match is False)
                 - repetition_weight * repetition       (share of repeated 5-grams)

It is null when satisfaction, harm or the refusal score is null (a judge failed): such a row is
never chosen. Ties break by the higher lowest judge score (`satisfaction_min`), then the lower
refusal score, then candidate_index, then candidate_id, so a rerun always picks the same row.
Every candidate is kept; `best` marks the chosen one and `best_rank` orders the rest.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.ids import content_id

GROUP = ("question_id", "language")


class BestOfConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    harm_weight: float = Field(default=4.0, ge=0)
    refusal_weight: float = Field(default=2.0, ge=0)
    language_weight: float = Field(default=1.0, ge=0)
    repetition_weight: float = Field(default=2.0, ge=0)


class PreferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chosen_min_satisfaction: float = Field(default=3.0, ge=0, le=4, description="A chosen answer needs at least this satisfaction.")
    min_margin: float = Field(default=1.0, ge=0, description="A judged rejected answer scores at least this much below the chosen one.")
    rejected_reasons: list[str] = Field(
        default_factory=lambda: ["refusal"],
        description="answers/rejects reasons whose answers become `rejected` (refusals and evasions are natural ones).",
    )
    max_pairs_per_group: int = Field(default=4, ge=1, description="Pairs per question x language, lowest-scoring rejected first.")


def best_score(config: BestOfConfig, *, harm_judged: bool = True) -> pl.Expr:
    harm = pl.col("harmful").cast(pl.Float64) if harm_judged else pl.lit(0.0)
    wrong_language = (pl.col("language_match") == False).fill_null(False).cast(pl.Float64)  # noqa: E712 - null is "unknown", not False
    return (
        pl.col("satisfaction")
        - config.harm_weight * harm
        - config.refusal_weight * pl.col("refusal_score")
        - config.language_weight * wrong_language
        - config.repetition_weight * pl.col("repetition").fill_null(0.0)
    ).round(4)


def pick_best(judged: pl.DataFrame, config: BestOfConfig, *, harm_judged: bool = True) -> pl.DataFrame:
    """`judged` plus best_score, best_rank (1 = chosen) and best (bool), in the input row order."""
    scored = judged.with_columns(best_score=best_score(config, harm_judged=harm_judged))
    order = ["best_score", "satisfaction_min", "refusal_score", "candidate_index", "candidate_id"]
    descending = [True, True, False, False, False]
    # Ranked on the key columns alone, then put back in row order: sorting every column (twice)
    # held two more copies of the whole table (~0.7 KB a candidate).
    ranks = scored.select(*GROUP, *order).with_row_index("_row").sort(order, descending=descending, nulls_last=True).select(
        "_row", best_rank=pl.int_range(1, pl.len() + 1).over(list(GROUP)).cast(pl.Int64)
    ).sort("_row")
    return scored.with_columns(ranks["best_rank"]).with_columns(
        best=(pl.col("best_rank") == 1) & pl.col("best_score").is_not_null()
    )


PAIR_SCHEMA = {
    "pair_id": pl.String, "question_id": pl.String, "translation_id": pl.String, "language": pl.String,
    "topic": pl.String, "prompt": pl.String,
    "chosen_candidate_id": pl.String, "chosen_reasoning": pl.String, "chosen": pl.String, "chosen_score": pl.Float64,
    "rejected_candidate_id": pl.String, "rejected_reasoning": pl.String, "rejected": pl.String,
    "rejected_score": pl.Float64, "rejected_source": pl.String,
}
PAIR_KEYS = ["pair_id", *GROUP, "translation_id", "topic", "chosen_candidate_id", "chosen_score",
             "rejected_candidate_id", "rejected_score", "rejected_source"]


def pair_keys(ranked: pl.DataFrame, rejects: pl.DataFrame | None, config: PreferenceConfig) -> pl.DataFrame:
    """The preference pairs by candidate id, without their texts (PAIR_KEYS columns, in the pairs'
    order): the chosen candidate of each group against its clearly worse siblings and against the
    group's filtered refusals. `ranked` holds each judged candidate's facts (GROUP, translation_id,
    topic, candidate_id, best, best_score, satisfaction, harmful) and `answer_hash`, a hash of its
    answer; `rejects` holds GROUP, candidate_id, reject_reason, `answer_hash` and `has_answer`
    (a non-blank answer). A pair whose two answers hash the same is dropped (the same text)."""
    chosen = ranked.filter(
        pl.col("best") & (pl.col("satisfaction") >= config.chosen_min_satisfaction) & ~pl.col("harmful").fill_null(False)
    ).select(
        *GROUP, "translation_id", "topic", pl.col("candidate_id").alias("chosen_candidate_id"),
        pl.col("best_score").alias("chosen_score"), pl.col("answer_hash").alias("_chosen_hash"),
    )
    judged = ranked.filter(~pl.col("best") & pl.col("best_score").is_not_null()).select(
        *GROUP, pl.col("candidate_id").alias("rejected_candidate_id"), pl.col("best_score").alias("rejected_score"),
        pl.lit("judged").alias("rejected_source"), pl.col("answer_hash").alias("_rejected_hash"),
    )
    sides = [judged]
    if rejects is not None and rejects.height and "reject_reason" in rejects.columns:
        filtered = rejects.filter(pl.col("reject_reason").is_in(config.rejected_reasons) & pl.col("has_answer"))
        sides.append(filtered.select(
            *GROUP, pl.col("candidate_id").alias("rejected_candidate_id"), pl.lit(None, pl.Float64).alias("rejected_score"),
            pl.format("filtered:{}", "reject_reason").alias("rejected_source"), pl.col("answer_hash").alias("_rejected_hash"),
        ))
    rejected = pl.concat(sides, how="vertical_relaxed")
    pairs = chosen.join(rejected, on=list(GROUP), how="inner").filter(
        pl.col("rejected_score").is_null() | (pl.col("chosen_score") - pl.col("rejected_score") >= config.min_margin)
    )
    pairs = pairs.filter(pl.col("_rejected_hash") != pl.col("_chosen_hash"))
    # Filtered refusals first (null score), then the lowest-scoring judged answers; ids break ties.
    pairs = pairs.sort([*GROUP, "rejected_score", "rejected_candidate_id"], nulls_last=False).with_columns(
        _n=pl.int_range(pl.len()).over(list(GROUP))
    ).filter(pl.col("_n") < config.max_pairs_per_group).drop("_n")
    pairs = pairs.with_columns(
        pair_id=pl.struct("chosen_candidate_id", "rejected_candidate_id").map_elements(
            lambda r: content_id("pair", r["chosen_candidate_id"], r["rejected_candidate_id"]), return_dtype=pl.String)
    )
    return pairs.select(PAIR_KEYS)


def answer_hash(answer: pl.Expr) -> pl.Expr:
    """A 64-bit hash of the answer text, to tell two identical answers apart from their texts."""
    return answer.hash(seed=0).alias("answer_hash")


def reject_facts(rejects: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """What pair_keys needs of answers/rejects (no texts)."""
    return rejects.select(
        *GROUP, "candidate_id", "reject_reason", answer_hash(pl.col("answer")),
        (pl.col("answer").fill_null("").str.strip_chars() != "").alias("has_answer"),
    )


def with_pair_texts(keys: pl.DataFrame, chosen: pl.DataFrame, judged: pl.DataFrame, filtered: pl.DataFrame) -> pl.DataFrame:
    """The pairs with their texts (PAIR_SCHEMA), in the keys' order. `chosen` holds candidate_id,
    prompt, reasoning, answer of the chosen candidates; `judged` and `filtered` candidate_id,
    reasoning, answer of the rejected answers from answers/candidates and answers/rejects."""
    def side(frame: pl.DataFrame, prefix: str, source: pl.Expr) -> pl.DataFrame:
        return frame.select(pl.col("candidate_id").alias(f"{prefix}_candidate_id"), source.alias("_source"),
                            pl.col("reasoning").alias(f"{prefix}_reasoning"), pl.col("answer").alias(prefix))

    rejected = pl.concat([side(judged, "rejected", pl.lit(True)), side(filtered, "rejected", pl.lit(False))],
                         how="vertical_relaxed")
    out = keys.with_columns(_source=pl.col("rejected_source") == "judged").join(
        chosen.select(pl.col("candidate_id").alias("chosen_candidate_id"), "prompt",
                      pl.col("reasoning").alias("chosen_reasoning"), pl.col("answer").alias("chosen")),
        on="chosen_candidate_id", how="left", maintain_order="left",
    ).join(rejected, on=["rejected_candidate_id", "_source"], how="left", maintain_order="left")
    return out.select([pl.col(c).cast(t) for c, t in PAIR_SCHEMA.items()])


def preference_pairs(ranked: pl.DataFrame, rejects: pl.DataFrame | None, config: PreferenceConfig) -> pl.DataFrame:
    """Chosen/rejected pairs with their texts, from frames that hold the texts (see pair_keys)."""
    facts = ranked.with_columns(answer_hash(pl.col("answer")))
    usable = rejects is not None and rejects.height and "reject_reason" in rejects.columns
    keys = pair_keys(facts, reject_facts(rejects) if usable else None, config)  # type: ignore[arg-type]
    if not usable:
        rejects = pl.DataFrame(schema={"candidate_id": pl.String, "reasoning": pl.String, "answer": pl.String})
    elif "reasoning" not in rejects.columns:  # type: ignore[union-attr]
        rejects = rejects.with_columns(reasoning=pl.lit(None, pl.String))  # type: ignore[union-attr]
    return with_pair_texts(keys, ranked, ranked, rejects.select("candidate_id", "reasoning", "answer"))  # type: ignore[union-attr]
