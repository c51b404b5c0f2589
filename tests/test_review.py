"""Push and pull against the real local Argilla stack (scripts/argilla-stack.sh), never a mock.

Fault injection (a lost acknowledgement, a 503) wraps the real HTTP transport, because the real
server will not produce those on demand.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import argilla as rg
import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.review.client import ArgillaClient, ArgillaError
from curate.review.config import DecisionRule
from curate.review.identity import split_record_key
from curate.review.pull import pull_workspace
from curate.review.push import PushLedger, push_workspace
from curate.review.settings import load_review_settings
from curate.workspace import Workspace
from tests.polling import wait_for
from tests.test_review_units import SETTINGS, candidates

pytestmark = [pytest.mark.slow, pytest.mark.argilla]
runner = CliRunner()


def write_candidates(ws: Workspace, df: pl.DataFrame) -> None:
    with ws.locked():
        ws.run_stage("answers", lambda: {"candidates": df}, force=True)


@pytest.fixture
def campaign(argilla_stack):
    """A fresh campaign name; its dataset is deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        ds = client.find_dataset(name, client.workspace_id(argilla_stack.workspace))
        if ds:
            client.delete_dataset(ds["id"])


@pytest.fixture
def project(tmp_path, argilla_stack, campaign, monkeypatch) -> tuple[Path, Workspace]:
    config = tmp_path / "curate.toml"
    config.write_text(
        f'workspace = "{tmp_path / "ws"}"\n\n[argilla]\napi_url = "{argilla_stack.url}"\n'
        f'workspace = "{argilla_stack.workspace}"\n\n[stages.review]\ncampaign = "{campaign}"\nbatch_size = 20\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    return config, Workspace(tmp_path / "ws")


def server_records(stack, campaign: str) -> list[dict]:
    with ArgillaClient(stack.url, stack.api_key) as client:
        ds = client.find_dataset(campaign, client.workspace_id(stack.workspace))
        return list(client._iter_all_records(ds["id"]))


def candidate_of(record: dict) -> str:
    return split_record_key(record["external_id"])[0]


def cli(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_push_skips_unchanged_and_resends_changed(project, argilla_stack, campaign):
    config, ws = project
    write_candidates(ws, candidates(45))
    out = cli("review", "push", "--config", str(config))
    assert "sent 45 (new 45, changed 0)" in out
    records = server_records(argilla_stack, campaign)
    assert sorted(candidate_of(r) for r in records) == sorted(f"cand-{i}" for i in range(45))
    first = next(r for r in records if candidate_of(r) == "cand-1")
    assert first["fields"]["answer"] == "Answer 1" and first["metadata"]["model"] == "model-a"

    # Unchanged re-sync sends nothing. (How fast that is, is bench/argilla_bench.py's figure, not a
    # timed test's: a loaded machine made the old 2 s bound fail.)
    out = cli("review", "push", "--config", str(config))
    assert "sent 0 (new 0, changed 0), skipped 45 unchanged" in out

    # One answer edited, one candidate added: exactly those two travel. The edited answer is a new
    # record (the old one keeps its verdicts as history); a context-only change updates in place.
    answers = [f"Answer {i}" for i in range(46)]
    answers[7] = "A corrected answer"
    write_candidates(ws, candidates(46, answer=answers, model=["model-b"] + ["model-a"] * 45))
    out = cli("review", "push", "--config", str(config))
    assert "sent 3 (new 2, changed 1), skipped 43 unchanged" in out and "1 superseded" in out
    records = server_records(argilla_stack, campaign)
    assert len(records) == 47 and len({r["external_id"] for r in records}) == 47
    sevens = sorted(r["fields"]["answer"] for r in records if candidate_of(r) == "cand-7")
    assert sevens == ["A corrected answer", "Answer 7"]
    assert next(r for r in records if candidate_of(r) == "cand-0")["metadata"]["model"] == "model-b"

    # The dataset links back to the run that produced the candidates.
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        ds = client.find_dataset(campaign, client.workspace_id(argilla_stack.workspace))
    assert ds["metadata"]["curate_source"] == "answers/candidates"
    assert ds["metadata"]["curate_source_run_id"] == ws.manifest("answers")["run_id"]
    assert ds["metadata"]["curate_source_sha256"] == ws.manifest("answers")["outputs"]["candidates"]["sha256"]
    assert ds["distribution"]["min_submitted"] == load_review_settings(SETTINGS).min_submitted


class LoseAcknowledgement(httpx.BaseTransport):
    """Fault injection: the server stores bulk batch number `fail_on`, but its reply never arrives."""

    def __init__(self, fail_on: int):
        self.inner = httpx.HTTPTransport()
        self.fail_on = fail_on
        self.bulk_calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "PUT" and request.url.path.endswith("/records/bulk"):
            self.bulk_calls += 1
            if self.bulk_calls == self.fail_on:
                response.read()
                response.close()
                raise httpx.ReadTimeout("injected fault: acknowledgement lost", request=request)
        return response


class FirstAttemptFails(httpx.BaseTransport):
    """Fault injection: every bulk request is answered 503 once before reaching the server."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.seen: set[bytes] = set()
        self.failures = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/records/bulk"):
            body = request.read()
            if body not in self.seen:
                self.seen.add(body)
                self.failures += 1
                return httpx.Response(503, json={"detail": "injected: busy"}, request=request)
        return self.inner.handle_request(request)


def test_interrupted_push_resumes_without_duplicates(project, argilla_stack, campaign):
    _, ws = project
    write_candidates(ws, candidates(50))
    settings = load_review_settings(SETTINGS)
    kwargs = dict(campaign=campaign, workspace=argilla_stack.workspace, min_submitted=1, batch_size=20)

    faulty = ArgillaClient(argilla_stack.url, argilla_stack.api_key, max_retries=0, transport=LoseAcknowledgement(2))
    with faulty, pytest.raises(ArgillaError, match="acknowledgement lost"):
        push_workspace(ws, faulty, settings, **kwargs)
    # The server holds batches 1 and 2, the ledger only the acknowledged batch 1.
    assert len(server_records(argilla_stack, campaign)) == 40
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        ds_id = client.find_dataset(campaign, client.workspace_id(argilla_stack.workspace))["id"]
        assert PushLedger.for_workspace(ws).count(ds_id) == 20
        report = push_workspace(ws, client, settings, **kwargs)
    assert (report.pushed, report.unchanged, report.batches) == (30, 20, 2)
    records = server_records(argilla_stack, campaign)
    assert len(records) == 50 and len({r["external_id"] for r in records}) == 50
    assert PushLedger.for_workspace(ws).count(ds_id) == 50


def test_batches_are_retried(project, argilla_stack, campaign):
    _, ws = project
    write_candidates(ws, candidates(30))
    transport = FirstAttemptFails()
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key, backoff_s=0.01, transport=transport) as client:
        report = push_workspace(ws, client, load_review_settings(SETTINGS), campaign=campaign,
                                workspace=argilla_stack.workspace, min_submitted=1, batch_size=20)
    assert transport.failures == 2 and report.pushed == 30
    assert len(server_records(argilla_stack, campaign)) == 30


def submit_as(stack, campaign: str, answers: dict[str, dict[str, dict]]) -> None:
    """Log responses owned by each annotator through the argilla SDK.

    `answers` maps annotator -> candidate id -> {question: value}.
    """
    client = rg.Argilla(api_url=stack.url, api_key=stack.api_key)
    dataset = client.datasets(name=campaign, workspace=stack.workspace)
    wanted = {cid for per_user in answers.values() for cid in per_user}
    # Without the stored responses: the upsert replaces only the listed users' responses.
    records = [r for r in dataset.records(with_responses=False) if split_record_key(r.id)[0] in wanted]
    for record in records:
        for annotator, per_candidate in answers.items():
            values = per_candidate.get(split_record_key(record.id)[0])
            if values:
                user_id = client.users(annotator).id
                for question, value in values.items():
                    record.responses.add(rg.Response(question, value, user_id=user_id, status="submitted"))
    dataset.records.log(records)


def answer(accept: str, satisfaction: int, harmful: str = "no", **extra) -> dict:
    return {"accept": accept, "satisfaction": satisfaction, "harmful": harmful, **extra}


def test_pull_incremental_agreement_and_policies(project, argilla_stack, campaign, monkeypatch):
    config, ws = project
    monkeypatch.setenv("CURATE__ARGILLA__MIN_SUBMITTED", "2")  # the one review rule, as push and release see it
    write_candidates(ws, candidates(6))
    cli("review", "push", "--config", str(config))
    one, two = argilla_stack.annotators[:2]
    submit_as(argilla_stack, campaign, {
        one: {"cand-0": answer("accept", 4), "cand-1": answer("accept", 3),
              "cand-2": answer("reject", 1), "cand-3": answer("reject", 0, comment="refuses")},
        two: {"cand-0": answer("accept", 4), "cand-1": answer("reject", 2),
              "cand-2": answer("reject", 1), "cand-3": answer("reject", 1, "yes")},
    })

    out = cli("review", "pull", "--config", str(config))
    assert "min_submitted 2" in out
    assert "8 responses, 8 new, 0 changed" in out
    reviews = ws.read("review/reviews")
    assert reviews.height == 8 and set(reviews["annotator"]) == {one, two}
    assert reviews["campaign"].unique().to_list() == [campaign]
    row = reviews.filter((pl.col("candidate_id") == "cand-3") & (pl.col("annotator") == one)).row(0, named=True)
    assert (row["accept"], row["satisfaction"], row["harmful"], row["comment"]) == (False, 0, False, "refuses")
    assert row["submitted_at"] is not None and row["updated_at"] is not None

    agreement = {r["question"]: r for r in ws.read("review/agreement").iter_rows(named=True)}
    assert agreement["accept"]["n_items"] == 4
    assert agreement["accept"]["percent_agreement"] == pytest.approx(0.75)
    # accept x: [1,1,0,0], y: [1,0,0,0] -> alpha = 1 - 7*2/30
    assert agreement["accept"]["krippendorff_alpha"] == pytest.approx(1 - 14 / 30)
    assert agreement["harmful"]["percent_agreement"] == pytest.approx(0.75)

    decisions = dict(ws.read("review/decisions").select("candidate_id", "decision").iter_rows())
    assert decisions == {"cand-0": "accepted", "cand-1": "rejected", "cand-2": "rejected", "cand-3": "rejected"}

    # Nothing new on the server: nothing new in the table.
    out = cli("review", "pull", "--config", str(config))
    assert "(unchanged): 0 responses, 0 new, 0 changed" in out

    # Annotator two revises cand-1: one changed response, and the decision follows it. The record
    # was already completed, so only a full pull sees an edit that keeps the response's status.
    # A revision counts when its updated_at is past the stored one: wait until the clock has moved on.
    watermark = ws.read("review/reviews")["updated_at"].max()
    watermark = watermark.replace(tzinfo=dt.UTC) if watermark.tzinfo is None else watermark
    wait_for(lambda: dt.datetime.now(dt.UTC) > watermark, "clock past the stored watermark", timeout=5, interval=0.001)
    submit_as(argilla_stack, campaign, {two: {"cand-1": answer("accept", 3, corrected_answer="Fixed answer")}})
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        result = pull_workspace(ws, client, campaign=campaign, workspace=argilla_stack.workspace,
                                rule=DecisionRule(policy="majority", min_submitted=2), full=True)
    assert result.manifest["report"]["incremental"][campaign]["mode"] == "full"
    assert result.manifest["report"]["pull"]["changed"] == 1 and result.manifest["report"]["pull"]["new"] == 0
    decisions = ws.read("review/decisions").filter(pl.col("candidate_id") == "cand-1").row(0, named=True)
    assert decisions["decision"] == "accepted" and decisions["corrected_answer"] == "Fixed answer"

    monkeypatch.setenv("CURATE__STAGES__REVIEW__POLICY", "any-reject")
    out = cli("review", "pull", "--config", str(config))
    decisions = dict(ws.read("review/decisions").select("candidate_id", "decision").iter_rows())
    assert decisions["cand-1"] == "accepted" and decisions["cand-0"] == "accepted"

    out = cli("review", "status", "--config", str(config))
    assert "records 6" in out and "responses pulled 8" in out


def test_missing_key_and_changed_settings_are_clear_errors(project, argilla_stack, campaign, monkeypatch, tmp_path):
    config, ws = project
    write_candidates(ws, candidates(2))
    monkeypatch.delenv("ARGILLA_API_KEY")
    result = runner.invoke(app, ["review", "push", "--config", str(config)])
    assert result.exit_code != 0 and isinstance(result.exception, CurateError)
    assert "ARGILLA_API_KEY" in str(result.exception)

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    cli("review", "push", "--config", str(config))
    other = tmp_path / "other"
    other.mkdir()
    (other / "guidelines.md").write_text("# Other guidelines\n", encoding="utf-8")
    (other / "review.toml").write_text(
        SETTINGS.read_text(encoding="utf-8").replace('title = "Comment (optional)"', 'title = "Notes"'), encoding="utf-8")
    result = runner.invoke(app, ["review", "push", "--config", str(config), "--settings", str(other / "review.toml")])
    assert isinstance(result.exception, CurateError) and "new campaign" in str(result.exception)

    monkeypatch.setenv("ARGILLA_API_KEY", "not-a-valid-key")
    result = runner.invoke(app, ["review", "pull", "--config", str(config)])
    assert isinstance(result.exception, ArgillaError) and "API key was not accepted" in str(result.exception)
    assert "not-a-valid-key" not in str(result.exception)


def test_stack_restart_rebuilds_the_search_index(project, argilla_stack, campaign):
    """osmem keeps its index in memory only: after a restart the reindex must bring responses back."""
    import subprocess

    from tests.fixtures.argilla_stack import SCRIPT

    config, ws = project
    write_candidates(ws, candidates(3))
    cli("review", "push", "--config", str(config))
    submit_as(argilla_stack, campaign, {argilla_stack.annotators[0]: {"cand-2": answer("reject", 0, comment="evasive")}})
    for command in ("stop", "start", "status"):
        done = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "api      healthy" in done.stdout
    out = cli("review", "pull", "--config", str(config))
    assert "1 responses, 1 new" in out
    assert ws.read("review/reviews")["comment"].to_list() == ["evasive"]


def test_a_regenerated_answer_is_reviewed_afresh(project, argilla_stack, campaign):
    config, ws = project
    write_candidates(ws, candidates(3))
    cli("review", "push", "--config", str(config))
    one, two = argilla_stack.annotators[:2]
    submit_as(argilla_stack, campaign, {one: {"cand-0": answer("accept", 4)}, two: {"cand-0": answer("accept", 3)}})
    cli("review", "pull", "--config", str(config))
    assert dict(ws.read("review/decisions").select("candidate_id", "decision").iter_rows())["cand-0"] == "accepted"

    # The answers stage regenerates cand-0: its two accepts judged the old text and no longer count.
    write_candidates(ws, candidates(3, answer=["A regenerated answer", "Answer 1", "Answer 2"]))
    out = cli("review", "push", "--config", str(config))
    assert "sent 1 (new 1, changed 0)" in out and "1 superseded" in out
    out = cli("review", "pull", "--config", str(config))
    assert "2 stale" in out
    assert "cand-0" not in set(ws.read("review/decisions")["candidate_id"])
    assert ws.read("review/reviews").height == 2  # the old verdicts stay as history

    submit_as(argilla_stack, campaign, {one: {"cand-0": answer("reject", 1)}})
    cli("review", "pull", "--config", str(config))
    decisions = dict(ws.read("review/decisions").select("candidate_id", "decision").iter_rows())
    assert decisions["cand-0"] == "rejected"
