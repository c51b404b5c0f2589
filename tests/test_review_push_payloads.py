"""The review push builds its records' content hashes and answer versions with polars (#17, the
push's client time): the records, their ids, suggestions, metadata and the ledger must be those the
per-row code built before. `reference_payloads` below is that code, kept here as the definition;
the push through `push_workspace` is also pinned by a digest the per-row code produced.

A recording stand-in (`RecordingArgilla`) takes the records instead of a server, so every byte sent
can be compared; tests/test_review_push_routed_first.py pushes the same workspace to the real Argilla.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from bench.release_workspace import write_workspace
from bench.review_push_memory import judgments_for
from curate.review.identity import answer_version, json_string, record_key, with_answer_version
from curate.review.push import UNHASHED_METADATA, PushLedger, push_workspace, record_payloads, review_frame
from curate.review.routing import RoutingConfig
from curate.review.settings import load_review_settings
from curate.review.suggestions import attach_suggestions, record_suggestions
from curate.workspace import Workspace
from tests.test_review_units import SETTINGS, _copy_settings, candidates

# Text json.dumps escapes (quotes, backslashes, every control character) next to text it does not
# (non-ASCII, U+2028, DEL, astral characters).
HOSTILE = ['say "no"', "back\\slash \\u0041", "tab\there\nnew\rline\b\f", "".join(chr(c) for c in range(32)),
           "中文 é ü", "line\u2028sep\u2029", "del\x7f", "emoji \U0001f600", " ", "\\", '"', "{}", "a@b"]
# sha256 of `pushed_record_digest`'s canonical JSON as the per-row code (before #17's push change) wrote it.
PINNED_PUSH_DIGEST = "be05e143bf996200fb2eb09debc101dc1dde7cd7b8b9a289ed97351b19f582d0"


def reference_payloads(df: pl.DataFrame, settings, question_ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The per-row record building of the push before it moved to polars: one `str()`, one
    `json.dumps` and one sha256 per record, and the suggestions folded into the hash."""
    payloads = []
    for row in df.iter_rows(named=True):
        fields = {f.name: str(row[f.source]) for f in settings.fields if row.get(f.source) not in (None, "")}
        metadata = {m.name: str(row[m.source]) for m in settings.metadata if row.get(m.source) not in (None, "")}
        hashed = {"fields": fields, "metadata": {k: v for k, v in metadata.items() if k not in UNHASHED_METADATA}}
        digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        key = record_key(row["candidate_id"], answer_version(row.get("reasoning"), row.get("answer")))
        payload: dict[str, Any] = {"external_id": key, "fields": fields, "metadata": metadata, "_hash": digest}
        if question_ids is not None:
            suggestions = [
                {"question_id": question_ids[s["question_name"]], "type": "model", "value": s["value"],
                 "agent": s["agent"], **({"score": s["score"]} if s["score"] is not None else {})}
                for s in record_suggestions(row) if s["question_name"] in question_ids
            ]
            if suggestions:
                payload["suggestions"] = suggestions
                blob = json.dumps([digest, [{k: v for k, v in s.items() if k != "question_id"} for s in suggestions]],
                                  sort_keys=True, ensure_ascii=False)
                payload["_hash"] = hashlib.sha256(blob.encode()).hexdigest()
        payloads.append(payload)
    return payloads


class RecordingArgilla:
    """STAND-IN for the Argilla client: the dataset calls succeed and every record sent is kept."""

    def __init__(self, settings):
        self.settings, self.sent = settings, []

    def workspace_id(self, name: str, *, create: bool = True) -> str:
        return "ws-id"

    def find_dataset(self, name: str, workspace_id: str) -> dict | None:
        return None

    def create_dataset(self, name: str, workspace_id: str, settings, **kwargs) -> dict:
        return {"id": "ds-id", "status": "ready", "distribution": {}, "metadata": {}}

    def questions(self, dataset_id: str) -> list[dict]:
        return [{"name": q.name, "id": f"id-{q.name}"} for q in self.settings.questions]

    def upsert_records(self, dataset_id: str, items: list[dict]) -> int:
        self.sent += items
        return len(items)


