"""Incremental review pull against the real local Argilla: responses sent the way the annotator UI
sends them (one REST call per response, with the annotator's own key) are found without a full
pull, and a failed pull leaves the stored state where it was."""

from __future__ import annotations

import datetime as dt

import httpx
import polars as pl
import pytest

from curate.review.client import ArgillaClient, ArgillaError
from curate.review import incremental
from curate.review.config import DecisionRule
from curate.review.identity import split_record_key
from curate.review.pull import pull_workspace
from curate.review.push import push_workspace
from curate.review.settings import load_review_settings
from tests.test_review import campaign, project, server_records, write_candidates  # noqa: F401  (fixtures)
from tests.test_review_units import SETTINGS, candidates

pytestmark = [pytest.mark.slow, pytest.mark.argilla]

VALUES = {"accept": {"value": "accept"}, "satisfaction": {"value": 3}, "harmful": {"value": "no"}}
RULE = DecisionRule(policy="majority", min_submitted=2)


class SearchFails(httpx.BaseTransport):
    """Fault injection: record searches by id (the incremental download) answer 500."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/records/search") and b'"property":"id"' in request.read().replace(b" ", b""):
            return httpx.Response(500, json={"detail": "injected: search down"}, request=request)
        return self.inner.handle_request(request)


def respond_as_ui(stack, annotator: str, record_id: str, values: dict, status: str = "submitted") -> dict:
    """What the UI's Submit button sends: POST /records/{id}/responses with the annotator's key."""
    with ArgillaClient(stack.url, stack.api_key) as owner:
        key = next(u["api_key"] for u in owner.request("GET", "/api/v1/users")["items"] if u["username"] == annotator)
    with ArgillaClient(stack.url, key) as ui:
        return ui.request("POST", f"/api/v1/records/{record_id}/responses", json={"values": values, "status": status})


def pushed(ws, stack, name: str, n: int, *, min_submitted: int) -> dict[str, str]:
    """Push n candidates; candidate id -> Argilla record id."""
    write_candidates(ws, candidates(n))
    with ArgillaClient(stack.url, stack.api_key) as client:
        push_workspace(ws, client, load_review_settings(SETTINGS), campaign=name, workspace=stack.workspace,
                       min_submitted=min_submitted, batch_size=20)
    return {split_record_key(r["external_id"])[0]: r["id"] for r in server_records(stack, name)}


def pull(ws, stack, name, client=None, **kwargs):
    with client or ArgillaClient(stack.url, stack.api_key) as c:
        result = pull_workspace(ws, c, campaign=name, workspace=stack.workspace, rule=RULE, **kwargs)
    report = result.manifest["report"]
    return report["pull"], report["incremental"][name]


def test_ui_responses_are_found_by_an_incremental_pull(project, argilla_stack, campaign):  # noqa: F811
    _, ws = project
    ids = pushed(ws, argilla_stack, campaign, 4, min_submitted=2)
    one, two = argilla_stack.annotators[:2]

    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "full" and state["full_because"] == "no stored state" and counts["fetched"] == 0

    respond_as_ui(argilla_stack, one, ids["cand-0"], VALUES)
    first = respond_as_ui(argilla_stack, one, ids["cand-1"], VALUES)
    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "incremental" and (counts["new"], counts["changed"]) == (2, 0)

    # A second annotator completes cand-0: the record changes status and is downloaded again.
    respond_as_ui(argilla_stack, two, ids["cand-0"], {**VALUES, "accept": {"value": "reject"}})
    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "incremental" and counts["new"] == 1
    assert state["records_fetched"] == 2  # cand-0 (now completed) and cand-1 (still pending)
    reviews = ws.read("review/reviews")
    assert reviews.height == 3 and set(reviews.filter(pl.col("candidate_id") == "cand-0")["annotator"]) == {one, two}

    # Nothing changed: one aggregate request, nothing downloaded.
    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "unchanged" and counts["fetched"] == 0 and ws.read("review/reviews").height == 3

    # An edit that changes a response's status (submitted -> discarded) is seen incrementally.
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as owner:
        owner.request("PUT", f"/api/v1/responses/{first['id']}", json={"values": VALUES, "status": "discarded"})
    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "incremental" and counts["changed"] == 1
    row = ws.read("review/reviews").filter(pl.col("candidate_id") == "cand-1").row(0, named=True)
    assert row["status"] == "discarded"

    # A failed pull writes nothing: the stored state and snapshot stay those of the last good pull.
    manifest = ws.manifest("review")
    snapshot = ws.read("review/server_responses")
    respond_as_ui(argilla_stack, two, ids["cand-2"], VALUES)
    faulty = ArgillaClient(argilla_stack.url, argilla_stack.api_key, max_retries=0, transport=SearchFails())
    with pytest.raises(ArgillaError, match="injected: search down"):
        pull(ws, argilla_stack, campaign, client=faulty)
    assert ws.manifest("review")["report"]["incremental"] == manifest["report"]["incremental"]
    assert ws.read("review/server_responses").equals(snapshot)
    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "incremental" and counts["new"] == 1 and ws.read("review/reviews").height == 4

    # Every Nth pull, and --full, download everything.
    counts, state = pull(ws, argilla_stack, campaign, full_pull_every=state["pulls_since_full"] + 1)
    assert state["mode"] == "full" and state["full_because"].startswith("every") and counts["fetched"] == 4


def test_a_response_on_an_already_completed_record_falls_back_to_a_full_pull(project, argilla_stack, campaign,  # noqa: F811
                                                                            monkeypatch):
    """Another response on a record that was completed at the last pull (and inserted before the
    look-back) is not downloaded incrementally; the counts no longer add up, so the pull turns full
    and still finds it."""
    # No look-back: every record here counts as inserted before the last pull.
    monkeypatch.setattr(incremental, "INSERT_LOOKBACK", dt.timedelta(days=-1))
    _, ws = project
    ids = pushed(ws, argilla_stack, campaign, 2, min_submitted=1)
    one, two = argilla_stack.annotators[:2]
    respond_as_ui(argilla_stack, one, ids["cand-0"], VALUES)
    pull(ws, argilla_stack, campaign)
    respond_as_ui(argilla_stack, two, ids["cand-0"], VALUES)
    counts, state = pull(ws, argilla_stack, campaign)
    assert state["mode"] == "full" and state["full_because"] == "counts differ after the incremental fetch"
    assert counts["new"] == 1 and ws.read("review/reviews").height == 2
