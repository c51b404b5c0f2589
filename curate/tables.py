"""Every workspace table, by name: `stage/table` references as constants.

The stage declarations and `curate.pipeline` read and write tables through these names, so a
table's name is spelt once. (Kept apart from `curate.pipeline`, which re-exports them, because
the stage modules import them and `curate.pipeline` imports the stage modules.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableRef:
    """One table of a workspace: the stage that writes it and the table's name."""

    stage: str
    table: str

    def __str__(self) -> str:
        return f"{self.stage}/{self.table}"

    @classmethod
    def parse(cls, ref: str | TableRef) -> TableRef:
        if isinstance(ref, TableRef):
            return ref
        stage, sep, table = ref.partition("/")
        if not sep or not stage or not table:
            raise ValueError(f"table reference '{ref}' is not stage/table")
        return cls(stage, table)


SEEDS = TableRef("ingest", "seeds")
INGEST_REJECTS = TableRef("ingest", "rejects")
BLOCKED_PROBES = TableRef("blocked", "probes")
BLOCKED_SEEDS = TableRef("blocked", "seeds")
KEYWORDS = TableRef("keywords", "keywords")
KEYWORD_REJECTS = TableRef("keywords", "rejects")
QUESTIONS = TableRef("questions", "questions")
QUESTION_REJECTS = TableRef("questions", "rejects")
TRANSLATIONS = TableRef("translate", "translations")
DEDUPED_TRANSLATIONS = TableRef("dedupe", "translations")
DEDUPE_CLUSTERS = TableRef("dedupe", "clusters")
DEDUPE_NEAR_PAIRS = TableRef("dedupe", "pairs_near_threshold")
DEDUPE_VERIFICATIONS = TableRef("dedupe", "verifications")
CANDIDATES = TableRef("answers", "candidates")
ANSWER_REJECTS = TableRef("answers", "rejects")
# judge_score: each candidate's scores, shard by shard; judge: best of K and pairs from them.
JUDGE_SCORED = TableRef("judge_score", "scored")
JUDGE_SCORE_SCORES = TableRef("judge_score", "scores")
JUDGMENTS = TableRef("judge", "judgments")
JUDGE_SCORES = TableRef("judge", "scores")
PREFERENCES = TableRef("judge", "preferences")
ROUTING = TableRef("route", "routing")
REVIEWS = TableRef("review", "reviews")
REVIEW_AGREEMENT = TableRef("review", "agreement")
REVIEW_DECISIONS = TableRef("review", "decisions")
REVIEW_SERVER_RESPONSES = TableRef("review", "server_responses")  # incremental pull state
RELEASE_ROWS = TableRef("release", "rows")
# The safety flow (curate.pipeline.SAFETY; docs/safety.md).
SAFETY_PROMPTS = TableRef("safety_prompts", "prompts")
SAFETY_TRANSLATED = TableRef("safety_translate", "prompts")
SAFETY_CANDIDATES = TableRef("safety_answers", "candidates")
SAFETY_KEPT = TableRef("safety_filter", "kept")
SAFETY_REJECTS = TableRef("safety_filter", "rejects")
SAFETY_SELECTED = TableRef("safety_filter", "selected")
SAFETY_REVIEW = TableRef("safety_filter", "review")
