"""What the judge adds to a review record: suggestions on its questions, the source-language
question of a translated item, and a note saying why the record reached a person.

Suggestions (Argilla shows them pre-filled; the reviewer confirms or corrects):

    satisfaction  the judges' mean, rounded; score = 1 when all judges agree, 0.5 when they differ
    harmful       "yes" when any judge says harmful; score = share of judges that agree with it
    accept        the routing policy's decision, when it makes one (no score: it is a rule, not a model)

Each suggestion's agent names the judge(s) and rubric version, e.g.
`default/smollm2 judge_satisfaction.j2:3f2a...`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import polars as pl

from curate.review.identity import split_record_key

SUGGESTED_QUESTIONS = ("satisfaction", "harmful", "accept")
_AGENT_UNSAFE = re.compile(r"[^A-Za-z0-9\-_:./\s]")
JUDGE_COLUMNS = ("satisfaction", "satisfaction_min", "satisfaction_max", "harmful", "harm_votes", "refused",
                 "refusal_kind", "refusal_score", "language_match", "detected_language", "judges", "rubrics",
                 "judge_error", "best_score")


def with_source_question(frame: pl.DataFrame, questions: pl.DataFrame | None) -> pl.DataFrame:
    """`source_question`: the question as first written, on rows whose language differs from it."""
    if questions is None or not {"question_id", "text", "language"} <= set(questions.columns) or "question_id" not in frame.columns:
        return frame.with_columns(source_question=pl.lit(None, pl.String))
    side = questions.select("question_id", pl.col("text").alias("_src"), pl.col("language").alias("_src_lang")).unique(
        "question_id", keep="first")
    joined = frame.join(side, on="question_id", how="left", maintain_order="left")
    translated = pl.col("_src_lang").is_not_null() & (pl.col("_src_lang") != pl.col("language"))
    source = pl.format("({}) {}", "_src_lang", "_src")
    return joined.with_columns(source_question=pl.when(translated).then(source)).drop("_src", "_src_lang")


def _note(row: dict[str, Any]) -> str:
    lines = [f"**Routed to you:** {row['route_reason'] or 'review'}"]
    if row.get("judge_error"):
        lines.append(f"**Judge failed:** {row['judge_error'][:300]}")
    if row.get("refusal_score") is not None:
        kind = f" ({row['refusal_kind']})" if row.get("refusal_kind") else ""
        lines.append(f"**Refusal probability:** {row['refusal_score']:.2f}{kind}")
    if row.get("language_match") is False:
        lines.append(f"**Language:** answer looks like `{row.get('detected_language')}`, not the question's language")
    if row.get("satisfaction") is not None:
        lines.append(f"**Judge satisfaction:** {row['satisfaction']:.2f} (min {row['satisfaction_min']}, max {row['satisfaction_max']})")
    lines.append(f"**Judges:** {row.get('judges') or '-'}")
    return "  \n".join(lines)


def with_judgments(frame: pl.DataFrame, judgments: pl.DataFrame, routing: pl.DataFrame) -> pl.DataFrame:
    """The candidates routed to people, with the judge columns, route and a `judge_notes` field."""
    judge = judgments.select("candidate_id", *[c for c in JUDGE_COLUMNS if c in judgments.columns])
    routed = routing.filter(pl.col("route") == "human").select("candidate_id", "route_reason", "policy_decision")
    out = frame.join(routed, on="candidate_id", how="inner", maintain_order="left").join(
        judge, on="candidate_id", how="left", maintain_order="left")
    # Row by row inside polars: the notes become a column directly, not a Python list of every row.
    note_columns = [c for c in ("route_reason", *JUDGE_COLUMNS) if c in out.columns]
    notes = pl.struct(note_columns).map_elements(_note, return_dtype=pl.String, skip_nulls=False)
    return out.with_columns(notes.alias("judge_notes"))


# What record_suggestions reads of a row (a column the frame lacks reads as None).
SUGGESTION_COLUMNS = ("satisfaction", "satisfaction_min", "satisfaction_max", "harmful", "harm_votes", "judges",
                      "rubrics", "policy_decision")


def suggestion_agent(judges: str | None, rubrics: str | None) -> str:
    """`local/smollm2 judge_satisfaction.j2:3f2a...`: judges and rubric versions in the characters
    Argilla accepts in an agent (letters, digits, - _ : . / and spaces)."""
    text = f"{judges or 'judge'} {rubrics or ''}".replace("=", "/").replace(", ", " ").replace("@", ":")
    return _AGENT_UNSAFE.sub("-", text).strip()[:200]


def record_suggestions(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Suggestions for one routed row, keyed by question name (question ids are filled in at push)."""
    agent = suggestion_agent(row.get("judges"), row.get("rubrics"))
    out: list[dict[str, Any]] = []
    scores = [row.get("satisfaction_min"), row.get("satisfaction_max")]
    if row.get("satisfaction") is not None:
        value = int(round(row["satisfaction"]))
        agree = 1.0 if scores[0] == scores[1] else 0.5
        out.append({"question_name": "satisfaction", "value": value, "score": agree, "agent": agent})
    if row.get("harmful") is not None:
        n = len((row.get("judges") or "x").split(", "))
        votes = row.get("harm_votes") or 0
        share = votes / n if row["harmful"] else 1 - votes / n
        out.append({"question_name": "harmful", "value": "yes" if row["harmful"] else "no", "score": round(share, 3),
                    "agent": agent})
    if row.get("policy_decision") in ("auto_accept", "auto_reject"):
        out.append({"question_name": "accept", "value": "accept" if row["policy_decision"] == "auto_accept" else "reject",
                    "score": None, "agent": "curate routing policy"})
    return out


def attach_suggestions(payloads: list[dict[str, Any]], frame: pl.DataFrame, question_ids: dict[str, str]) -> None:
    """Add Argilla suggestions to each record payload (in place) and fold them into its content hash,
    so a changed judgment is re-sent."""
    # Only the columns the suggestions read: the row dicts of a slice then hold no answer texts.
    by_id = {r["candidate_id"]: r for r in frame.select(
        "candidate_id", *[c for c in SUGGESTION_COLUMNS if c in frame.columns]).iter_rows(named=True)}
    for payload in payloads:
        row = by_id.get(split_record_key(payload["external_id"])[0])  # keys are <candidate_id>@<answer version>
        if row is None:
            continue
        suggestions = [
            {"question_id": question_ids[s["question_name"]], "type": "model", "value": s["value"], "agent": s["agent"],
             **({"score": s["score"]} if s["score"] is not None else {})}
            for s in record_suggestions(row) if s["question_name"] in question_ids
        ]
        if suggestions:
            payload["suggestions"] = suggestions
            blob = json.dumps([payload["_hash"], [{k: v for k, v in s.items() if k != "question_id"} for s in suggestions]],
                              sort_keys=True, ensure_ascii=False)
            payload["_hash"] = hashlib.sha256(blob.encode()).hexdigest()
