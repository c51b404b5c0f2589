"""The push counts candidates whose regenerated answer supersedes a record already in the dataset:
one ledger query per batch of candidates (not one per candidate), with the same counts (a recording
client stands in for the bulk upsert; tests/test_review.py pushes to the real Argilla)."""

from __future__ import annotations

import sqlite3

from curate.review.identity import split_record_key
from curate.review.push import PushLedger, push_records, record_payloads, review_frame
from curate.review.settings import load_review_settings
from tests.test_review_answer_versions import RecordingClient
from tests.test_review_units import SETTINGS, candidates


class CountingLedger(PushLedger):
    """A ledger that counts the SELECT statements it runs."""

    def __init__(self, path):
        self.selects = 0
        super().__init__(path)

    def _connect(self) -> sqlite3.Connection:
        con = super()._connect()
        con.set_trace_callback(lambda sql: setattr(self, "selects", self.selects + sql.lstrip().lower().startswith("select")))
        return con


def with_records(candidate_ids: list[str], keys: dict[str, list[str]]) -> set[str]:
    """What candidates_with_records must answer, straight from its definition."""
    return {c for c in candidate_ids if any(split_record_key(k)[0] == c for k in keys.get("ds", []))}


def test_candidates_with_records_finds_bare_and_versioned_keys_and_nothing_else(tmp_path):
    ledger = CountingLedger(tmp_path / "ledger.sqlite")
    keys = {"ds": ["c1", "c10@v2", "c1-2@v3", "c3x", "c2@a@b", "c5@", "c6@v1", "c6@v2"], "other": ["c4@v1", "c7"]}
    for dataset, records in keys.items():
        ledger.acknowledge(dataset, [(k, "h") for k in records])
    asked = ["c1", "c10", "c1-2", "c3", "c4", "c5", "c6", "c7", "c2@a", "c2", "c", "", "c1@"]
    ledger.selects = 0
    found = ledger.candidates_with_records("ds", asked)
    assert found == with_records(asked, keys) == {"c1", "c10", "c1-2", "c5", "c6", "c2@a"}
    assert ledger.selects == 1
    assert ledger.candidates_with_records("ds", []) == set()


def test_the_superseded_count_is_one_query_per_batch_with_the_same_counts(tmp_path):
    settings = load_review_settings(SETTINGS)
    n, batch = 600, 250
    ledger = CountingLedger(tmp_path / "ledger.sqlite")
    first = record_payloads(review_frame(candidates(n)), settings)
    # Pushed before: every third candidate (the older ones under their bare key, as before versions).
    ledger.acknowledge("ds", [(split_record_key(p["external_id"])[0] if i % 2 else p["external_id"], p["_hash"])
                              for i, p in enumerate(first) if i % 3 == 0])
    regenerated = record_payloads(review_frame(candidates(n, answer=[f"A new answer {i}" for i in range(n)])), settings)
    ledger.selects = 0
    client = RecordingClient()
    counts = push_records(client, "ds", regenerated, ledger, batch_size=batch)
    assert counts == {"new": n, "changed": 0, "unchanged": 0, "pushed": n, "batches": 3, "superseded": n // 3}
    assert client.sent == [p["external_id"] for p in regenerated]
    chunks = -(-n // batch)
    assert ledger.selects == 2 * chunks  # per chunk: the hashes of its keys, then which of them had records
    # A rerun: nothing new, nothing superseded.
    again = push_records(RecordingClient(), "ds", regenerated, ledger, batch_size=batch)
    assert again["unchanged"] == n and again["superseded"] == 0
