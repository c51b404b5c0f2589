"""Reviewers' verdicts as training rows for the refusal detector.

`curate review pull` writes `review/reviews` (one row per candidate and annotator). A candidate
whose every submitted review is a reject with satisfaction 0 or 1 becomes a refusal; one whose
every submitted review is an accept becomes an answer; mixed or middling verdicts are left out
(they say the answer was poor, not that it refused). Reviewers do not say which kind of refusal
they saw, so reviewed refusals train the `deflection` class ("does not answer"); the detector's
refusal probability, which is what callers threshold, does not depend on the kind.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curate.errors import CurateError
from curate.refusal.data import RESERVED_MODEL, TRAINING_SCHEMA, sha256_bytes
from curate.tables import CANDIDATES, REVIEWS, TableRef
from curate.workspace import Workspace

REFUSAL_MAX_SATISFACTION = 1
REVIEWED_REFUSAL_KIND = "deflection"


def reviewed_labels(reviews: pl.DataFrame) -> pl.DataFrame:
    """candidate_id, label for candidates whose submitted reviews agree (see module docstring)."""
    submitted = reviews.filter(pl.col("status") == "submitted")
    refusal = (pl.col("accept") == False) & (pl.col("satisfaction") <= REFUSAL_MAX_SATISFACTION)  # noqa: E712
    per_candidate = submitted.group_by("candidate_id").agg(
        refusal.fill_null(False).all().alias("all_refusal"), (pl.col("accept") == True).fill_null(False).all().alias("all_accept"),  # noqa: E712
    )
    return per_candidate.select(
        "candidate_id",
        pl.when(pl.col("all_refusal")).then(pl.lit(REVIEWED_REFUSAL_KIND))
        .when(pl.col("all_accept")).then(pl.lit("answered")).otherwise(None).alias("label"),
    ).drop_nulls("label").sort("candidate_id")


def reviews_training_rows(ws: Workspace, candidates_ref: str | TableRef = CANDIDATES) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Training rows from the workspace's pulled reviews and the candidate answers they judged."""
    candidates_ref = TableRef.parse(candidates_ref)
    for ref in (REVIEWS, candidates_ref):
        if not ws.has_table(ref):
            where = ws.table_path(ref.stage, ref.table)
            raise CurateError(f"{where}: no such table; run `curate review pull` first" if ref == REVIEWS
                              else f"{where}: no candidate table to join reviews with")
    reviews = ws.read(REVIEWS)
    candidates = ws.read(candidates_ref)
    text_col = "answer" if "answer" in candidates.columns else "response"
    missing = [c for c in ("candidate_id", text_col) if c not in candidates.columns]
    if missing:
        raise CurateError(f"{candidates_ref}: lacks column(s) {missing} needed to train on reviews")
    labels = reviewed_labels(reviews)
    joined = labels.join(candidates.unique("candidate_id", keep="first"), on="candidate_id", how="inner")

    def column(name: str, default: str) -> pl.Expr:
        return pl.col(name).cast(pl.String).fill_null(default) if name in joined.columns else pl.lit(default)

    rows = joined.select(
        pl.lit("reviews").alias("source"), column("model", "unknown").alias("model"),
        column("question_id", "").alias("question_id"), column("language", "und").alias("language"),
        pl.col(text_col).cast(pl.String).alias("text"), pl.col("label"),
    ).cast(dict(TRAINING_SCHEMA))
    payload = "\n".join(f"{cid}\t{label}" for cid, label in joined.select("candidate_id", "label").iter_rows())
    entry = {
        "source": "reviews", "path": str(ws.table_path(REVIEWS.stage, REVIEWS.table)), "rows": rows.height,
        "sha256": sha256_bytes(payload.encode("utf-8")), "sha256_of": "candidate_id<TAB>label lines",
        "labels": {k: int(n) for k, n in rows.group_by("label").len().sort("label").iter_rows()},
        # Our own pipeline's outputs may come from an R1-family generator; a detector trained on
        # them must not be used for the independent R1 evaluation (docs/refusal.md).
        "r1_family_rows": int(rows["model"].str.contains(RESERVED_MODEL.pattern).sum()),
    }
    return rows, entry
