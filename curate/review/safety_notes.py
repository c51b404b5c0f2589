"""What a person sees on a safety row the inverse filter could not decide (`safety_filter/review`).

The filter adds these columns, in the names the review push reads (curate/review/suggestions.py),
so `curate review push --source safety_filter/review` sends the rows like the judge stage's:

    judge_notes              why the row needs a person, and every verdict the filter had
    harmful, harm_votes      the harm judge's verdict (reasoning or answer), suggested on `harmful`
    satisfaction(_min/_max)  the 0-4 rubric's score, suggested on `satisfaction`
    judges, rubrics          named in each suggestion's agent
    route_reason             the review reason
"""

from __future__ import annotations

from typing import Any

import polars as pl

WHY = {
    "harm_judge_failed": "the harm judge failed, so nobody has checked this answer for harm; it is never released "
                         "without your accept",
    "refusal_judge_failed": "the refusal judge failed, so the filter cannot tell whether it declines",
    "satisfaction_judge_failed": "the best-of-K judge failed, so this candidate could not be ranked",
    "uncertain_best": "the refusal detector is unsure whether this best candidate declines",
}
EXPECTED = {"harmful": "decline, say why and offer a safe alternative", "benign": "help (a refusal is an over-refusal)"}


def _verdict(value: bool | None) -> str:
    return "not judged" if value is None else ("harmful" if value else "not harmful")


def _note(row: dict[str, Any]) -> str:
    reason = row.get("review_reason") or "review"
    lines = [f"**Routed to you:** {reason}: {WHY.get(reason, 'the filter could not decide')}",
             f"**Expected behaviour** ({row.get('expected') or 'harmful'} prompt): "
             f"{EXPECTED.get(row.get('expected') or 'harmful', EXPECTED['harmful'])}",
             f"**Harm judge:** reasoning {_verdict(row.get('harmful_reasoning'))}, answer {_verdict(row.get('harmful_answer'))}"]
    if row.get("refusal_score") is not None:
        kind = f" ({row['refusal_kind']})" if row.get("refusal_kind") else ""
        lines.append(f"**Refusal probability:** {row['refusal_score']:.2f}{kind}")
    if row.get("satisfaction") is not None:
        lines.append(f"**Judge satisfaction:** {row['satisfaction']}")
    if row.get("reject_detail"):
        lines.append(f"**Detail:** {str(row['reject_detail'])[:300]}")
    lines.append(f"**Judges:** {row.get('judges') or '-'}")
    return "  \n".join(lines)


def review_notes(review: pl.DataFrame, *, judge: str | None, rubrics: str) -> pl.DataFrame:
    """`review` plus the suggestion columns and `judge_notes` (module docstring)."""
    for column, dtype in (("harmful_reasoning", pl.Boolean), ("harmful_answer", pl.Boolean),
                          ("satisfaction", pl.Int64), ("refusal_score", pl.Float64), ("refusal_kind", pl.String),
                          ("reject_detail", pl.String), ("review_reason", pl.String), ("expected", pl.String)):
        if column not in review.columns:
            review = review.with_columns(pl.lit(None, dtype).alias(column))
    # Kleene OR: harmful when either part was judged harmful, null when a part failed and the other
    # was not harmful, so a failed judgment suggests nothing.
    harmful = pl.col("harmful_reasoning") | pl.col("harmful_answer")
    out = review.with_columns(
        harmful=harmful,
        satisfaction_min=pl.col("satisfaction"), satisfaction_max=pl.col("satisfaction"),
        judges=pl.lit(f"safety_filter={judge or 'judge'}"), rubrics=pl.lit(rubrics),
        route_reason=pl.col("review_reason"), policy_decision=pl.lit(None, pl.String),
    ).with_columns(harm_votes=pl.col("harmful").cast(pl.Int64), satisfaction=pl.col("satisfaction").cast(pl.Float64))
    notes = [_note(r) for r in out.iter_rows(named=True)]
    return out.with_columns(pl.Series("judge_notes", notes, dtype=pl.String))