def test_record_payloads_equal_the_per_row_code_on_hostile_text(tmp_path):
    n = 3 * len(HOSTILE)
    pick = lambda i: HOSTILE[i % len(HOSTILE)]  # noqa: E731
    frame = review_frame(candidates(
        n, prompt=[pick(i) for i in range(n)], answer=[pick(i + 1) for i in range(n)],
        reasoning=[None if i % 5 == 0 else "" if i % 5 == 1 else pick(i + 2) for i in range(n)],
        model=[None if i % 4 == 0 else "" if i % 4 == 1 else pick(i + 3) for i in range(n)],
    ).with_columns(topic=pl.Series([None if i % 3 else pick(i) for i in range(n)], dtype=pl.String)))
    settings = load_review_settings(SETTINGS)
    assert record_payloads(frame, settings) == reference_payloads(frame, settings)
    # Sources that are not text: integers, floats, booleans and nulls, written as str() writes them.
    typed = _copy_settings(tmp_path, lambda t: t.replace('source = "model"', 'source = "score"')
                           .replace('source = "topic"', 'source = "flag"').replace('source = "run"', 'source = "candidate_index"'))
    frame = frame.with_columns(score=pl.Series([None, 0.1, 1e-7, 2.0, float("nan")] * (n // 5) + [3.5] * (n % 5)),
                               flag=pl.Series([True, False, None] * (n // 3)), candidate_index=pl.int_range(-2, n - 2))
    settings = load_review_settings(typed)
    assert record_payloads(frame, settings) == reference_payloads(frame, settings)
    assert record_payloads(frame.clear(), settings) == []


def test_json_string_writes_what_json_dumps_writes():
    texts = [chr(c) for c in range(0x3000) if not 0xD800 <= c <= 0xDFFF] + ["\U0001f600", "\U0010ffff", *HOSTILE, ""]
    got = pl.DataFrame({"t": [*texts, None]}).select(json_string(pl.col("t"))).to_series().to_list()
    assert got == [json.dumps(t, ensure_ascii=False) for t in texts] + [None]


def test_answer_versions_equal_the_per_row_definition():
    texts = [None, *HOSTILE]
    frame = pl.DataFrame({"reasoning": [texts[i % len(texts)] for i in range(60)],
                          "answer": [texts[(i * 7) % len(texts)] for i in range(60)]})
    assert with_answer_version(frame)["answer_version"].to_list() == [answer_version(r, a) for r, a in frame.iter_rows()]
    # An all-null column (dtype Null) reads as empty text, as None did.
    assert with_answer_version(frame.with_columns(reasoning=None))["answer_version"].to_list() == [
        answer_version(None, a) for a in frame["answer"]]


def pushed_record_digest(root: Path) -> tuple[str, list[dict], dict[str, str]]:
    """Push a routed workspace with hostile answers to the recording stand-in: a digest of every
    record sent and the ledger's keys and hashes, the records and the ledger."""
    ws = write_workspace(root, 480, review_every=1000, edge_cases=True)
    written = pl.read_parquet(ws.table_path("answers", "candidates"))
    hostile = pl.Series([HOSTILE[i % len(HOSTILE)] for i in range(written.height)])
    written = written.with_columns(answer=pl.when(pl.int_range(pl.len()) % 3 == 0).then(
        pl.col("answer") + pl.lit(" ") + hostile).otherwise(pl.col("answer")))
    ws.run_stage("answers", lambda: {"candidates": written}, force=True)
    ws.run_stage("judge", lambda: {"judgments": judgments_for(ws)}, force=True)
    settings = load_review_settings(SETTINGS)
    client = RecordingArgilla(settings)
    report = push_workspace(ws, client, settings, campaign="c", workspace="w", min_submitted=1, run="fixed-run",
                            routing=RoutingConfig(), batch_size=10)
    assert report.pushed == len(client.sent) and report.new == report.pushed and report.batches > 1
    keys = [r["external_id"] for r in client.sent]
    ledger = PushLedger.for_workspace(ws).lookup("ds-id", keys)
    canonical = json.dumps({"sent": client.sent, "ledger": sorted(ledger.items())}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest(), client.sent, ledger


def test_push_sends_and_records_what_the_per_row_code_did(tmp_path):
    digest, sent, ledger = pushed_record_digest(tmp_path / "ws")
    ws = Workspace(tmp_path / "ws")
    # The frame the push sends, rebuilt from its public pieces, through the per-row code.
    from curate.review.suggestions import with_judgments, with_source_question

    questions = ws.read("questions/questions")
    frame = review_frame(ws.read("answers/candidates"), questions, ws.read("keywords/keywords"), run="fixed-run")
    frame = with_judgments(with_source_question(frame, questions), ws.read("judge/judgments"), ws.read("route/routing"))
    settings = load_review_settings(SETTINGS)
    expected = reference_payloads(frame, settings, {q.name: f"id-{q.name}" for q in settings.questions})
    assert sent == [{k: v for k, v in p.items() if k != "_hash"} for p in expected]
    assert ledger == {p["external_id"]: p["_hash"] for p in expected}
    assert any("suggestions" in p for p in sent) and any("\\" in p["fields"]["answer"] for p in sent)
    assert digest == PINNED_PUSH_DIGEST


@pytest.mark.parametrize(("columns", "score"), [(["candidate_id", "satisfaction", "satisfaction_min", "satisfaction_max",
                                                  "judges", "answer"], 0.5),
                                                (["candidate_id", "satisfaction", "judges"], 1.0), (["candidate_id"], None)])
def test_suggestions_read_only_the_judge_columns_with_the_same_result(columns, score):
    """attach_suggestions reads the judge columns it needs, not the texts; a frame without some of
    them gets the suggestions of the columns it has."""
    frame = pl.DataFrame({"candidate_id": ["a", "b"], "satisfaction": [3.4, None], "satisfaction_min": [3, None],
                          "satisfaction_max": [4, None], "judges": ["j1, j2", None], "answer": ["x", "y"]}).select(columns)
    payloads = [{"external_id": "a@v", "_hash": "h"}, {"external_id": "b", "_hash": "h"}]
    attach_suggestions(payloads, frame, {"satisfaction": "q1", "harmful": "q2"})
    expected = [{"question_id": "q1", "type": "model", "value": 3, "agent": "j1 j2", "score": score}] if score else None
    assert payloads[0].get("suggestions") == expected and "suggestions" not in payloads[1]
