"""Retries of calls that must not run twice: after a timeout whose request the real Argilla server
did perform, create/publish/delete succeed instead of failing with "already exists", "already
published" or 404. The lost reply is injected by tests/argilla_faults.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from curate.review.client import ArgillaClient, ArgillaError
from curate.review.settings import load_review_settings
from tests.argilla_faults import LostReplyTransport

SETTINGS = Path(__file__).resolve().parents[1] / "annotations" / "review.toml"
DATASETS = r"/api/v1/datasets"
ONE_DATASET = r"/api/v1/datasets/[0-9a-f-]+"

pytestmark = [pytest.mark.slow, pytest.mark.argilla]


def _client(stack, method: str, path: str) -> tuple[ArgillaClient, LostReplyTransport]:
    faults = LostReplyTransport(httpx.HTTPTransport(), method, path)
    return ArgillaClient(stack.url, stack.api_key, backoff_s=0.01, transport=faults), faults


def _create(client: ArgillaClient, stack) -> dict:
    workspace = client.workspace_id(stack.workspace)
    return client.create_dataset(f"retry-{uuid.uuid4().hex[:10]}", workspace, load_review_settings(SETTINGS),
                                 min_submitted=1, metadata={"test": "retry"})


@pytest.mark.parametrize("method,path", [
    ("POST", DATASETS),                                  # the dataset itself
    ("POST", ONE_DATASET + "/fields"),                   # a field
    ("POST", ONE_DATASET + "/questions"),                # a question
    ("POST", ONE_DATASET + "/metadata-properties"),      # a metadata property
    ("PUT", ONE_DATASET + "/publish"),                   # publishing
], ids=["create", "field", "question", "metadata", "publish"])
def test_create_dataset_survives_a_timeout_after_the_server_did_the_work(argilla_stack, method, path):
    client, faults = _client(argilla_stack, method, path)
    with client:
        ds = _create(client, argilla_stack)
        try:
            assert faults.lost and faults.lost[0][2] < 300  # the server did perform the lost attempt
            assert ds["status"] == "ready"
            settings = load_review_settings(SETTINGS)
            assert [f["name"] for f in client.request("GET", f"/api/v1/datasets/{ds['id']}/fields")["items"]] == \
                [p["name"] for p in settings.field_payloads()]
            assert [q["name"] for q in client.questions(ds["id"])] == [p["name"] for p in settings.question_payloads()]
            # The request whose reply was lost was not sent again: the server already had it.
            assert faults.sent.count(faults.lost_requests[0]) == 1
        finally:
            client.delete_dataset(ds["id"])


def test_a_retried_delete_that_meets_404_is_a_success(argilla_stack):
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as setup:
        ds = _create(setup, argilla_stack)
    client, faults = _client(argilla_stack, "DELETE", ONE_DATASET)
    with client:
        client.delete_dataset(ds["id"])
        assert faults.lost == [("DELETE", f"/api/v1/datasets/{ds['id']}", 200)]
        with pytest.raises(ArgillaError) as gone:
            client.request("GET", f"/api/v1/datasets/{ds['id']}")
        assert gone.value.status == 404


def test_a_refusal_on_the_first_attempt_is_still_an_error(argilla_stack):
    """Safe retries must not swallow real refusals: deleting a dataset that never existed is a 404."""
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key, backoff_s=0.01) as client:
        with pytest.raises(ArgillaError) as missing:
            client.delete_dataset(str(uuid.uuid4()))
        assert missing.value.status == 404
