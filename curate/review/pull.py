"""Pull annotators' responses from Argilla into the `review` stage tables.

Tables written (`review/...`):
- `reviews`: one ReviewItem per (campaign, candidate, annotator), merged with earlier pulls;
  a response is replaced only when its `updated_at` moved past the stored one.
- `agreement`: percent agreement and Krippendorff's alpha per campaign and question.
- `decisions`: one row per candidate from `curate.review.policy.resolve_reviews`.

- `server_responses`: the responses live on the server at the last pull (record, status, annotator),
  which lets the next pull download only what changed (`curate.review.incremental`).

A full pull asks the search engine for every record that has a submitted or discarded response;
unreviewed records never travel. An incremental pull downloads only records that may have changed
and falls back to a full one when the counts do not add up; every `full_pull_every` pulls is full.
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
from curate.review.config import DecisionRule
from curate.review.identity import split_record_key, with_answer_version
from curate.review.incremental import choose_fetch
from curate.review.policy import current_reviews, resolve_reviews
from curate.tables import CANDIDATES, REVIEW_SERVER_RESPONSES, REVIEWS
from curate.workspace import StageOutput, Workspace, sha256_file

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
        key = record.get("external_id")
        if not key:
            continue  # not pushed by curate
        candidate_id, version = split_record_key(key)
        for response in record.get("responses") or []:
            if response["status"] not in PULLED_STATUSES:
                continue
            annotator = usernames.get(response["user_id"], response["user_id"])
            values = response.get("values") or {}
            satisfaction = _value(values, "satisfaction")
            rows.append({
                "review_id": content_id("review", key, campaign, annotator),
                "candidate_id": candidate_id,
                "answer_version": version,
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
    fetched = conform(fetched, ReviewItem)
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
    rule: DecisionRule,
    current: pl.DataFrame | None = None,
    server_responses: pl.DataFrame | None = None,
    pull_state: dict | None = None,
) -> StageOutput:
    """Merge, then decide by `rule` from the reviews of each candidate's `current` answer version
    (candidate_id, answer_version); reviews of earlier answers stay in `reviews` as history.
    `server_responses` and `pull_state` (per campaign) are stored with the tables, in the same write."""
    reviews, counts = merge_reviews(previous_reviews, fetched)
    counting, stale = current_reviews(reviews, current)
    decisions = resolve_reviews(counting, rule.policy, rule.min_submitted)
    watermark = reviews["updated_at"].max() if reviews.height else None
    report = {"pull": counts, "policy": rule.policy, "min_submitted": rule.min_submitted,
              "stale_reviews": stale.height,
              "watermark": watermark.isoformat() if watermark else None,
              "incremental": pull_state or {},
              "decisions": {str(k): int(v) for k, v in decisions.group_by("decision").len().iter_rows()}}
    tables = {"reviews": reviews, "agreement": agreement_table(reviews), "decisions": decisions}
    if server_responses is not None:
        tables["server_responses"] = server_responses
    return StageOutput(tables=tables, report=report)


def _stored_state(ws: Workspace) -> tuple[dict, pl.DataFrame | None]:
    """All campaigns' pull states and the snapshot, as the last good pull wrote them; the snapshot
    only if it is the one that pull's manifest recorded (a crash between writes drops it)."""
    manifest = ws.manifest(REVIEWS.stage) or {}
    states = dict((manifest.get("report") or {}).get("incremental") or {})
    path = ws.table_path(REVIEW_SERVER_RESPONSES.stage, REVIEW_SERVER_RESPONSES.table)
    recorded = manifest.get("outputs", {}).get(REVIEW_SERVER_RESPONSES.table, {}).get("sha256")
    if not path.exists() or recorded != sha256_file(path):
        return states, None
    return states, pl.read_parquet(path)


def fetch_reviews(client: ArgillaClient, campaign: str, workspace: str, *, ws: Workspace | None = None,
                  full: bool = True, full_pull_every: int = 1) -> tuple[pl.DataFrame, dict, pl.DataFrame, dict]:
    """(reviews fetched, dataset, new snapshot, all campaigns' pull states)."""
    workspace_id = client.workspace_id(workspace, create=False)
    ds = client.find_dataset(campaign, workspace_id)
    if ds is None:
        raise CurateError(f"no Argilla dataset '{campaign}' in workspace '{workspace}' at {client.api_url}; push first")
    states, snapshot = _stored_state(ws) if ws is not None else ({}, None)
    usernames = client.usernames()
    records, snapshot, state = choose_fetch(
        client, ds["id"], campaign=campaign, previous=states.get(campaign), snapshot=snapshot, full=full,
        full_pull_every=full_pull_every, usernames=usernames, statuses=PULLED_STATUSES,
        fetch_all=lambda: list(client.iter_reviewed_records(ds["id"], PULLED_STATUSES)))
    states[campaign] = state
    return responses_to_reviews(records, campaign=campaign, usernames=usernames), ds, snapshot, states


def pull_workspace(
    ws: Workspace,
    client: ArgillaClient,
    *,
    campaign: str,
    workspace: str,
    rule: DecisionRule,
    source: str = str(CANDIDATES),
    full: bool = False,
    full_pull_every: int = 10,
):
    """Fetch, merge and write `review/reviews`, `review/agreement`, `review/decisions` and
    `review/server_responses`.

    Decisions follow `rule` (from `curate.review.config.decision_rule`), the same rule push gave
    Argilla as its task distribution and a release keeps rows by, and count only reviews of the
    answers now in `source`. The pull is incremental unless `full`, or it is the
    `full_pull_every`-th since the last full one (see `curate.review.incremental`).
    """
    fetched, _ds, snapshot, states = fetch_reviews(client, campaign, workspace, ws=ws, full=full,
                                                   full_pull_every=full_pull_every)
    previous_path = ws.table_path(REVIEWS.stage, REVIEWS.table)
    previous = pl.read_parquet(previous_path) if previous_path.exists() else None
    stage, table = source.split("/", 1)
    source_path = ws.table_path(stage, table)
    current = (with_answer_version(pl.read_parquet(source_path)).select("candidate_id", "answer_version")
               if source_path.exists() else None)
    # Pulling reads a live server, so it always runs; the previous table is read directly
    # instead of as a stage input because the stage writes it.
    return ws.run_stage(
        "review",
        review_stage,
        force=True,
        previous_reviews=previous,
        fetched=fetched,
        rule=rule,
        current=current,
        server_responses=snapshot,
        pull_state=states,
    )
