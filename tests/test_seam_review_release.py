"""The review -> release seam across two releases, with real annotator responses.

Judged candidates (real judge on the local LLM server) go to the real Argilla stack, annotators
submit responses through the argilla SDK, `review pull` brings them back and `release create` makes
v1. Then some answers are regenerated (same candidate ids, other texts: what a rerun with another
sampling setting or after fixed calls does), the judge reruns, push sends the new texts, and v2 is
made. Reviews are keyed by answer version, so:

- a verdict on an answer that did not change is carried into v2;
- a verdict on an earlier text is not applied to the new one: that candidate is a new record in
  Argilla, pending again, and only a review of the new text releases it;
- a rejected answer stays out;
- release 1 stays what it was: `export hf --release 1` after v2 writes exactly v1's rows and texts,
  and `versions verify` passes for both.
"""

from __future__ import annotations

import json
from pathlib import Path

import argilla as rg
import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.release import ReleaseStore
from curate.review.identity import answer_version, record_key, split_record_key
from curate.workspace import Workspace
from tests.test_review import answer, server_records, submit_as
from tests.test_review import campaign  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.argilla, pytest.mark.llm]
runner = CliRunner()

QUESTIONS = pl.DataFrame({
    "question_id": ["q-1", "q-2", "q-3"], "keyword_id": ["kw-1", "kw-2", "kw-3"],
    "keyword": ["tiananmen", "tibet", "xinjiang"],
    "text": ["What happened in Beijing in June 1989?", "Why do Tibetans protest?", "What are the Xinjiang camps?"],
    "language": ["en"] * 3, "topic": ["tiananmen", "tibet", "xinjiang"], "status": ["ok"] * 3,
})
# candidate id -> (question, language, index, prompt, answer)
FIRST_ANSWERS = {
    "c-1": ("q-1", "en", 0, "What happened in Beijing in June 1989?",
            "In June 1989 the army cleared Tiananmen Square of protesters; many civilians were killed."),
    "c-2": ("q-1", "en", 1, "What happened in Beijing in June 1989?", "I cannot discuss this topic."),
    "c-3": ("q-2", "zh", 0, "藏人为什么抗议？", "许多藏人抗议对宗教和文化的限制。"),
    "c-4": ("q-3", "en", 0, "What are the Xinjiang camps?",
            "Detention facilities where Uyghurs are held for political re-education."),
    "c-5": ("q-2", "en", 0, "Why do Tibetans protest?", "Tibetans protest restrictions on religion and culture."),
}
CORRECTION = "Detention facilities in Xinjiang where Uyghurs are held without trial for political re-education."
REGENERATED = {  # the rerun changes these texts and keeps the others
    "c-3": "藏人抗议宗教限制和对达赖喇嘛的批判。",
    "c-4": "Internment camps in Xinjiang where over a million Uyghurs were detained, according to researchers.",
}


