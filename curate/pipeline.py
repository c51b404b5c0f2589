"""The curation pipeline: its stages in order, and the tables they pass along.

Adding a stage means writing its module (a function and its `STAGE` declaration) and adding it
to `CURATION` here; the command line, `curate run` and the Prefect flows all read this table.
"""

from __future__ import annotations

from curate.stages import (
    answers,
    blocked,
    dedupe,
    ingest,
    judge,
    judge_score,
    keywords,
    questions,
    safety_answers,
    safety_filter,
    safety_prompts,
    safety_translate,
    translate,
)
from curate.stages.declaration import Stage
from curate.tables import (
    ANSWER_REJECTS,
    BLOCKED_PROBES,
    BLOCKED_SEEDS,
    CANDIDATES,
    DEDUPE_CLUSTERS,
    DEDUPE_NEAR_PAIRS,
    DEDUPED_TRANSLATIONS,
    KEYWORD_REJECTS,
    KEYWORDS,
    QUESTION_REJECTS,
    QUESTIONS,
    RELEASE_ROWS,
    REVIEW_AGREEMENT,
    REVIEW_DECISIONS,
    REVIEWS,
    SEEDS,
    TRANSLATIONS,
    TableRef,
)

CURATION: tuple[Stage, ...] = (
    ingest.STAGE,
    blocked.STAGE,
    keywords.STAGE,
    questions.STAGE,
    translate.STAGE,
    dedupe.STAGE,
    answers.STAGE,
    judge_score.STAGE,
    judge.STAGE,
)
# After the stages, a curation flow sends new candidates to review; `until` and `skip` name it too.
REVIEW_PUSH = "review_push"
STEPS: tuple[str, ...] = (*(stage.name for stage in CURATION), REVIEW_PUSH)
# The safety flow (`curate run --flow safety`, docs/safety.md): safety prompts answered by R1 and
# kept only where the behaviour is safe; releases mix in safety_filter/selected.
SAFETY: tuple[Stage, ...] = (safety_prompts.STAGE, safety_translate.STAGE, safety_answers.STAGE, safety_filter.STAGE)
SAFETY_STEPS: tuple[str, ...] = tuple(stage.name for stage in SAFETY)
STAGES: dict[str, Stage] = {stage.name: stage for stage in CURATION}


def stage(name: str) -> Stage:
    return STAGES[name]


__all__ = [
    "ANSWER_REJECTS", "BLOCKED_PROBES", "BLOCKED_SEEDS", "CANDIDATES", "CURATION", "DEDUPED_TRANSLATIONS",
    "DEDUPE_CLUSTERS", "DEDUPE_NEAR_PAIRS", "KEYWORDS", "KEYWORD_REJECTS", "QUESTIONS", "QUESTION_REJECTS",
    "RELEASE_ROWS", "REVIEWS", "REVIEW_AGREEMENT", "REVIEW_DECISIONS", "REVIEW_PUSH", "SAFETY", "SAFETY_STEPS", "SEEDS",
    "STAGES", "STEPS",
    "TRANSLATIONS", "TableRef", "stage",
]
