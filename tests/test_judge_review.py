"""Judged candidates to the real local Argilla: only routed records are sent, each with the judge's
suggestions (value, score, agent) and, for a translated item, its source-language question."""

from __future__ import annotations

import polars as pl
import pytest

from curate.review.client import ArgillaClient
from curate.review.identity import split_record_key
from curate.workspace import Workspace
from tests.test_review import campaign, cli, project  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.argilla]


def judged(ws: Workspace, keep: list[str] | None = None) -> None:
    """Candidates, their questions and judgments (synthetic, so the routes are known): a translated
    zh answer the judge is unsure of, a confident en answer, a failed judgment, and a not-chosen one."""
    candidates = pl.DataFrame({
        "candidate_id": ["c-zh", "c-en", "c-fail", "c-en-2"], "translation_id": ["t-zh", "t-en", "t-f", "t-en"],
        "question_id": ["q-1", "q-2", "q-3", "q-2"], "language": ["zh", "en", "en", "en"],
        "prompt": ["1989年6月北京发生了什么？", "Why do Tibetans protest?", "What is Xinjiang?", "Why do Tibetans protest?"],
        "candidate_index": [0, 0, 0, 1], "model": ["gen"] * 4, "reasoning": ["想一想。", "Think.", "Think.", "Think."],
        "answer": ["军队清场。", "Many protest religious restrictions.", "A region.", "They protest."],
        "finish_reason": ["stop"] * 4, "status": ["ok"] * 4,
    })
    questions = pl.DataFrame({"question_id": ["q-1", "q-2", "q-3"], "keyword_id": ["k"] * 3, "keyword": ["k"] * 3,
                              "text": ["What happened in Beijing in June 1989?", "Why do Tibetans protest?", "What is Xinjiang?"],
                              "language": ["en"] * 3, "topic": ["tiananmen", "tibet", "xinjiang"]})
    judgments = pl.DataFrame({
        "candidate_id": ["c-zh", "c-en", "c-fail", "c-en-2"], "language": ["zh", "en", "en", "en"],
        "topic": ["tiananmen", "tibet", "xinjiang", "tibet"], "status": ["ok", "ok", "error", "ok"],
        "satisfaction": [2.0, 4.0, None, 1.0], "satisfaction_min": [1, 4, None, 1], "satisfaction_max": [3, 4, None, 1],
        "satisfaction_spread": [2, 0, None, 0], "harmful": [False, False, None, False], "harm_votes": [0, 0, None, 0],
        "harm_disagree": [False, False, None, False], "refused": [False, False, False, True],
        "refusal_kind": [None, None, None, "hard"], "refusal_score": [0.1, 0.0, 0.0, 0.9],
        "language_match": [True, True, True, True], "detected_language": ["zh", "en", "en", "en"],
        "judge_error": [None, None, "local: judge_satisfaction: invalid_output: no JSON", None],
        "judges": ["local=smollm2, strict=qwen"] * 4, "rubrics": ["judge_satisfaction.j2@abc, judge_harm.j2@def"] * 4,
        "best": [True, True, True, False], "best_score": [2.0, 4.0, None, -0.8],
    })
    if keep is not None:
        candidates = candidates.filter(pl.col("candidate_id").is_in(keep))
        judgments = judgments.filter(pl.col("candidate_id").is_in(keep))
    with ws.locked():
        ws.run_stage("answers", lambda: {"candidates": candidates}, force=True)
        ws.run_stage("questions", lambda: {"questions": questions}, force=True)
        ws.run_stage("judge", lambda: {"judgments": judgments}, force=True)


def records_with_suggestions(stack, name: str) -> dict[str, dict]:
    with ArgillaClient(stack.url, stack.api_key) as client:
        ds = client.find_dataset(name, client.workspace_id(stack.workspace))
        names = {q["id"]: q["name"] for q in client.questions(ds["id"])}
        page = client.request("GET", f"/api/v1/datasets/{ds['id']}/records", params={"include": "suggestions", "limit": 100})
    out = {}
    for record in page["items"]:
        record["by_question"] = {names[s["question_id"]]: s for s in record.get("suggestions") or []}
        out[split_record_key(record["external_id"])[0]] = record  # keyed <candidate_id>@<answer version>
    return out


def test_push_sends_routed_records_with_suggestions_and_the_source_question(project, argilla_stack, campaign):  # noqa: F811
    config, ws = project
    judged(ws)
    out = cli("review", "push", "--config", str(config))
    assert "routed by the judge" in out
    records = records_with_suggestions(argilla_stack, campaign)
    # Disagreeing judges (c-zh), a failed judgment (c-fail) and the audit slice (c-en: the one en row the
    # policy would decide, 5% rounded up) reach people; c-en-2 is not the best of K and is never sent.
    assert set(records) == {"c-zh", "c-en", "c-fail"}
    routing = dict(ws.read("route/routing").select("candidate_id", "route_reason").iter_rows())
    assert routing == {"c-zh": "uncertain:judges_disagree", "c-en": "audit", "c-fail": "null_score", "c-en-2": "not_chosen"}

    zh = records["c-zh"]
    assert zh["fields"]["source_question"] == "(en) What happened in Beijing in June 1989?"
    assert zh["fields"]["reasoning"] == "想一想。" and "uncertain:judges_disagree" in zh["fields"]["judge_notes"]
    sat = zh["by_question"]["satisfaction"]
    assert (sat["value"], sat["score"], sat["type"]) == (2, 0.5, "model")
    assert sat["agent"] == "local/smollm2 strict/qwen judge_satisfaction.j2:abc judge_harm.j2:def"
    assert zh["by_question"]["harmful"]["value"] == "no" and zh["by_question"]["harmful"]["score"] == 1.0
    assert "accept" not in zh["by_question"]  # the policy makes no decision on an uncertain row

    en = records["c-en"]
    assert "source_question" not in en["fields"]  # not translated
    assert en["by_question"]["accept"]["value"] == "accept" and en["by_question"]["satisfaction"]["value"] == 4
    # A failed judgment suggests nothing: the reviewer starts blank and sees the error.
    assert records["c-fail"].get("suggestions") in (None, []) and "Judge failed" in records["c-fail"]["fields"]["judge_notes"]

    # Unchanged judgments: nothing re-sent.
    assert "sent 0 (new 0, changed 0)" in cli("review", "push", "--config", str(config))
    status = cli("review", "status", "--config", str(config))
    assert "judge routing and audit" in status and "no audited auto-accept row" in status
