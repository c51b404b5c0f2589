"""Mix a workspace table of answered rows into a release: the safety flow's `safety_filter/selected`
(one R1 answer per safety prompt, chosen by the inverse filter; docs/safety.md).

Unlike a file mix, these rows were answered by our generator and kept by our filter, so each row
keeps its lineage (`released_by`: "filter", or "review" for a `safety_filter/review` row a person
accepted; `with_accepted_reviews`): `source` is '<mix name>/<subset>', `topic` the prompt's category, `candidate_id`
the chosen candidate, `context` the earlier turns of a conversation (exported as messages).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from curate.errors import InputError
from curate.ids import content_id
from curate.records import ReleaseRow, conform
from curate.release.config import MixSource

REQUIRED = ("candidate_id", "prompt", "answer", "language", "subset", "messages")


def with_accepted_reviews(selected: pl.DataFrame, review: pl.DataFrame | None,
                          decisions: pl.DataFrame | None) -> pl.DataFrame:
    """The filter's selected rows plus the review rows people accepted, one row per prompt.

    A review row (its harm judgment failed, or the filter was unsure) enters only with an
    `accepted` decision from people (curate.review.policy); a prompt the filter already answered
    keeps the filter's row; of several accepted rows of one prompt the lowest candidate index wins."""
    selected = selected.with_columns(released_by=pl.lit("filter"))
    if review is None or decisions is None or review.is_empty() or decisions.is_empty():
        return selected
    accepted_ids = decisions.filter(pl.col("decision") == "accepted").select("candidate_id")
    accepted = review.join(accepted_ids, on="candidate_id", how="semi").join(
        selected.select("prompt_id"), on="prompt_id", how="anti")
    accepted = accepted.sort("prompt_id", "candidate_index", "candidate_id").unique(
        "prompt_id", keep="first", maintain_order=True).with_columns(released_by=pl.lit("review"))
    columns = [c for c in selected.columns if c in accepted.columns]
    return pl.concat([selected, accepted.select(columns)], how="diagonal_relaxed")


def _context(messages: list[dict[str, str]] | None) -> str | None:
    earlier = list(messages or [])[:-1]  # the last turn is the prompt itself
    return json.dumps(earlier, ensure_ascii=False) if earlier else None


def rows_from_table(source: MixSource, table: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The table's rows as ReleaseRows, and what the lineage says about how they were made."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(str(source.table), f"mix table lacks column(s) {missing}", field=missing[0])
    contexts = [_context(m) for m in table["messages"].to_list()]
    frame = table.with_columns(
        pl.Series("context", contexts, dtype=pl.String),
        pl.col("candidate_id").map_elements(lambda cid: content_id("row", cid), return_dtype=pl.String).alias("row_id"),
        pl.format("{}/{}", pl.lit(source.name), pl.col("subset")).alias("source"),
        (pl.col("category") if "category" in table.columns else pl.lit(None, pl.String)).alias("topic"),
    )

    def distinct(column: str) -> list[str]:
        return sorted(table[column].drop_nulls().unique().to_list()) if column in table.columns else []

    by = table.group_by("released_by").len().sort("released_by").iter_rows() if "released_by" in table.columns else []
    stats = {
        "released_by": {str(k): int(v) for k, v in by},
        "answered_by": distinct("model"),
        "filtered_by": distinct("filtered_by"),
        "eligible_by_subset": {str(k): int(v) for k, v in table.group_by("subset").len().sort("subset").iter_rows()},
        "eligible": table.height,
        "skipped": {},
    }
    return conform(frame, ReleaseRow), stats


def taken_by_subset(taken: pl.DataFrame, name: str) -> dict[str, int]:
    prefix = f"{name}/"
    counts = taken.group_by("source").len().sort("source").iter_rows()
    return {str(k).removeprefix(prefix): int(v) for k, v in counts}
