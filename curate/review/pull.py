"""Pull annotators' responses from Argilla into the `review` stage tables.

Tables written (`review/...`):
- `reviews`: one ReviewItem per (campaign, candidate, annotator), merged with earlier pulls;
  a response is replaced only when its `updated_at` moved past the stored one.
- `agreement`: percent agreement and Krippendorff's alpha per campaign and question.
- `decisions`: one row per candidate from `curate.review.policy.resolve_reviews`.

Argilla 2.8 cannot filter responses by time, so each pull asks the search engine for the records
that have a submitted or discarded response and keeps what is new or changed since the stored
watermark (the newest `updated_at` seen); unreviewed records never travel.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from curate.errors import CurateError
from curate.ids import content_id
from curate.records import ReviewItem, conform, empty_frame, polars_schema
from curate.review.agreement import agreement_table
from curate.review.client import ArgillaClient
from curate.review.policy import ConflictPolicy, resolve_reviews
from curate.tables import REVIEWS
from curate.workspace import StageOutput, Workspace

PULLED_STATUSES = ["submitted", "discarded"]
_LABEL_TRUE = {"accept": "accept", "harmful": "yes"}


def _timestamp(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    # Argilla stores naive UTC times.
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _value(values: dict[str, Any], question: str) -> Any:
    entry = (values or {}).get(question)
    return entry.get("value") if isinstance(entry, dict) else None


def _label_flag(values: dict[str, Any], question: str) -> bool | None:
    value = _value(values, question)
    return None if value is None else value == _LABEL_TRUE[question]


def _text(values: dict[str, Any], question: str) -> str | None:
    value = _value(values, question)
    return value if isinstance(value, str) and value.strip() else None


def responses_to_reviews(records: list[dict], *, campaign: str, usernames: dict[str, str]) -> pl.DataFrame:
    """Flatten Argilla records (with `responses`) into ReviewItem rows."""
    rows = []
    for record in records:
        candidate_id = record.get("external_id")
        if not candidate_id:
            continue  # not pushed by curate
        for response in record.get("responses") or []:
            if response["status"] not in PULLED_STATUSES:
                continue
            annotator = usernames.get(response["user_id"], response["user_id"])
            values = response.get("values") or {}
            satisfaction = _value(values, "satisfaction")
            rows.append({
                "review_id": content_id("review", candidate_id, campaign, annotator),
                "candidate_id": candidate_id,
                "campaign": campaign,
                "annotator": annotator,
                "accept": _label_flag(values, "accept"),
                "satisfaction": int(satisfaction) if satisfaction is not None else None,
                "harmful": _label_flag(values, "harmful"),
                "corrected_answer": _text(values, "corrected_answer"),
                "comment": _text(values, "comment"),
                "status": response["status"],
                "submitted_at": _timestamp(response.get("inserted_at")),
                "updated_at": _timestamp(response.get("updated_at")),
            })
    if not rows:
        return empty_frame(ReviewItem)
    return conform(pl.DataFrame(rows, schema_overrides=dict(polars_schema(ReviewItem))), ReviewItem)


def merge_reviews(previous: pl.DataFrame | None, fetched: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Previous rows plus what is new or newer; rows no longer on the server are kept as history."""
    previous = conform(previous, ReviewItem) if previous is not None else empty_frame(ReviewItem)
    known = previous.select("review_id", old_updated=pl.col("updated_at"))
    joined = fetched.join(known, on="review_id", how="left")
    fresh = joined.filter(pl.col("old_updated").is_null() | (pl.col("updated_at") > pl.col("old_updated")))
    new = fresh.filter(pl.col("old_updated").is_null()).height
    fresh = fresh.drop("old_updated")
    merged = pl.concat([previous.join(fresh.select("review_id"), on="review_id", how="anti"), fresh])
    merged = merged.sort("campaign", "candidate_id", "annotator")
    return merged, {"fetched": fetched.height, "new": new, "changed": fresh.height - new,
                    "unchanged": fetched.height - fresh.height}


def review_stage(
    previous_reviews: pl.DataFrame | None,
    fetched: pl.DataFrame,
    *,
    policy: ConflictPolicy,
    min_submitted: int,
) -> StageOutput:
    reviews, counts = merge_reviews(previous_reviews, fetched)
    decisions = resolve_reviews(reviews, policy, min_submitted)
    watermark = reviews["updated_at"].max() if reviews.height else None
    report = {"pull": counts, "policy": policy, "min_submitted": min_submitted,
              "watermark": watermark.isoformat() if watermark else None,
              "decisions": {str(k): int(v) for k, v in decisions.group_by("decision").len().iter_rows()}}
    return StageOutput(tables={"reviews": reviews, "agreement": agreement_table(reviews), "decisions": decisions},
                       report=report)


def fetch_reviews(client: ArgillaClient, campaign: str, workspace: str) -> tuple[pl.DataFrame, dict]:
    workspace_id = client.workspace_id(workspace, create=False)
    ds = client.find_dataset(campaign, workspace_id)
    if ds is None:
        raise CurateError(f"no Argilla dataset '{campaign}' in workspace '{workspace}' at {client.api_url}; push first")
    records = list(client.iter_reviewed_records(ds["id"], PULLED_STATUSES))
    return responses_to_reviews(records, campaign=campaign, usernames=client.usernames()), ds


def pull_workspace(
    ws: Workspace,
    client: ArgillaClient,
    *,
    campaign: str,
    workspace: str,
    policy: ConflictPolicy = "majority",
    min_submitted: int | None = None,
):
    """Fetch, merge and write `review/reviews`, `review/agreement` and `review/decisions`.

    `min_submitted` defaults to the dataset's own task distribution, so decisions wait for as
    many responses as the annotators were asked for.
    """
    fetched, ds = fetch_reviews(client, campaign, workspace)
    previous_path = ws.table_path(REVIEWS.stage, REVIEWS.table)
    previous = pl.read_parquet(previous_path) if previous_path.exists() else None
    needed = min_submitted or int(ds["distribution"].get("min_submitted") or 1)
    # Pulling reads a live server, so it always runs; the previous table is read directly
    # instead of as a stage input because the stage writes it.
    return ws.run_stage(
        "review",
        review_stage,
        force=True,
        previous_reviews=previous,
        fetched=fetched,
        policy=policy,
        min_submitted=needed,
    )
