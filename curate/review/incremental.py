"""Which Argilla records a review pull must download: all of them (full) or what changed (incremental).

Argilla 2.8 keeps no time of change that a query can use for responses: saving a response through
the UI updates the record's status in the search index but not its `updated_at`, and responses
are not indexed with times at all (commit 2d2e588 filtered on the record's `updated_at` and found
0 of 100 UI responses). So an incremental pull works from counts and record status instead:

1. One aggregate request (`/datasets/{id}/users/progress`) gives each annotator's submitted and
   discarded counts. Equal to the counts stored after the last pull: nothing was added, removed or
   re-statused, and nothing is downloaded.
2. Otherwise the ids and statuses of the reviewed records are listed (no responses), and only
   records that are still pending (a response can still arrive) or completed since the last pull
   are downloaded with their responses.
3. The stored snapshot (`review/server_responses`: one row per live response) is updated with
   them and its counts must then equal the server's; if not (a response added to, or re-statused
   on, a record that was already completed), the pull falls back to a full one.

What it can miss: an edit that changes a response's answers but keeps its status, on a record that
was already completed at the last pull (or made while no count changed). The periodic full pull
(`full_pull_every`, and `curate review pull --full`) picks those up.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from curate.review.client import ArgillaClient

SNAPSHOT_SCHEMA = {"campaign": pl.Utf8, "record_id": pl.Utf8, "record_status": pl.Utf8,
                   "annotator": pl.Utf8, "status": pl.Utf8}


def snapshot_rows(records: list[dict], *, campaign: str, usernames: dict[str, str],
                  statuses: list[str]) -> pl.DataFrame:
    """One row per response in `statuses` of `records` (as fetched with responses)."""
    rows = [{"campaign": campaign, "record_id": str(record["id"]), "record_status": record.get("status"),
             "annotator": usernames.get(response["user_id"], response["user_id"]), "status": response["status"]}
            for record in records for response in record.get("responses") or []
            if response["status"] in statuses]
    return pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA)


def snapshot_counts(snapshot: pl.DataFrame, campaign: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    mine = snapshot.filter(pl.col("campaign") == campaign)
    for annotator, status, n in mine.group_by("annotator", "status").len().iter_rows():
        counts.setdefault(annotator, {"submitted": 0, "discarded": 0})[status] = n
    return counts


def _nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {user: c for user, c in counts.items() if any(c.values())}


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
    completed = set(mine.filter(pl.col("record_status") == "completed")["record_id"].to_list())
    listed = {str(r["id"]): r.get("status") for r in client.iter_reviewed_records(dataset_id, statuses,
                                                                                responses=False)}
    wanted = [rid for rid, status in listed.items() if status != "completed" or rid not in completed]
    records = list(client.records_by_id(dataset_id, wanted))
    refreshed = {str(r["id"]) for r in records} | set(wanted)
    kept = mine.filter(pl.col("record_id").is_in(list(listed)) & ~pl.col("record_id").is_in(list(refreshed)))
    fresh = snapshot_rows(records, campaign=campaign, usernames=usernames, statuses=statuses)
    updated = pl.concat([kept, fresh])
    if _nonzero(snapshot_counts(updated, campaign)) != _nonzero(server_counts):
        return None
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
        others = (snapshot.filter(pl.col("campaign") != campaign) if snapshot is not None
                  else pl.DataFrame(schema=SNAPSHOT_SCHEMA))
        fresh = snapshot_rows(records, campaign=campaign, usernames=usernames, statuses=statuses)
        new_snapshot = pl.concat([others, fresh]).sort("campaign", "record_id", "annotator")
        mode, since_full = "full", 0
    else:
        records, new_snapshot, mode = result
    state = {"dataset_id": dataset_id, "mode": mode, "full_because": why_full, "pulls_since_full": since_full,
             "records_fetched": len(records), "counts": _nonzero(server_counts)}
    return records, new_snapshot, state
