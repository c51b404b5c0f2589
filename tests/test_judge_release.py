"""The release and the judge's routing: auto-accepted rows go out only when the audit slice shows the
policy's precision at or above the target, and the manifest and card say how every row was decided."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from curate.cli import app
from curate.records import Candidate, conform
from curate.release import ReleaseStore
from curate.review.routing import ROUTING_SCHEMA
from curate.workspace import StageOutput, Workspace
from tests.test_release_helpers import FIRST_REVIEWS, make_workspace, review, set_reviews, write_table

runner = CliRunner()


def _candidate(cid: str) -> dict:
    return {"candidate_id": cid, "translation_id": f"tr-{cid}", "question_id": f"q-{cid}", "language": "en",
            "prompt": f"Question {cid}?", "candidate_index": 0, "model": "deepseek-r1-test", "reasoning": "Thinking.",
            "answer": f"A full answer for {cid}.", "finish_reason": "stop"}


def _route(cid: str, route: str, reason: str, policy: str | None) -> dict:
    return {"candidate_id": cid, "language": "en", "topic": "tibet", "policy_decision": policy, "route": route,
            "route_reason": reason, "audit_key": 0.5}


def routed_workspace(tmp_path: Path, audited_accepted: int) -> tuple[str, Workspace]:
    config = make_workspace(tmp_path, extra_config="")
    ws = Workspace(tmp_path / "ws")
    auto = [f"cand-auto{i}" for i in range(20)]
    audit = [f"cand-audit{i}" for i in range(30)]
    existing = ws.read("answers/candidates")
    extra = conform(pl.DataFrame([_candidate(c) for c in [*auto, *audit, "cand-rej", "cand-other"]]), Candidate)
    write_table(ws, "answers", {"candidates": pl.concat([existing, extra])})
    routes = ([_route(c, "auto_accept", "policy", "auto_accept") for c in auto]
              + [_route(c, "human", "audit", "auto_accept") for c in audit]
              + [_route("cand-rej", "auto_reject", "policy", "auto_reject"), _route("cand-other", "not_chosen", "not_chosen", None)])
    write_table(ws, "route", {"routing": pl.DataFrame(routes, schema=ROUTING_SCHEMA)})
    judges = {"judges": [{"name": "local", "model": "smollm2", "base_url": "http://127.0.0.1:8080/v1"}],
              "rubrics": {"satisfaction": "judge_satisfaction.j2@0123456789ab", "harm": "judge_harm.j2@ba9876543210"}}
    ws.run_stage("judge", lambda: StageOutput(tables={"judgments": pl.DataFrame({"candidate_id": auto})}, report=judges),
                 force=True)
    audit_reviews = [review(c.removeprefix("cand-"), "ann1", True) for c in audit[:audited_accepted]]
    set_reviews(tmp_path, FIRST_REVIEWS + audit_reviews)
    return str(config), ws


def create(config: str) -> dict:
    result = runner.invoke(app, ["release", "create", "-c", config, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_auto_accept_is_refused_while_the_audit_is_too_small_and_the_release_says_why(tmp_path: Path):
    config, _ = routed_workspace(tmp_path, audited_accepted=3)
    create(config)
    store = ReleaseStore(tmp_path / "store")
    ids = set(store.read(1)["candidate_id"].to_list())
    assert not any(i.startswith("cand-auto") for i in ids) and "cand-rej" not in ids and "cand-other" not in ids
    manifest = store.manifest(1)
    split = manifest["review_split"]
    assert split["auto_accepted"] == 0 and split["human_reviewed"] == len(ids) == 7
    assert "3/3 = 1.00" in split["auto_accept_refused"]["en"] and "is below the target 0.90" in split["auto_accept_refused"]["en"]
    assert manifest["excluded_by_reason"]["auto_accept_untrusted"] == 20
    assert manifest["excluded_by_reason"]["auto_rejected"] == 1 and manifest["excluded_by_reason"]["not_chosen"] == 1

    out = tmp_path / "hf"
    assert runner.invoke(app, ["export", "hf", str(out), "-c", config]).exit_code == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Reviewed by people: **7** rows" in card and "without a person: **0** rows" in card
    assert "Auto-accept refused for `en`" in card
    assert "Judges: `local` = smollm2" in card and "satisfaction `judge_satisfaction.j2@0123456789ab`" in card
    assert manifest["judges"][0]["model"] == "smollm2" and manifest["rubrics"]["harm"] == "judge_harm.j2@ba9876543210"


def test_auto_accepted_rows_are_released_when_the_audit_reaches_the_target(tmp_path: Path):
    config, _ = routed_workspace(tmp_path, audited_accepted=30)
    created = create(config)
    store = ReleaseStore(tmp_path / "store")
    rows = store.read(created["version"])
    auto = rows.filter(pl.col("candidate_id").str.starts_with("cand-auto"))
    assert auto.height == 20 and (auto["n_reviews"] == 0).all()
    split = store.manifest(created["version"])["review_split"]
    assert split["auto_accepted"] == 20 and split["human_reviewed"] == 4 + 30
    assert split["audit"]["en"]["trusted"] is True and split["audit"]["en"]["precision_lower"] >= 0.9
    assert split["auto_accept_refused"] == {}
    assert store.manifest(created["version"])["unreviewed_rows"] == 0