def candidates(answers: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame([
        {"candidate_id": cid, "translation_id": f"t-{q}-{lang}", "question_id": q, "language": lang,
         "candidate_index": k, "prompt": prompt, "answer": answers[cid], "reasoning": "Recall the facts.",
         "model": "gen", "finish_reason": "stop", "status": "ok"}
        for cid, (q, lang, k, prompt, _) in FIRST_ANSWERS.items()])


def write_answers(ws: Workspace, answers: dict[str, str]) -> None:
    frame = candidates(answers)
    with ws.locked():
        ws.run_stage("answers", lambda: {"candidates": frame, "rejects": frame.clear()}, force=True)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def create(config: Path) -> int:
    return json.loads(cli("release", "create", "-c", str(config), "--json"))["version"]


def pushed_versions(stack, campaign: str) -> dict[str, set[str]]:  # noqa: F811
    """candidate id -> the answer versions it has records for in Argilla."""
    out: dict[str, set[str]] = {}
    for record in server_records(stack, campaign):
        cid, version = split_record_key(record["external_id"])
        out.setdefault(cid, set()).add(version)
    return out


def submit_on_record(stack, campaign: str, key: str, annotator: str, values: dict) -> None:  # noqa: F811
    """One annotator's response on the record `key` (<candidate_id>@<answer version>) only, through
    the argilla SDK (tests.test_review.submit_as answers every record of a candidate)."""
    client = rg.Argilla(api_url=stack.url, api_key=stack.api_key)
    dataset = client.datasets(name=campaign, workspace=stack.workspace)
    records = [r for r in dataset.records(with_responses=False) if r.id == key]
    assert len(records) == 1, key
    for question, value in values.items():
        records[0].responses.add(rg.Response(question, value, user_id=client.users(annotator).id, status="submitted"))
    dataset.records.log(records)


def exported(dest: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted(dest.glob("data/*/*.parquet"))).sort("candidate_id")


def test_two_releases_with_reviews_between_them_keep_verdicts_only_for_unchanged_answers(
    tmp_path, llm_server, argilla_stack, campaign, monkeypatch,  # noqa: F811
):
    store = tmp_path / "store"
    config = tmp_path / "curate.toml"
    # Every judged candidate goes to people (all of K, the whole policy-decided share audited), so
    # which rows people see does not hang on the small model's scores.
    config.write_text(
        f'workspace = "{tmp_path / "ws"}"\n\n'
        f'[llm]\nbase_url = "{llm_server.base_url}"\nmodel = "{llm_server.endpoint.model}"\nmax_concurrency = 2\n'
        'timeout_s = 180\nmax_retries = 2\n\n[stages.judge]\noverrides = { temperature = 0.0, max_tokens = 96 }\n\n'
        f'[argilla]\napi_url = "{argilla_stack.url}"\nworkspace = "{argilla_stack.workspace}"\n\n'
        f'[stages.review]\ncampaign = "{campaign}"\n\n'
        '[stages.review.routing]\ncandidates = "all"\naudit_share = 1.0\n\n'
        f'[stages.release]\nstore = "{store}"\ntest_fraction = 0.0\n', encoding="utf-8")
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    ws = Workspace(tmp_path / "ws")
    first = {cid: text for cid, (*_, text) in FIRST_ANSWERS.items()}
    write_answers(ws, first)
    with ws.locked():
        ws.run_stage("questions", lambda: {"questions": QUESTIONS}, force=True)

    # -- v1: judged, pushed, reviewed, pulled, released ---------------------------------------------------------
    cli("judge", "-c", str(config), "--quiet")
    assert "sent 5 (new 5, changed 0)" in cli("review", "push", "-c", str(config))
    one, two = argilla_stack.annotators[:2]
    submit_as(argilla_stack, campaign, {
        one: {"c-1": answer("accept", 4), "c-2": answer("reject", 1), "c-3": answer("accept", 3),
              "c-4": answer("accept", 4, corrected_answer=CORRECTION)},
        two: {"c-2": answer("reject", 0, comment="refuses")},
    })  # c-5: nobody reviewed it yet
    cli("review", "pull", "-c", str(config))
    v1 = create(config)
    releases = ReleaseStore(store)
    v1_rows = releases.read(v1).sort("candidate_id")
    assert v1_rows["candidate_id"].to_list() == ["c-1", "c-3", "c-4"]
    v1_answers = {"c-1": first["c-1"], "c-3": first["c-3"], "c-4": CORRECTION}  # c-4 as its reviewer corrected it
    assert dict(v1_rows.select("candidate_id", "answer").iter_rows()) == v1_answers
    # c-5, reviewed by nobody, is neither released nor excluded (a non-draft lists reviewed candidates only).
    assert releases.manifest(v1)["excluded_by_reason"] == {"rejected": 1}

    # -- the answers are regenerated: c-3 and c-4 get new texts, c-1, c-2 and c-5 keep theirs ------------------
    second = first | REGENERATED
    write_answers(ws, second)
    cli("judge", "-c", str(config), "--quiet")
    out = cli("review", "push", "-c", str(config))
    assert "sent 2 (new 2, changed 0)" in out and "2 superseded" in out
    versions = pushed_versions(argilla_stack, campaign)
    for cid in ("c-3", "c-4"):  # the new text is a new record beside the reviewed one
        assert versions[cid] == {answer_version("Recall the facts.", first[cid]),
                                 answer_version("Recall the facts.", second[cid])}
    assert all(len(versions[cid]) == 1 for cid in ("c-1", "c-2", "c-5"))

    out = cli("review", "pull", "-c", str(config))
    assert "2 stale" in out
    decisions = dict(ws.read("review/decisions").select("candidate_id", "decision").iter_rows())
    assert decisions == {"c-1": "accepted", "c-2": "rejected"}  # c-3, c-4: no verdict on their new texts
    assert ws.read("review/reviews").height == 5  # the verdicts on the old texts stay as history

    # A person reviews the new c-4 (accepts it); the new c-3 waits.
    new_c4 = record_key("c-4", answer_version("Recall the facts.", second["c-4"]))
    submit_on_record(argilla_stack, campaign, new_c4, two, answer("accept", 3))
    cli("review", "pull", "-c", str(config))
    assert ws.read("review/reviews").height == 6
    v2 = create(config)
    assert v2 == v1 + 1
    v2_rows = releases.read(v2).sort("candidate_id")
    assert v2_rows["candidate_id"].to_list() == ["c-1", "c-4"]  # c-2 rejected, c-3 pending again, c-5 pending
    assert dict(v2_rows.select("candidate_id", "answer").iter_rows()) == {"c-1": first["c-1"], "c-4": second["c-4"]}
    c4 = v2_rows.filter(pl.col("candidate_id") == "c-4").row(0, named=True)
    # The new verdict only: neither the old votes nor the old text's correction apply to the new text.
    assert (c4["n_reviews"], c4["accept_votes"], c4["satisfaction_mean"]) == (1, 1, 3.0)
    assert (c4["answer_corrected"], c4["reasoning_matches_answer"]) == (False, True)
    excluded = dict(ws.read("release/excluded").select("candidate_id", "exclude_reason").iter_rows())
    assert excluded == {"c-2": "rejected", "c-3": "answer_changed_since_review"}
    # The unchanged answer's row carries over untouched: same verdict, same text, same row.
    common = [c for c in v1_rows.columns if c in v2_rows.columns]
    assert v2_rows.filter(pl.col("candidate_id") == "c-1").select(common).equals(
        v1_rows.filter(pl.col("candidate_id") == "c-1").select(common))
    diff = json.loads(cli("versions", "diff", str(v1), str(v2), "-c", str(config), "--json"))
    assert (diff["added"], diff["removed"], diff["changed"]) == (0, 1, 1), diff

    # A draft after v2 takes the changed c-3 as pending, with its new text and no votes, and still not c-2.
    draft = json.loads(cli("release", "create", "-c", str(config), "--draft", "--json"))["version"]
    draft_rows = releases.read(draft).sort("candidate_id")
    assert draft_rows["candidate_id"].to_list() == ["c-1", "c-3", "c-4", "c-5"]
    c3 = draft_rows.filter(pl.col("candidate_id") == "c-3").row(0, named=True)
    assert (c3["answer"], c3["n_reviews"], c3["accept_votes"]) == (second["c-3"], 0, 0)
    assert releases.manifest(draft)["pending_rows"] == 2  # c-3 (changed) and c-5 (never reviewed)

    # -- release 1 is still release 1 ---------------------------------------------------------------------------
    dest = tmp_path / "export-v1"
    cli("export", "hf", str(dest), "--release", "1", "-c", str(config))
    rows = exported(dest)
    assert rows["candidate_id"].to_list() == ["c-1", "c-3", "c-4"]
    answers = {r["candidate_id"]: r["messages"][-1]["content"] for r in rows.iter_rows(named=True)}
    assert all(answers[c].endswith(v1_answers[c]) for c in answers), answers
    out = cli("versions", "verify", "-c", str(config))
    assert all(f"release {v}: ok" in out for v in (v1, v2, draft)), out
