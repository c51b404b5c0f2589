"""Verdicts belong to the text they judged: a changed answer is a new Argilla record, reviews of
an earlier answer no longer decide the candidate (and are counted, not hidden), and a reviewer's
correction is marked as not matching the model's reasoning."""

from __future__ import annotations

import polars as pl

from curate.release import ReleaseConfig, build_release_rows
from curate.review.config import DecisionRule
from curate.review.identity import answer_version, record_key, split_record_key
from curate.review.pull import responses_to_reviews, review_stage
from curate.review.push import record_payloads, review_frame
from curate.review.settings import load_review_settings
from tests.test_release_helpers import FIRST_REVIEWS, review, reviews_frame, upstream_frames
from tests.test_review_units import SETTINGS, candidates


def test_changed_answer_is_a_new_record_and_changed_context_is_not():
    settings = load_review_settings(SETTINGS)
    base = record_payloads(review_frame(candidates(2)), settings)
    regenerated = record_payloads(review_frame(candidates(2, answer=["Answer 0", "A new answer"])), settings)
    rethought = record_payloads(review_frame(candidates(2, reasoning=["Thinking about 0", "Other thoughts"])), settings)
    recontext = record_payloads(review_frame(candidates(2).with_columns(topic=pl.lit("tibet"))), settings)
    ids = lambda payloads: [p["external_id"] for p in payloads]  # noqa: E731
    assert ids(base)[0] == ids(regenerated)[0] and ids(base)[1] != ids(regenerated)[1]
    assert ids(base)[1] != ids(rethought)[1]
    assert ids(recontext) == ids(base)  # only what reviewers judge (reasoning, answer) makes a new record
    assert split_record_key(ids(base)[1]) == ("cand-1", answer_version("Thinking about 1", "Answer 1"))


def test_pull_keeps_the_answer_version_and_decisions_ignore_old_ones():
    old_key = record_key("cand-1", answer_version("r", "old answer"))
    new_key = record_key("cand-1", answer_version("r", "new answer"))
    response = lambda who, label: {  # noqa: E731
        "user_id": who, "status": "submitted", "inserted_at": "2026-11-24T10:00:00", "updated_at": "2026-11-24T10:05:00",
        "values": {"accept": {"value": label}, "satisfaction": {"value": 3}, "harmful": {"value": "no"}}}
    records = [{"external_id": old_key, "responses": [response("u1", "accept"), response("u2", "accept")]},
               {"external_id": new_key, "responses": [response("u1", "reject")]},
               {"external_id": "cand-2", "responses": [response("u1", "accept")]}]  # pushed before versions
    reviews = responses_to_reviews(records, campaign="c", usernames={})
    assert reviews.height == 4 and reviews["review_id"].n_unique() == 4
    assert set(reviews["candidate_id"]) == {"cand-1", "cand-2"}
    current = pl.DataFrame({"candidate_id": ["cand-1", "cand-2"],
                            "answer_version": [answer_version("r", "new answer"), answer_version("r", "x")]})
    out = review_stage(None, reviews, rule=DecisionRule(), current=current)
    decisions = dict(out.tables["decisions"].select("candidate_id", "decision").iter_rows())
    assert decisions == {"cand-1": "rejected", "cand-2": "accepted"}  # the two old accepts do not count
    assert out.report["stale_reviews"] == 2


def test_release_does_not_take_verdicts_on_an_earlier_answer():
    frames = upstream_frames()
    c1 = frames["candidates"].filter(pl.col("candidate_id") == "cand-c1").row(0, named=True)
    judged = answer_version(c1["reasoning"], "An earlier answer that reviewers accepted.")
    stale = [r | {"answer_version": judged} if r["candidate_id"] == "cand-c1" else r for r in FIRST_REVIEWS]
    rows, excluded = build_release_rows(reviews_frame(stale), frames["candidates"], ReleaseConfig())
    assert "cand-c1" not in set(rows["candidate_id"])
    assert dict(excluded.select("candidate_id", "exclude_reason").iter_rows())["cand-c1"] == "answer_changed_since_review"
    current = answer_version(c1["reasoning"], c1["answer"])
    fresh = [r | {"answer_version": current} if r["candidate_id"] == "cand-c1" else r for r in FIRST_REVIEWS]
    rows, _ = build_release_rows(reviews_frame(fresh), frames["candidates"], ReleaseConfig())
    assert "cand-c1" in set(rows["candidate_id"])


def test_corrected_answer_is_marked_as_not_matching_its_reasoning():
    frames = upstream_frames()
    rows, _ = build_release_rows(reviews_frame(FIRST_REVIEWS + [review("c3", "ann2", True, corrected="Fixed.")]),
                                 frames["candidates"], ReleaseConfig())
    marks = dict(rows.select("candidate_id", "reasoning_matches_answer").iter_rows())
    corrected = dict(rows.select("candidate_id", "answer_corrected").iter_rows())
    assert corrected["cand-c2"] and corrected["cand-c3"] and not corrected["cand-c1"]
    assert marks == {cid: not corrected[cid] for cid in marks}


class RecordingClient:
    """Keeps what would be sent; no server involved."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def upsert_records(self, dataset_id: str, items: list[dict]) -> int:
        self.sent += [item["external_id"] for item in items]
        return len(items)


def test_records_pushed_before_answer_versions_keep_their_key_until_the_text_changes(tmp_path):
    from curate.review.push import PushLedger, push_records

    settings = load_review_settings(SETTINGS)
    ledger = PushLedger(tmp_path / "ledger.sqlite")
    before = record_payloads(review_frame(candidates(2)), settings)
    # What an older push acknowledged: bare candidate ids with these contents.
    ledger.acknowledge("ds", [(split_record_key(p["external_id"])[0], p["_hash"]) for p in before])
    client = RecordingClient()
    counts = push_records(client, "ds", record_payloads(review_frame(candidates(2)), settings), ledger)
    assert client.sent == [] and counts["unchanged"] == 2
    regenerated = record_payloads(review_frame(candidates(2, answer=["Answer 0", "New"])), settings)
    counts = push_records(client, "ds", regenerated, ledger)
    assert client.sent == [regenerated[1]["external_id"]] and "@" in client.sent[0]
    assert counts["superseded"] == 1


def test_answer_versions_are_computed_slice_by_slice_with_the_same_values(monkeypatch):
    from curate.review import identity
    from curate.review.identity import with_answer_version

    monkeypatch.setattr(identity, "VERSION_SLICE_ROWS", 3)
    frame = pl.DataFrame({"reasoning": [None if i % 4 == 0 else f"r{i}" for i in range(10)],
                          "answer": [f"answer {i} 中文" for i in range(10)]})
    got = with_answer_version(frame)["answer_version"].to_list()
    assert got == [answer_version(r, a) for r, a in frame.iter_rows()]
    assert with_answer_version(frame.drop("reasoning"))["answer_version"].to_list() == [
        answer_version(None, a) for a in frame["answer"]]
    assert with_answer_version(frame.clear())["answer_version"].dtype == pl.String
