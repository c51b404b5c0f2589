"""Release rows: accepted, reviewed candidates with lineage, and the content hashes that address them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

from curate.errors import InputError
from curate.ids import content_id
from curate.records import ReleaseRow, conform, polars_schema
from curate.release.config import ReleaseConfig
from curate.release.split import with_split
from curate.review.config import DecisionRule
from curate.review.identity import with_answer_version
from curate.review.policy import current_reviews, resolve_reviews
from curate.tables import CANDIDATES, KEYWORDS, QUESTIONS, REVIEWS

RELEASE_COLUMNS: list[str] = list(polars_schema(ReleaseRow).names())

_REQUIRED = {
    str(REVIEWS): ("candidate_id", "campaign", "accept", "status"),
    str(CANDIDATES): ("candidate_id", "translation_id", "question_id", "language", "prompt", "answer"),
    str(QUESTIONS): ("question_id", "keyword_id"),
    str(KEYWORDS): ("keyword_id", "seed_ids"),
}


def require_columns(df: pl.DataFrame, table: str) -> None:
    missing = [c for c in _REQUIRED[table] if c not in df.columns]
    if missing:
        raise InputError(table, f"table lacks column(s) {missing}", field=missing[0])


def row_id_for_candidate(candidate_id: str) -> str:
    # Stable across releases, so a later review that corrects the answer shows up as a change.
    return content_id("row", candidate_id)


def _reviews_frame(reviews: pl.DataFrame) -> pl.DataFrame:
    """Fill optional ReviewItem columns the policy reads, so partial tables still resolve."""
    fill = {
        "harmful": pl.Boolean,
        "satisfaction": pl.Int64,
        "corrected_answer": pl.String,
        "submitted_at": pl.Datetime("us", "UTC"),
        "updated_at": pl.Datetime("us", "UTC"),
        "answer_version": pl.String,
    }
    return reviews.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in fill.items() if c not in reviews.columns])


# The long texts of a candidate: read only to be written out (curate.release.assemble), never to decide.
TEXT_COLUMNS = ("prompt", "reasoning", "answer", "context")
# What the decision reads of a candidate besides its texts (other candidate columns never reach a release row).
FACT_COLUMNS = {*RELEASE_COLUMNS, "candidate_id", "status", "model", "answer_version"} - set(TEXT_COLUMNS)
POSITION = "_pos"  # a candidate's row number in its table: where its texts are joined back from


def candidate_facts(batch: pl.DataFrame, reviewed: pl.Series, offset: int = 0,
                    judged: pl.DataFrame | None = None) -> pl.DataFrame:
    """The small facts the decision needs of a batch of candidates (rows `offset`.. of their table):
    their non-text columns, their position, whether the prompt is missing and the answer blank, and
    the answer version of those in `reviewed` (candidate ids with a review; no other needs one).

    `judged`: those reviewed rows' POSITION, reasoning and answer, when the caller took them out of
    the batch itself (so that `batch` need not hold every reasoning)."""
    keep = [c for c in batch.columns if c in FACT_COLUMNS]
    position = pl.int_range(offset, offset + batch.height, dtype=pl.Int64).alias(POSITION)
    facts = batch.select(
        *keep, position,
        _prompt_null=pl.col("prompt").is_null(),
        _answer_blank=pl.col("answer").str.strip_chars().fill_null("") == "",
    )
    if judged is None:
        texts = [c for c in ("reasoning", "answer") if c in batch.columns]
        judged = batch.select(position, "candidate_id", *texts).filter(pl.col("candidate_id").is_in(reviewed.implode()))
    versions = with_answer_version(judged).select(POSITION, _answer_version="answer_version")
    return facts.join(versions, on=POSITION, how="left", maintain_order="left")


def build_release_rows(
    reviews: pl.DataFrame, candidates: pl.DataFrame, config: ReleaseConfig, **options: Any,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, excluded): one ReleaseRow per accepted candidate, and why every other reviewed candidate is out.

    `options`: decide_rows' keyword arguments (rule, questions, keywords, auto_decisions).

    `rule` is the review decision rule (`curate.review.config.decision_rule`), the one pull uses.
    With `config.include_pending` (a draft), candidates still pending review (fewer than
    min_submitted submitted responses, none at all included) are released too, with their vote
    counts as they stand; rejected candidates stay out either way.

    Reviews of an earlier answer version than the candidate's current one do not count; a
    candidate left with only such reviews is excluded as `answer_changed_since_review` (a draft
    releases it as pending). The answer is the reviewers' correction when there is one
    (answer_corrected=True, reasoning_matches_answer=False). Topic comes
    from the question, else the keyword; seed IDs come from the keyword.

    The whole table in memory; the release stage decides the same way from `candidate_facts` and
    joins the texts back in bounded memory (curate.release.assemble).
    """
    require_columns(reviews, str(REVIEWS))
    require_columns(candidates, str(CANDIDATES))
    facts = candidate_facts(candidates, reviews["candidate_id"])
    accepted, excluded = decide_rows(reviews, facts, config, **options)
    return with_texts(accepted, texts_of(candidates)), excluded


