"""Judge to draft release on the real services (local LLM server as judge, local Argilla): the path
`make demo` takes after the answers. The small model's judgments are weak; the checks are on the
mechanics: every judged candidate is routed, the routed ones reach Argilla with suggestions, and the
draft release's manifest and card state how its rows were decided and by which judges."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.release import ReleaseStore
from curate.workspace import Workspace
from tests.test_judge_llm import write_config
from tests.test_judge_review import records_with_suggestions
from tests.test_review import campaign  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.llm, pytest.mark.argilla]
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_judged_candidates_are_routed_pushed_with_suggestions_and_released_as_a_draft(
    tmp_path, llm_server, argilla_stack, campaign, monkeypatch,  # noqa: F811
):
    config = write_config(tmp_path, llm_server.base_url, llm_server.endpoint.model)
    config.write_text(config.read_text(encoding="utf-8") + (
        f'\n[argilla]\napi_url = "{argilla_stack.url}"\nworkspace = "{argilla_stack.workspace}"\n\n'
        f'[stages.review]\ncampaign = "{campaign}"\n\n[stages.release]\nstore = "{tmp_path / "store"}"\n'), encoding="utf-8")
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    ws = Workspace(tmp_path / "ws")

    cli("judge", "-c", str(config), "--quiet")
    out = cli("review", "push", "-c", str(config))
    routing = ws.read("route/routing")
    assert routing.height == 3 and set(routing["route"]) <= {"human", "auto_accept", "auto_reject", "not_chosen"}
    human = set(routing.filter(routing["route"] == "human")["candidate_id"])
    # Quotas: each language x topic (en/tiananmen, zh/tibet) has a human row.
    assert len(human) >= 2 and "routed by the judge" in out
    records = records_with_suggestions(argilla_stack, campaign)
    assert set(records) == human
    judgments = {r["candidate_id"]: r for r in ws.read("judge/judgments").iter_rows(named=True)}
    for cid, record in records.items():
        row = judgments[cid]
        if row["satisfaction"] is not None:
            assert record["by_question"]["satisfaction"]["value"] == round(row["satisfaction"])
            assert record["by_question"]["satisfaction"]["agent"].startswith(f"default/{llm_server.endpoint.model} ")
        else:
            assert "satisfaction" not in record["by_question"]
    assert "judge routing and audit" in cli("review", "status", "-c", str(config))

    created = json.loads(cli("release", "create", "-c", str(config), "--draft", "--json"))
    manifest = ReleaseStore(tmp_path / "store").manifest(created["version"])
    split = manifest["review_split"]
    assert split["human_reviewed"] == 0 and split["auto_accepted"] == 0  # nobody has reviewed: nothing is trusted
    assert manifest["judges"][0]["model"] == llm_server.endpoint.model and "satisfaction" in manifest["rubrics"]
    export = tmp_path / "hf"
    cli("export", "hf", str(export), "--release", str(created["version"]), "--allow-draft", "-c", str(config))
    card = (export / "README.md").read_text(encoding="utf-8")
    assert "Reviewed by people: **0** rows" in card and f"= {llm_server.endpoint.model}" in card
    # The preference export follows the same draft guard as the SFT export: a draft needs --allow-draft.
    refused = runner.invoke(app, ["export", "hf", str(tmp_path / "pref-refused"), "--format", "preference",
                                  "--release", str(created["version"]), "-c", str(config)])
    assert refused.exit_code != 0 and "--allow-draft" in str(refused.exception)
    assert not (tmp_path / "pref-refused").exists()
