"""Where the answers, the judge, the review push and the release meet after a rerun.

A rerun of the answers (new sampling settings, `--no-cache`, fixed failed calls) keeps the candidate
ids and changes the texts. Routes, suggestions and auto-decisions are keyed by candidate id, so:

- judgments of the earlier answers must not route, pre-fill or auto-decide the new ones: push and
  release refuse until the judge has run again (real judge on the local LLM server, real Argilla);
- a judge rerun after the last push must not leave the release applying the old routes (real Argilla
  push; judgments written as tables so the routes are known);
- nor after a routing setting changed since the push;
- with routing turned off, an old routing table's auto decisions no longer apply.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.release import ReleaseStore
from curate.workspace import Workspace
from tests.test_judge_llm import judge_candidates, write_config
from tests.test_judge_review import records_with_suggestions
from tests.test_review import campaign  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.argilla]
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0, result.output
    return f"{result.output} {result.exception}"


def with_services(config: Path, tmp_path: Path, stack, name: str, extra: str = "") -> None:
    config.write_text(config.read_text(encoding="utf-8") + (
        f'\n[argilla]\napi_url = "{stack.url}"\nworkspace = "{stack.workspace}"\n\n'
        f'[stages.review]\ncampaign = "{name}"\n\n{extra}[stages.release]\nstore = "{tmp_path / "store"}"\n'),
        encoding="utf-8")


@pytest.mark.llm
def test_judgments_of_earlier_answers_neither_route_nor_release_until_the_judge_reruns(
    tmp_path, llm_server, argilla_stack, campaign, monkeypatch,  # noqa: F811
):
    config = write_config(tmp_path, llm_server.base_url, llm_server.endpoint.model)
    with_services(config, tmp_path, argilla_stack, campaign)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    ws = Workspace(tmp_path / "ws")
    cli("judge", "-c", str(config), "--quiet")
    cli("review", "push", "-c", str(config))
    pushed = set(records_with_suggestions(argilla_stack, campaign))

    # The answers are regenerated: same ids, other texts (here every answer changes).
    regenerated = judge_candidates().with_columns(answer=pl.col("answer") + " (regenerated)")
    with ws.locked():
        ws.run_stage("answers", lambda: {"candidates": regenerated, "rejects": regenerated.clear()}, force=True)
    routing_before = ws.manifest("route")["fingerprint"]

    out = refused("review", "push", "-c", str(config))
    assert "run `curate judge` first" in out and "judge/judgments" in out
    assert set(records_with_suggestions(argilla_stack, campaign)) == pushed  # nothing was sent
    out = refused("release", "create", "-c", str(config), "--draft", "--json")
    assert "run `curate judge` first" in out
    assert ReleaseStore(tmp_path / "store").versions() == []
    assert ws.manifest("route")["fingerprint"] == routing_before

    # The judge reruns: the release routes the new judgments itself (no push in between).
    cli("judge", "-c", str(config), "--quiet")
    created = json.loads(cli("release", "create", "-c", str(config), "--draft", "--json"))
    judged = ws.manifest("judge")["outputs"]["judgments"]["sha256"]
    assert ws.manifest("route")["inputs"]["judgments"] == judged
    rows = ReleaseStore(tmp_path / "store").read(created["version"])
    assert rows.height > 0 and rows["answer"].str.ends_with(" (regenerated)").all()


# -- routes made for earlier judgments -------------------------------------------------------------

NO_AUDIT_NO_QUOTA = "[stages.review.routing]\naudit_share = 0.0\nquota_per_language_topic = 0\n\n"


def candidates(answers: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame([
        {"candidate_id": cid, "translation_id": "t-q1-en", "question_id": "q-1", "language": "en", "candidate_index": i,
         "prompt": "Why do Tibetans protest?", "answer": answer, "reasoning": "Recall the facts.", "model": "gen",
         "finish_reason": "stop", "status": "ok"}
        for i, (cid, answer) in enumerate(answers.items())])


def judgments(best: str, harmful: str) -> pl.DataFrame:
    """Two judged candidates of one question: `best` scores 4, the other is flagged harmful."""
    ids = ["c-0", "c-1"]
    return pl.DataFrame({
        "candidate_id": ids, "question_id": ["q-1"] * 2, "language": ["en"] * 2, "topic": ["tibet"] * 2,
        "status": ["ok"] * 2, "satisfaction": [4.0 if c == best else 2.0 for c in ids],
        "satisfaction_spread": [0, 0], "harmful": [c == harmful for c in ids], "harm_disagree": [False, False],
        "refused": [False, False], "refusal_score": [0.0, 0.0], "language_match": [True, True],
        "best": [c == best for c in ids], "best_score": [4.0 if c == best else -2.0 for c in ids],
    })


def judged_workspace(ws: Workspace, answers: dict[str, str], best: str, harmful: str) -> None:
    frame = candidates(answers)
    with ws.locked():
        ws.run_stage("answers", lambda: {"candidates": frame, "rejects": frame.clear()}, force=True)
        ws.run_stage("judge", lambda: {"judgments": judgments(best, harmful)}, force=True)


def draft_rows(config: Path, tmp_path: Path) -> tuple[set[str], dict]:
    created = json.loads(cli("release", "create", "-c", str(config), "--draft", "--json"))
    store = ReleaseStore(tmp_path / "store")
    return set(store.read(created["version"])["candidate_id"]), store.manifest(created["version"])


def test_a_release_after_a_judge_rerun_routes_the_new_judgments_not_the_pushed_ones(
    tmp_path, argilla_stack, campaign, monkeypatch,  # noqa: F811
):
    config = tmp_path / "curate.toml"
    config.write_text(f'workspace = "{tmp_path / "ws"}"\n', encoding="utf-8")
    with_services(config, tmp_path, argilla_stack, campaign, NO_AUDIT_NO_QUOTA)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    ws = Workspace(tmp_path / "ws")
    judged_workspace(ws, {"c-0": "They protest restrictions.", "c-1": "They protest."}, best="c-0", harmful="c-1")
    cli("review", "push", "-c", str(config))
    routes = dict(ws.read("route/routing").select("candidate_id", "route").iter_rows())
    assert routes == {"c-0": "auto_accept", "c-1": "not_chosen"}

    # Answers regenerated and judged again, no push since: c-1 is now the best, c-0 harmful.
    judged_workspace(ws, {"c-0": "A harmful answer.", "c-1": "Many protest restrictions on religion."},
                     best="c-1", harmful="c-0")
    released, manifest = draft_rows(config, tmp_path)
    assert released == {"c-1"}  # the old routes would have released c-0 and left c-1 out as not chosen
    assert manifest["excluded_by_reason"] == {"not_chosen": 1}
    assert dict(ws.read("route/routing").select("candidate_id", "route").iter_rows()) == {
        "c-0": "not_chosen", "c-1": "auto_accept"}

    # A routing setting changed since the push: the release routes by the new one, not by a table
    # made with the old thresholds (nor mixes the old routes with the new gate).
    monkeypatch.setenv("CURATE__STAGES__REVIEW__ROUTING__ACCEPT_ABOVE", "4.0")
    draft_rows(config, tmp_path)
    routing = ws.read("route/routing").filter(pl.col("candidate_id") == "c-1").row(0, named=True)
    assert (routing["route"], routing["route_reason"]) == ("human", "uncertain:near_threshold")
    assert ws.manifest("route")["config"]["accept_above"] == 4.0

    # Routing turned off: people decide everything, the routing table's auto decisions do not apply.
    monkeypatch.setenv("CURATE__STAGES__REVIEW__ROUTING__ENABLED", "false")
    released, manifest = draft_rows(config, tmp_path)
    assert released == {"c-0", "c-1"} and manifest["review_split"]["auto_accepted"] == 0
    assert manifest["excluded_by_reason"] == {}


def test_when_every_answer_failed_judge_push_and_release_say_so_and_send_nothing(
    tmp_path, argilla_stack, campaign, monkeypatch,  # noqa: F811
):
    """The empty seam: every LLM call of the answers failed (error rows in answers/rejects only).
    The judge scores nothing (and calls no endpoint: this one is closed), push sends nothing, the
    release refuses naming why, and no error row reaches Argilla or the store."""
    config = tmp_path / "curate.toml"
    config.write_text(f'workspace = "{tmp_path / "ws"}"\n\n[llm]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
                      "max_retries = 0\ntimeout_s = 2\n", encoding="utf-8")
    with_services(config, tmp_path, argilla_stack, campaign)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    ws = Workspace(tmp_path / "ws")
    failed = candidates({"c-0": "", "c-1": ""}).with_columns(
        answer=pl.lit(None, pl.String), status=pl.lit("error"), reject_reason=pl.lit("llm_error"),
        error=pl.lit("connection refused"))
    with ws.locked():
        ws.run_stage("answers", lambda: {"candidates": failed.clear(), "rejects": failed}, force=True)
    assert "judged: 0" in cli("judge", "-c", str(config), "--quiet")
    out = cli("review", "push", "-c", str(config))
    assert "sent 0" in out
    assert records_with_suggestions(argilla_stack, campaign) == {}
    cli("review", "pull", "-c", str(config))
    assert ws.read("review/reviews").height == 0
    assert "nothing to release" in refused("release", "create", "-c", str(config), "--json")
    assert "nothing to release" in refused("release", "create", "-c", str(config), "--draft", "--json")
    assert ReleaseStore(tmp_path / "store").versions() == []