def texts_of(candidates: pl.DataFrame) -> pl.DataFrame:
    """The candidates' text columns with their POSITION, for `with_texts`."""
    return candidates.select(pl.int_range(0, candidates.height, dtype=pl.Int64).alias(POSITION),
                             *[c for c in TEXT_COLUMNS if c in candidates.columns])


def decide_rows(
    reviews: pl.DataFrame,
    facts: pl.DataFrame,
    config: ReleaseConfig,
    *,
    rule: DecisionRule | None = None,
    questions: pl.DataFrame | None = None,
    keywords: pl.DataFrame | None = None,
    auto_decisions: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted, excluded) from the candidates' facts (`candidate_facts`), without their texts:
    `accepted` holds one row per released candidate, sorted by row_id, with every column of its
    release row but the texts, and the position and correction `with_texts` needs."""
    require_columns(reviews, str(REVIEWS))
    reviews = _reviews_frame(reviews)
    if config.campaigns:
        reviews = reviews.filter(pl.col("campaign").is_in(config.campaigns))
    rule = rule or DecisionRule()
    ok_candidates = facts.filter(pl.col("status") == "ok") if "status" in facts.columns else facts
    # Only verdicts on the text being released count; reviews of an earlier answer are stale.
    # Only reviewed candidates have a version (candidate_facts); the others cannot make a review stale.
    current = ok_candidates.filter(pl.col("_answer_version").is_not_null()).select(
        "candidate_id", answer_version="_answer_version")
    reviews, stale = current_reviews(reviews, current)
    decisions = resolve_reviews(reviews, rule.policy, rule.min_submitted)
    if auto_decisions is not None:
        # The judge's routing decides rows people did not (curate.release.auto); a person's decision wins.
        by_people = decisions.filter(pl.col("decision") != "pending").select("candidate_id")
        auto = auto_decisions.join(by_people, on="candidate_id", how="anti")
        decisions = pl.concat([decisions.join(auto.select("candidate_id"), on="candidate_id", how="anti"), auto],
                              how="diagonal_relaxed")
    if config.include_pending:
        decisions = _with_unreviewed(decisions, ok_candidates)
    rereview = (
        stale.filter(pl.col("status") == "submitted").select("candidate_id").unique()
        .join(decisions, on="candidate_id", how="anti")
        .with_columns(exclude_reason=pl.lit("answer_changed_since_review"),
                      **{c: pl.lit(0, pl.Int64) for c in ("n_reviews", "accept_votes", "reject_votes", "harmful_votes")})
    )
    campaigns = (
        reviews.filter(pl.col("status") == "submitted")
        .group_by("candidate_id")
        .agg(review_campaigns=pl.col("campaign").unique().sort())
    )
    joined = decisions.join(
        ok_candidates.drop("_answer_version").unique("candidate_id", keep="first", maintain_order=True),
        on="candidate_id", how="left", suffix="_candidate",
    )
    joined = joined.join(campaigns, on="candidate_id", how="left")

    released_decisions = ["accepted", "pending"] if config.include_pending else ["accepted"]
    corrected = pl.col("corrected_answer")
    # The answer released is the correction when there is one: blank when that (or else the answer) is.
    blank = pl.when(corrected.is_not_null()).then(corrected.str.strip_chars() == "").otherwise(pl.col("_answer_blank"))
    reason = (
        pl.when(pl.col("_prompt_null").fill_null(True))
        .then(pl.lit("unknown_candidate"))
        .when(~pl.col("decision").is_in(released_decisions))
        .then(pl.col("decision"))
        .when(blank)
        .then(pl.lit("no_answer"))
    )
    joined = joined.with_columns(exclude_reason=reason)
    excluded_columns = ["candidate_id", "exclude_reason", "n_reviews", "accept_votes", "reject_votes", "harmful_votes"]
    excluded = pl.concat([joined.filter(pl.col("exclude_reason").is_not_null()).select(excluded_columns),
                          rereview.select(excluded_columns)])
    accepted = joined.filter(pl.col("exclude_reason").is_null())
    # What the rows and with_texts need; the decision's own columns stop here (less to join and sort).
    accepted = accepted.select([c for c in accepted.columns if c in RELEASE_COLUMNS or c in (POSITION, "corrected_answer")])
    accepted = accepted.with_columns(
        row_id=pl.col("candidate_id").map_elements(row_id_for_candidate, return_dtype=pl.String),
        source=pl.lit("curate"),
    )
    accepted = with_split(_attach_lineage(accepted, questions, keywords), config.test_fraction, config.split_seed)
    return accepted.sort("row_id"), excluded.sort("candidate_id")


def with_texts(accepted: pl.DataFrame, texts: pl.DataFrame) -> pl.DataFrame:
    """`accepted` (decide_rows' rows, or a slice of them) as ReleaseRows, in their order, with their
    texts from `texts` (POSITION plus the text columns of the candidates at those positions)."""
    rows = accepted.join(texts, on=POSITION, how="left", maintain_order="left")
    if "reasoning" not in rows.columns:
        rows = rows.with_columns(reasoning=pl.lit(None, dtype=pl.String))
    rows = rows.with_columns(
        answer_corrected=pl.col("corrected_answer").is_not_null() & (pl.col("corrected_answer") != pl.col("answer")),
        answer=pl.coalesce("corrected_answer", "answer"),
    ).with_columns(
        # The model's reasoning led to its own answer, not to a reviewer's replacement.
        reasoning_matches_answer=~pl.col("answer_corrected"),
    )
    return conform(rows, ReleaseRow)


def _with_unreviewed(decisions: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Decisions plus a `pending` one with zero votes for every candidate nobody has submitted yet."""
    unreviewed = candidates.select("candidate_id").unique().join(decisions, on="candidate_id", how="anti")
    unreviewed = unreviewed.with_columns(
        n_reviews=pl.lit(0, pl.Int64),
        accept_votes=pl.lit(0, pl.Int64),
        reject_votes=pl.lit(0, pl.Int64),
        harmful_votes=pl.lit(0, pl.Int64),
        decision=pl.lit("pending"),
        accepted=pl.lit(False),
    )
    return pl.concat([decisions, unreviewed], how="diagonal_relaxed")


def _attach_lineage(rows: pl.DataFrame, questions: pl.DataFrame | None, keywords: pl.DataFrame | None) -> pl.DataFrame:
    topic = pl.lit(None, dtype=pl.String)
    if questions is not None:
        require_columns(questions, str(QUESTIONS))
        q = questions.select(
            "question_id",
            "keyword_id",
            (pl.col("topic") if "topic" in questions.columns else pl.lit(None, pl.String)).alias("question_topic"),
        ).unique("question_id", keep="first")
        rows = rows.join(q, on="question_id", how="left")
        topic = pl.col("question_topic")
    if keywords is not None and "keyword_id" in rows.columns:
        require_columns(keywords, str(KEYWORDS))
        k = keywords.select(
            "keyword_id",
            "seed_ids",
            (pl.col("topic") if "topic" in keywords.columns else pl.lit(None, pl.String)).alias("keyword_topic"),
        ).unique("keyword_id", keep="first")
        rows = rows.join(k, on="keyword_id", how="left")
        topic = pl.coalesce(topic, pl.col("keyword_topic"))
    return rows.with_columns(topic=topic)


def row_hashes(rows: pl.DataFrame) -> pl.Series:
    """sha256 of each row's canonical JSON. Python's json, not polars' hash: it must not change
    when a library is upgraded, or old releases would stop verifying."""
    # Values in sorted-column order as a JSON array; content_hash also hashes the column names.
    cols = sorted(rows.columns)
    return pl.Series(
        "row_sha256",
        [
            hashlib.sha256(json.dumps(r, ensure_ascii=False, default=str).encode()).hexdigest()
            for r in rows.select(cols).iter_rows()
        ],
        dtype=pl.String,
    )


def content_hash_v1(rows: pl.DataFrame) -> str:
    """Hash scheme v1 of a release's content: its columns and every (row_id, row hash), order-independent.

    Sorts the whole release in memory; new releases use v2 (curate.release.stream), and v1 stays
    only so releases written before v2 still verify."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(rows.columns)).encode())
    pairs = pl.DataFrame({"row_id": rows["row_id"], "row_sha256": row_hashes(rows)}).sort("row_id")
    for row_id, digest in pairs.iter_rows():
        h.update(f"\n{row_id}\t{digest}".encode())
    return h.hexdigest()


def counts(rows: pl.DataFrame, column: str, weight: str | None = None) -> dict[str, int]:
    """Rows per value of `column`, most first (ties by value, none last). `weight`: a column of row
    counts to add up instead of counting rows (a tally of groups, curate.release.parts)."""
    if rows.is_empty():
        return {}
    size = pl.col(weight).sum() if weight else pl.len()
    grouped = rows.group_by(column).agg(len=size).sort(["len", column], descending=[True, False], nulls_last=True)
    return {("(none)" if k is None else str(k)): int(v) for k, v in grouped.iter_rows()}
