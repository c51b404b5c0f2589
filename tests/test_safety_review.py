"""The safety filter's review rows through the real local Argilla: `curate review push --safety`
sends `safety_filter/review` to its own campaign with the filter's judgments as suggestions and why
each row needs a person in `judge_notes`; `pull --safety` brings the verdicts back, and a release
mixes in the rows people accepted (never a row whose harm judgment failed without an accept)."""

from __future__ import annotations

import polars as pl
import pytest

from curate.config import load_config
from curate.release import ReleaseStore, create_release
from curate.review.safety_notes import review_notes
from curate.workspace import Workspace
from tests.test_judge_review import records_with_suggestions
from tests.test_release_helpers import make_workspace, write_table
from tests.test_review import campaign, cli, submit_as  # noqa: F401  (campaign: a fresh name, deleted afterwards)
from tests.test_safety_release import review_frame_rows, selected_frame

pytestmark = [pytest.mark.slow, pytest.mark.argilla]


def test_safety_review_rows_go_to_their_campaign_and_accepted_ones_are_released(
    tmp_path, argilla_stack, campaign, monkeypatch  # noqa: F811
):
    safety_campaign = campaign
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    extra = (f'\n[[stages.release.mix]]\nname = "safety"\ntable = "safety_filter/selected"\ncount = 6\n\n'
             f'[argilla]\napi_url = "{argilla_stack.url}"\nworkspace = "{argilla_stack.workspace}"\n\n'
             f'[stages.review]\nsafety_campaign = "{safety_campaign}"\n')
    config = make_workspace(tmp_path, extra_config=extra)
    ws = Workspace(tmp_path / "ws")
    review = review_frame_rows().with_columns(
        harmful_reasoning=pl.Series([None, False, None, None], dtype=bool),
        harmful_answer=pl.Series([None, False, None, None], dtype=bool),
        satisfaction=pl.Series([None, 3, None, None]),
        refusal_score=pl.Series([None, 0.5, None, None]),
        status=pl.lit("ok"),
    )
    review = review_notes(review, judge="smollm2", rubrics="judge_harm.j2@abc, judge_satisfaction.j2@def")
    write_table(ws, "safety_filter", {"selected": selected_frame(), "review": review})

    out = cli("review", "push", "--safety", "--config", str(config))
    assert f"push {safety_campaign}: sent 4 (new 4" in out
    records = records_with_suggestions(argilla_stack, safety_campaign)
    assert set(records) == {"cand-s-fail", "cand-s-unsure", "cand-s-nobody", "cand-s-dup"}
    failed = records["cand-s-fail"]
    assert "harm_judge_failed" in failed["fields"]["judge_notes"] and "never released" in failed["fields"]["judge_notes"]
    assert "harmful" not in failed["by_question"]  # a failed judgment suggests nothing
    unsure = records["cand-s-unsure"]
    assert "uncertain_best" in unsure["fields"]["judge_notes"]
    assert unsure["by_question"]["harmful"]["value"] == "no" and unsure["by_question"]["satisfaction"]["value"] == 3
    assert unsure["by_question"]["harmful"]["agent"].startswith("safety_filter/smollm2")
    # Unchanged rows are not re-sent.
    assert "sent 0 (new 0, changed 0)" in cli("review", "push", "--safety", "--config", str(config))

    annotator = argilla_stack.annotators[0]
    submit_as(argilla_stack, safety_campaign, {annotator: {
        "cand-s-fail": {"accept": "accept", "satisfaction": 3, "harmful": "no"},
        "cand-s-unsure": {"accept": "reject", "satisfaction": 1, "harmful": "no"},
    }})
    out = cli("review", "pull", "--safety", "--config", str(config))
    assert f"pull {safety_campaign}" in out
    decisions = dict(ws.read("review/decisions").select("candidate_id", "decision").iter_rows())
    assert decisions["cand-s-fail"] == "accepted" and decisions["cand-s-unsure"] == "rejected"

    result = create_release(load_config(config))
    rows = ReleaseStore(tmp_path / "store").read(result.version)
    released = set(rows["candidate_id"])
    assert "cand-s-fail" in released  # unjudged for harm, released only because a person accepted it
    assert not {"cand-s-unsure", "cand-s-nobody", "cand-s-dup"} & released


def test_push_safety_without_the_filter_run_is_a_clear_error(tmp_path, argilla_stack, monkeypatch):
    from typer.testing import CliRunner

    from curate.cli import app

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_stack.api_key)
    config = make_workspace(tmp_path, extra_config=f'\n[argilla]\napi_url = "{argilla_stack.url}"\n')
    result = CliRunner().invoke(app, ["review", "push", "--safety", "--config", str(config)])
    assert result.exit_code != 0
    assert "safety_filter/review" in str(result.exception) + result.output
    assert "run stage 'safety_filter' first" in str(result.exception) + result.output
