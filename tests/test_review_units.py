"""Review logic that needs no server: settings file, record building, merge, agreement, policies."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest

from curate.errors import InputError
from curate.review.agreement import agreement_table
from curate.review.config import DecisionRule
from curate.review.policy import resolve_reviews
from curate.review.incremental import snapshot_rows
from curate.review.pull import _stored_state, merge_reviews, responses_to_reviews, review_stage
from curate.review.push import record_payloads, review_frame
from curate.review.settings import load_review_settings
from curate.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
SETTINGS = REPO / "annotations" / "review.toml"


def candidates(n: int = 3, **overrides) -> pl.DataFrame:
    data = {
        "candidate_id": [f"cand-{i}" for i in range(n)],
        "translation_id": [f"tr-{i}" for i in range(n)],
        "question_id": [f"q-{i % 2}" for i in range(n)],
        "language": ["en", "zh", "es"][:n] + ["en"] * max(0, n - 3),
        "prompt": [f"What happened in {1980 + i}?" for i in range(n)],
        "candidate_index": [0] * n,
        "model": ["model-a"] * n,
        "reasoning": [f"Thinking about {i}" for i in range(n)],
        "answer": [f"Answer {i}" for i in range(n)],
        "finish_reason": ["stop"] * n,
        "status": ["ok"] * n,
    }
    data.update(overrides)
    return pl.DataFrame(data)


def review_rows(rows: list[tuple[str, str, bool | None, int | None, bool | None]], campaign: str = "c") -> pl.DataFrame:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {
            "review_id": [f"r-{cid}-{who}" for cid, who, *_ in rows],
            "candidate_id": [r[0] for r in rows],
            "campaign": campaign,
            "annotator": [r[1] for r in rows],
            "accept": [r[2] for r in rows],
            "satisfaction": [r[3] for r in rows],
            "harmful": [r[4] for r in rows],
            "corrected_answer": [None] * len(rows),
            "comment": [None] * len(rows),
            "status": "submitted",
            "submitted_at": [t0] * len(rows),
            "updated_at": [t0 + dt.timedelta(minutes=i) for i in range(len(rows))],
        }
    )


# -- settings file -------------------------------------------------------------------------------

def test_bundled_settings_load_with_the_questions_pull_needs():
    settings = load_review_settings(SETTINGS)
    assert {q.name for q in settings.questions} >= {"accept", "satisfaction", "harmful", "corrected_answer", "comment"}
    rating = next(q for q in settings.questions if q.name == "satisfaction")
    assert rating.values == [0, 1, 2, 3, 4]
    assert {m.name for m in settings.metadata} == {"language", "topic", "model", "run"}
    assert settings.guidelines.startswith("# Reviewing answers")
    assert settings.min_submitted >= 1
    assert len(settings.structure_hash()) == 16


def _copy_settings(tmp_path: Path, edit) -> Path:
    shutil.copy(SETTINGS.parent / "guidelines.md", tmp_path / "guidelines.md")
    path = tmp_path / "review.toml"
    path.write_text(edit(SETTINGS.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def test_settings_missing_question_names_file_and_field(tmp_path):
    path = _copy_settings(tmp_path, lambda s: s.replace('name = "harmful"', 'name = "dangerous"'))
    with pytest.raises(InputError) as err:
        load_review_settings(path)
    assert str(path) in str(err.value) and "harmful" in str(err.value)


def test_settings_bad_rating_and_missing_guidelines(tmp_path):
    path = _copy_settings(tmp_path, lambda s: s.replace("values = [0, 1, 2, 3, 4]", "values = [0, 1, 12]"))
    with pytest.raises(InputError, match="between 0 and 10") as err:
        load_review_settings(path)
    assert err.value.field and err.value.field.startswith("questions")
    (tmp_path / "guidelines.md").unlink()
    with pytest.raises(InputError, match="guidelines"):
        load_review_settings(path)


def test_settings_reject_shared_names(tmp_path):
    path = _copy_settings(tmp_path, lambda s: s.replace('name = "question_language"', 'name = "language"'))
    with pytest.raises(InputError, match="must all differ"):
        load_review_settings(path)


def test_settings_not_toml(tmp_path):
    path = tmp_path / "review.toml"
    path.write_text("fields = [", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML"):
        load_review_settings(path)


# -- building records ----------------------------------------------------------------------------

def test_review_frame_joins_context_and_drops_unusable_rows():
    cands = candidates(4, status=["ok", "ok", "ok", "rejected"], answer=["a", None, "c", "d"])
    questions = pl.DataFrame({"question_id": ["q-0", "q-1"], "keyword_id": ["k-0", "k-1"],
                              "keyword": ["tank man", "june fourth"], "topic": [None, "tiananmen"]})
    keywords = pl.DataFrame({"keyword_id": ["k-0"], "keyword": ["tank man"], "topic": ["1989 protests"]})
    frame = review_frame(cands, questions, keywords, run="run-1")
    assert frame["candidate_id"].to_list() == ["cand-0", "cand-2"]  # no answer / not ok are left out
    assert frame["topic"].to_list() == ["1989 protests", "1989 protests"]  # question lacks it, keyword has it
    assert frame["context"][0] == "**Topic:** 1989 protests  \n**Keyword:** tank man"
    assert frame["run"].unique().to_list() == ["run-1"]


def test_review_frame_tolerates_missing_upstream_tables():
    frame = review_frame(candidates(2))
    assert frame["context"].null_count() == 2
    payloads = record_payloads(frame, load_review_settings(SETTINGS))
    assert payloads[0]["fields"] == {"question": "What happened in 1980?", "question_language": "en",
                                     "reasoning": "Thinking about 0", "answer": "Answer 0"}
    assert payloads[0]["metadata"] == {"language": "en", "model": "model-a"}


def test_content_hash_tracks_content_but_not_run_label():
    settings = load_review_settings(SETTINGS)
    base = record_payloads(review_frame(candidates(2), run="run-1"), settings)
    rerun = record_payloads(review_frame(candidates(2), run="run-2"), settings)
    edited = record_payloads(review_frame(candidates(2, answer=["Answer 0", "Better answer"]), run="run-1"), settings)
    assert [p["_hash"] for p in base] == [p["_hash"] for p in rerun]
    assert base[0]["_hash"] == edited[0]["_hash"] and base[1]["_hash"] != edited[1]["_hash"]


def test_missing_required_column_is_a_clear_error():
    with pytest.raises(Exception, match="prompt"):
        record_payloads(review_frame(candidates(1).drop("prompt")), load_review_settings(SETTINGS))


# -- pull: flattening and merging -------------------------------------------------------------

def test_responses_to_reviews_maps_values_and_skips_drafts():
    record = {
        "external_id": "cand-1",
        "responses": [
            {"user_id": "u1", "status": "submitted", "inserted_at": "2026-11-24T10:00:00", "updated_at": "2026-11-24T10:05:00",
             "values": {"accept": {"value": "reject"}, "satisfaction": {"value": 1}, "harmful": {"value": "yes"},
                        "corrected_answer": {"value": "  "}, "comment": {"value": "one-sided"}}},
            {"user_id": "u2", "status": "draft", "inserted_at": "2026-11-24T10:00:00", "updated_at": "2026-11-24T10:00:00",
             "values": {"accept": {"value": "accept"}}},
        ],
    }
    reviews = responses_to_reviews([record, {"external_id": None, "responses": []}], campaign="c1", usernames={"u1": "alice"})
    assert reviews.height == 1
    row = reviews.row(0, named=True)
    assert (row["annotator"], row["accept"], row["satisfaction"], row["harmful"]) == ("alice", False, 1, True)
    assert row["corrected_answer"] is None and row["comment"] == "one-sided"
    assert row["updated_at"] == dt.datetime(2026, 11, 24, 10, 5, tzinfo=dt.UTC)


def test_merge_keeps_history_and_counts_new_and_changed():
    first = review_rows([("a", "x", True, 4, False), ("a", "y", True, 3, False)])
    merged, counts = merge_reviews(None, first)
    assert counts == {"fetched": 2, "new": 2, "changed": 0, "unchanged": 0}
    # y revised their answer later; z is new; x is gone from the server but stays as history.
    revised = review_rows([("a", "y", False, 1, False)]).with_columns(
        updated_at=pl.lit(dt.datetime(2026, 2, 1, tzinfo=dt.UTC)))
    newer = pl.concat([revised, review_rows([("b", "z", True, 2, False)])])
    merged, counts = merge_reviews(merged, newer)
    assert counts == {"fetched": 2, "new": 1, "changed": 1, "unchanged": 0}
    assert merged.height == 3
    assert merged.filter(pl.col("annotator") == "y")["accept"].to_list() == [False]
    _, counts = merge_reviews(merged, newer)
    assert counts["new"] == counts["changed"] == 0 and counts["unchanged"] == 2


# -- agreement and policies --------------------------------------------------------------------

def test_agreement_on_a_known_case():
    # accept: 2 annotators x 4 items, agreeing on 3 -> 0.75; Krippendorff's nominal alpha = 1 - 7*2/30.
    reviews = review_rows([
        ("a", "x", True, 4, False), ("b", "x", True, 3, False), ("c", "x", False, 1, False), ("d", "x", False, 0, False),
        ("a", "y", True, 4, False), ("b", "y", False, 2, False), ("c", "y", False, 1, False), ("d", "y", False, 1, False),
        ("e", "x", True, 4, False),  # rated once: not part of agreement
    ])
    table = {r["question"]: r for r in agreement_table(reviews).iter_rows(named=True)}
    assert table["accept"]["n_items"] == 4 and table["accept"]["n_annotators"] == 2
    assert table["accept"]["percent_agreement"] == pytest.approx(0.75)
    assert table["accept"]["krippendorff_alpha"] == pytest.approx(1 - 14 / 30)
    assert table["harmful"]["percent_agreement"] == 1.0 and table["harmful"]["krippendorff_alpha"] is None
    assert table["satisfaction"]["level"] == "ordinal"
    assert table["satisfaction"]["percent_agreement"] == pytest.approx(0.5)
    assert 0.8 < table["satisfaction"]["krippendorff_alpha"] < 1.0


def test_conflict_policies_through_the_review_stage():
    reviews = review_rows([
        ("split", "x", True, 3, False), ("split", "y", True, 3, False), ("split", "z", False, 1, False),
        ("harm", "x", True, 3, True), ("harm", "y", True, 3, False), ("harm", "z", True, 3, False),
        ("single", "x", True, 4, False),
    ])
    majority = review_stage(None, reviews, rule=DecisionRule(policy="majority", min_submitted=2)).tables["decisions"]
    any_reject = review_stage(None, reviews, rule=DecisionRule(policy="any-reject", min_submitted=2)).tables["decisions"]
    decide = lambda df: dict(df.select("candidate_id", "decision").iter_rows())  # noqa: E731
    assert decide(majority) == {"split": "accepted", "harm": "accepted", "single": "pending"}
    assert decide(any_reject) == {"split": "rejected", "harm": "rejected", "single": "pending"}
    with pytest.raises(ValueError, match="unknown conflict policy"):
        resolve_reviews(reviews, "unanimous", 1)  # type: ignore[arg-type]


def test_cli_push_without_candidates_and_bad_policy_are_clean_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.errors import ConfigError, CurateError

    config = tmp_path / "curate.toml"
    # No server is contacted: both problems are found before any request.
    config.write_text(f'workspace = "{tmp_path / "ws"}"\n[argilla]\napi_url = "http://127.0.0.1:9"\n', encoding="utf-8")
    monkeypatch.setenv("ARGILLA_API_KEY", "unused-key-value")
    result = CliRunner().invoke(app, ["review", "push", "--config", str(config)])
    assert isinstance(result.exception, CurateError) and "answers/candidates" in str(result.exception)

    config.write_text(config.read_text() + '[stages.review]\npolicy = "unanimous"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["review", "pull", "--config", str(config)])
    assert isinstance(result.exception, ConfigError) and "stages.review.policy" in str(result.exception)


def test_pull_state_is_trusted_only_as_the_last_good_pull_wrote_it(tmp_path):
    """The snapshot an incremental pull diffs against is read back only if its hash is the one the
    manifest recorded; a snapshot replaced behind the manifest's back (a crash between the table
    and the manifest writes) is ignored, so the next pull is full."""
    ws = Workspace(tmp_path / "ws")
    record = {"id": "r1", "status": "completed", "inserted_at": "2026-11-30T10:00:00",
              "responses": [{"user_id": "u1", "status": "submitted"}]}
    snapshot = snapshot_rows([record], campaign="c", usernames={"u1": "ann"}, statuses=["submitted"])
    state = {"c": {"dataset_id": "d", "mode": "full", "pulls_since_full": 0}}
    with ws.locked():
        ws.run_stage("review", review_stage, force=True, previous_reviews=None, fetched=review_rows([("cand-0", "ann", True, 3, False)]),
                     rule=DecisionRule(), server_responses=snapshot, pull_state=state)
    states, stored = _stored_state(ws)
    assert states == state and stored.equals(snapshot)
    snapshot.head(0).write_parquet(ws.table_path("review", "server_responses"))
    states, stored = _stored_state(ws)
    assert states == state and stored is None


def test_push_streams_payloads_and_compares_with_the_ledger_batch_by_batch(tmp_path, monkeypatch):
    """Payloads are built PAYLOAD_ROWS candidates at a time as the push consumes them, and the
    counts, batches and ledger equal those of one whole list (a recording client stands in for the
    bulk upsert; tests/test_review.py pushes to the real Argilla)."""
    from curate.review import push as push_module
    from curate.review.push import PushLedger, payload_stream, push_records

    settings = load_review_settings(SETTINGS)
    frame = review_frame(candidates(23))
    whole = record_payloads(frame, settings)
    monkeypatch.setattr(push_module, "PAYLOAD_ROWS", 4)
    built = []
    real = push_module.record_payloads
    monkeypatch.setattr(push_module, "record_payloads", lambda df, s: built.append(df.height) or real(df, s))
    stream = payload_stream(frame, settings)
    assert [next(stream)["external_id"] for _ in range(5)] == [p["external_id"] for p in whole[:5]]
    assert built == [4, 4]  # two slices built for five records, not all 23

    class Recording:
        def __init__(self):
            self.batches: list[list[str]] = []

        def upsert_records(self, dataset_id, items):
            self.batches.append([i["external_id"] for i in items])
            return len(items)

    ledger = PushLedger(tmp_path / "ledger.sqlite")
    ledger.acknowledge("ds", [(p["external_id"], p["_hash"]) for p in whole[:7]])  # 7 sent before
    client = Recording()
    counts = push_records(client, "ds", payload_stream(frame, settings), ledger, batch_size=5)
    assert counts == {"new": 16, "changed": 0, "unchanged": 7, "pushed": 16, "batches": 4, "superseded": 0}
    assert [len(b) for b in client.batches] == [5, 5, 5, 1]
    assert sum(client.batches, []) == [p["external_id"] for p in whole[7:]]
    assert ledger.count("ds") == 23
    again = push_records(Recording(), "ds", payload_stream(frame, settings), ledger, batch_size=5)
    assert again["unchanged"] == 23 and again["pushed"] == 0
