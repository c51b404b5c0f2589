"""Turn several annotators' responses into one decision per candidate.

Policies:
- `majority`: accepted when accept votes outnumber reject votes (a tie is not a majority),
  and harmful flags are not the majority.
- `any-reject`: accepted only when nobody rejected it and nobody flagged it harmful.

Candidates with fewer than `min_submitted` submitted responses stay `pending`.

Only reviews of a candidate's current text count (`current_reviews`): a review records the answer
version it judged (curate.review.identity), and one of an earlier answer is history, not a vote.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

ConflictPolicy = Literal["majority", "any-reject"]

DECISION_SCHEMA = {
    "candidate_id": pl.String,
    "n_reviews": pl.Int64,
    "accept_votes": pl.Int64,
    "reject_votes": pl.Int64,
    "harmful_votes": pl.Int64,
    "satisfaction_mean": pl.Float64,
    "corrected_answer": pl.String,
    "decision": pl.String,
    "accepted": pl.Boolean,
}


def current_reviews(reviews: pl.DataFrame, current: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reviews that count, stale reviews): a review is stale when it judged another answer
    version than the candidate's current one (`current`: candidate_id, answer_version). Reviews
    without a version (pushed before versions existed) and of unknown candidates count as before."""
    if current is None or "answer_version" not in reviews.columns:
        return reviews, reviews.clear()
    now = current.select("candidate_id", pl.col("answer_version").alias("_current")).unique("candidate_id")
    joined = reviews.join(now, on="candidate_id", how="left")
    stale = pl.col("answer_version").is_not_null() & pl.col("_current").is_not_null() & (
        pl.col("answer_version") != pl.col("_current"))
    return joined.filter(~stale).drop("_current"), joined.filter(stale).drop("_current")


def resolve_reviews(
    reviews: pl.DataFrame, policy: ConflictPolicy = "majority", min_submitted: int = 1
) -> pl.DataFrame:
    """One row per candidate_id with vote counts, mean satisfaction, the chosen correction and the decision.

    `reviews` is a ReviewItem table; only `status == "submitted"` responses count. The chosen
    correction is the latest non-empty one from an annotator who accepted.
    """
    if policy not in ("majority", "any-reject"):
        raise ValueError(f"unknown conflict policy '{policy}' (use 'majority' or 'any-reject')")
    submitted = reviews.filter(pl.col("status") == "submitted")
    if submitted.is_empty():
        return pl.DataFrame(schema=DECISION_SCHEMA)
    correction = (
        pl.when(pl.col("accept") & pl.col("corrected_answer").str.strip_chars().str.len_chars().gt(0))
        .then(pl.col("corrected_answer"))
    )
    order = pl.coalesce("updated_at", "submitted_at")
    grouped = submitted.sort(order, nulls_last=False).group_by("candidate_id", maintain_order=True).agg(
        n_reviews=pl.len(),
        accept_votes=pl.col("accept").eq(True).sum().cast(pl.Int64),
        reject_votes=pl.col("accept").eq(False).sum().cast(pl.Int64),
        harmful_votes=pl.col("harmful").eq(True).sum().cast(pl.Int64),
        satisfaction_mean=pl.col("satisfaction").cast(pl.Float64).mean(),
        corrected_answer=correction.drop_nulls().last(),
    )
    if policy == "majority":
        ok = (pl.col("accept_votes") > pl.col("reject_votes")) & (pl.col("harmful_votes") * 2 <= pl.col("n_reviews"))
    else:
        ok = (pl.col("reject_votes") == 0) & (pl.col("harmful_votes") == 0) & (pl.col("accept_votes") > 0)
    decided = grouped.with_columns(
        decision=pl.when(pl.col("n_reviews") < min_submitted)
        .then(pl.lit("pending"))
        .when(ok)
        .then(pl.lit("accepted"))
        .otherwise(pl.lit("rejected"))
    ).with_columns(accepted=pl.col("decision") == "accepted")
    return decided.select([pl.col(c).cast(t) for c, t in DECISION_SCHEMA.items()])
