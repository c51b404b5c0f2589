"""The review push reads only the candidates routed to people (#17): the records, ledger keys and
hashes and counts are those of the earlier whole-table path, rebuilt here from the same public
pieces over every candidate, against the real local Argilla."""

from __future__ import annotations

import polars as pl
import pytest

from bench.release_workspace import write_workspace
from bench.review_push_memory import judgments_for
from curate.review.client import ArgillaClient
from curate.review.push import PushLedger, payload_stream, review_frame, source_link
from curate.review.settings import load_review_settings
from curate.review.suggestions import with_judgments, with_source_question
from tests.test_review import campaign, cli, project, server_records  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.argilla]


def payloads_over_every_candidate(ws, question_ids: dict[str, str]) -> list[dict]:
    """What push_workspace sent before #17: the review frame over the whole candidate table, then
    the routed rows kept by the join with the routing."""
    link = source_link(ws, "answers/candidates")
    questions = ws.read("questions/questions")
    frame = review_frame(ws.read("answers/candidates"), questions, ws.read("keywords/keywords"),
                         run=link["curate_source_run_id"] or link["curate_source_fingerprint"])
    frame = with_judgments(with_source_question(frame, questions), ws.read("judge/judgments"), ws.read("route/routing"))
    return list(payload_stream(frame, load_review_settings(), question_ids))


def test_push_of_routed_rows_matches_the_whole_table_path(project, argilla_stack, campaign):  # noqa: F811
    config, ws = project
    # Edge cases: duplicated ids, blank and null answers, candidates that errored or were rejected.
    write_workspace(ws.root, 480, review_every=1000, edge_cases=True)
    ws.run_stage("judge", lambda: {"judgments": judgments_for(ws)}, force=True)

    out = cli("review", "push", "--config", str(config))
    assert "routed by the judge" in out
    routes = ws.read("route/routing")
    counts = dict(routes.group_by("route").len().iter_rows())
    assert counts["auto_accept"] > 0 and counts["not_chosen"] > 0 and counts["human"] > 0

    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        ds = client.find_dataset(campaign, client.workspace_id(argilla_stack.workspace))
        question_ids = {q["name"]: q["id"] for q in client.questions(ds["id"])}
    expected = payloads_over_every_candidate(ws, question_ids)
    assert expected and f"sent {len(expected)} (new {len(expected)}, changed 0)" in out

    # Same ledger keys and content hashes (the hash covers fields, metadata and suggestions).
    ledger = PushLedger.for_workspace(ws)
    keys = [p["external_id"] for p in expected]
    assert ledger.count(ds["id"]) == len(keys) == len(set(keys))
    assert ledger.lookup(ds["id"], keys) == {p["external_id"]: p["_hash"] for p in expected}

    # Same records on the server: only rows routed to people, with the same fields and metadata.
    records = {r["external_id"]: r for r in server_records(argilla_stack, campaign)}
    assert set(records) == set(keys)
    for p in expected:
        assert records[p["external_id"]]["fields"] == p["fields"]
        assert {k: str(v) for k, v in records[p["external_id"]]["metadata"].items()} == p["metadata"]
    human = set(routes.filter(pl.col("route") == "human")["candidate_id"])
    assert {k.split("@")[0] for k in keys} <= human
    # Unchanged on a second push: nothing re-sent.
    assert "sent 0 (new 0, changed 0)" in cli("review", "push", "--config", str(config))
