"""Which Argilla records a review pull must download: all of them (full) or what changed (incremental).

Argilla 2.8 keeps no time of change that a query can use for responses: saving a response through
the UI updates the record's status in the search index but not its `updated_at`, and responses
are not indexed with times at all (commit 2d2e588 filtered on the record's `updated_at` and found
0 of 100 UI responses). So an incremental pull works from counts and record status instead:

1. One aggregate request (`/datasets/{id}/users/progress`) gives each annotator's submitted and
   discarded counts. Equal to the counts stored after the last pull: nothing was added, removed or
   re-statused, and nothing is downloaded.
2. Otherwise it downloads, with their responses, the reviewed records that are still pending and,
   by id (250 per search request), the records that were pending at the last pull and are now
   completed, plus records inserted since (by the records' own `inserted_at`, which is reliable).
   Completed records known from the last pull do not travel at all.
3. The stored snapshot (`review/server_responses`: one row per live response, and one bare row per
   unreviewed pending record) is updated with
   them and its counts must then equal the server's; if not (a response added to, or re-statused
   on, a record that was already completed), the pull falls back to a full one.

What it can miss: an edit that changes a response's answers but keeps its status, on a record that
was already completed at the last pull (or made while no count changed). The periodic full pull
(`full_pull_every`, and `curate review pull --full`) picks those up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl

from curate.review.client import ArgillaClient

SNAPSHOT_SCHEMA = {"campaign": pl.Utf8, "record_id": pl.Utf8, "record_status": pl.Utf8, "inserted_at": pl.Utf8,
                   "annotator": pl.Utf8, "status": pl.Utf8}
# Records inserted this long before the newest one seen are listed again (ids only): a bulk
# request may commit after a later one that the last pull already saw.
INSERT_LOOKBACK = dt.timedelta(seconds=60)


def snapshot_rows(records: list[dict], *, campaign: str, usernames: dict[str, str],
                  statuses: list[str]) -> pl.DataFrame:
    """One row per response in `statuses` of `records`; a record without any gets one row with
    null annotator (a pending record whose completion the next pull looks for)."""
    rows = []
    for record in records:
        base = {"campaign": campaign, "record_id": str(record["id"]), "record_status": record.get("status"),
                "inserted_at": record.get("inserted_at")}
        mine = [r for r in record.get("responses") or [] if r["status"] in statuses]
        rows += [base | {"annotator": usernames.get(r["user_id"], r["user_id"]), "status": r["status"]}
                 for r in mine] or [base | {"annotator": None, "status": None}]
    return pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA)


def snapshot_counts(snapshot: pl.DataFrame, campaign: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    mine = snapshot.filter((pl.col("campaign") == campaign) & pl.col("annotator").is_not_null())
    for annotator, status, n in mine.group_by("annotator", "status").len().iter_rows():
        counts.setdefault(annotator, {"submitted": 0, "discarded": 0})[status] = n
    return counts


def _nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {user: c for user, c in counts.items() if any(c.values())}


def _since(snapshot: pl.DataFrame) -> str | None:
    newest = snapshot["inserted_at"].drop_nulls().max()
    return (dt.datetime.fromisoformat(newest) - INSERT_LOOKBACK).isoformat() if newest else None


def incremental_fetch(
    client: ArgillaClient,
    dataset_id: str,
    *,
    campaign: str,
    snapshot: pl.DataFrame,
    server_counts: dict[str, dict[str, int]],
    usernames: dict[str, str],
    statuses: list[str],
) -> tuple[list[dict], pl.DataFrame, str] | None:
    """(records to merge, new snapshot, how) or None when only a full pull can be trusted."""
    others = snapshot.filter(pl.col("campaign") != campaign)
    mine = snapshot.filter(pl.col("campaign") == campaign)
    if _nonzero(server_counts) == _nonzero(snapshot_counts(mine, campaign)):
        return [], snapshot, "unchanged"
    # A response lands on a pending record: those with responses come whole, and of the records
    # pending at the last pull (or inserted since) only the ones now completed.
    was_pending = mine.filter(pl.col("record_status") == "pending")["record_id"].unique().to_list()
    since = _since(mine)
    found: dict[str, dict] = {}
    known = set(mine.filter(pl.col("record_status") == "completed")["record_id"].to_list())
    recent = (client.search_records(dataset_id, record_status="completed", inserted_since=since, responses=False)
              if since else [])
    completed = was_pending + [rid for r in recent if (rid := str(r["id"])) not in known]
    # Later batches win: a new pending record listed without responses may have some.
    for batch in (
        client.search_records(dataset_id, record_status="pending", inserted_since=since, responses=False)
        if since else [],
        client.iter_reviewed_records(dataset_id, statuses, record_status="pending"),
        client.search_records(dataset_id, record_status="completed", ids=completed),
    ):
        found.update((str(r["id"]), r) for r in batch)
    # Records pending at the last pull that are still pending and unreviewed keep a bare row.
    still = [rid for rid in was_pending if rid not in found]
    kept = mine.filter(~pl.col("record_id").is_in(list(found))
                       & ((pl.col("record_status") == "completed") | pl.col("record_id").is_in(still)))
    kept = kept.filter((pl.col("record_status") == "completed") | pl.col("annotator").is_null())
    fresh = snapshot_rows(list(found.values()), campaign=campaign, usernames=usernames, statuses=statuses)
    updated = pl.concat([kept, fresh])
    if _nonzero(snapshot_counts(updated, campaign)) != _nonzero(server_counts):
        return None
    records = [r for r in found.values() if r.get("responses")]
    return records, pl.concat([others, updated]).sort("campaign", "record_id", "annotator"), "incremental"


def choose_fetch(
    client: ArgillaClient,
    dataset_id: str,
    *,
    campaign: str,
    previous: dict | None,
    snapshot: pl.DataFrame | None,
    full: bool,
    full_pull_every: int,
    usernames: dict[str, str],
    statuses: list[str],
    fetch_all: Callable[[], list[dict]],
) -> tuple[list[dict], pl.DataFrame, dict]:
    """Records to merge, the new snapshot and this campaign's pull state (stored in the manifest).

    `previous` is the state the last good pull stored; a new state is only written together with
    the tables it describes, so a failed pull leaves the old one in force.
    """
    server_counts = client.response_counts(dataset_id)
    since_full = (previous or {}).get("pulls_since_full", 0) + 1
    why_full = ("asked (--full)" if full else
                "no stored state" if previous is None or snapshot is None else
                "campaign dataset changed" if previous.get("dataset_id") != dataset_id else
                f"every {full_pull_every} pulls" if since_full >= full_pull_every else None)
    result = None
    if why_full is None:
        result = incremental_fetch(client, dataset_id, campaign=campaign, snapshot=snapshot,
                                   server_counts=server_counts, usernames=usernames, statuses=statuses)
        why_full = "counts differ after the incremental fetch" if result is None else None
    if result is None:
        records = fetch_all()
        # The records nobody has reviewed yet: where the next incremental pull looks for completions.
        reviewed = {str(r["id"]) for r in records}
        unreviewed = [r for r in client.search_records(dataset_id, record_status="pending", responses=False)
                      if str(r["id"]) not in reviewed]
        others = (snapshot.filter(pl.col("campaign") != campaign) if snapshot is not None
                  else pl.DataFrame(schema=SNAPSHOT_SCHEMA))
        fresh = snapshot_rows(records + unreviewed, campaign=campaign, usernames=usernames, statuses=statuses)
        new_snapshot = pl.concat([others, fresh]).sort("campaign", "record_id", "annotator")
        mode, since_full = "full", 0
    else:
        records, new_snapshot, mode = result
    state = {"dataset_id": dataset_id, "mode": mode, "full_because": why_full, "pulls_since_full": since_full,
             "records_fetched": len(records), "counts": _nonzero(server_counts)}
    return records, new_snapshot, state
