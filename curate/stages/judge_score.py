"""The judge_score stage: every candidate's scores, shard by shard.

Each candidate is scored on its own (curate.judge.scoring.score_candidates): the cheap signals,
the refusal detector and its LLM judge for the rows it is unsure of, and each configured judge's
rubric calls (satisfaction, HarmBench harm). So the stage is sharded by candidates like answers:
from the CLI and in flows its shards run on `llm_slots` at once, are checkpointed as they land
(a run killed with SIGKILL resumes with the shards it has) and merged streamed from their files.
A judge call that fails leaves its score null and the row's status "error": the stage is then
incomplete, and a rerun recomputes only the shards with such rows, sending only the failed calls
(the others come from the LLM cache).

Writes `judge_score/scored` (one row per candidate with an answer: its facts and scores, no
texts) and `judge_score/scores` (candidate x judge x metric). The `judge` stage chooses from them.
Settings: `[stages.judge]`, its scoring part (curate.judge.config.ScoringConfig).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curate.judge.config import JudgeConfig, ScoringConfig, with_judge_defaults
from curate.judge.scoring import score_candidates
from curate.llm import usage_summary
from curate.progress import Advance
from curate.prompts import template_path
from curate.refusal import refusal_files
from curate.stages.declaration import Stage, reads, row_count
from curate.tables import CANDIDATES, JUDGE_SCORE_SCORES, JUDGE_SCORED, QUESTIONS
from curate.text.langid import model_file
from curate.workspace import StageOutput


def judge_score_stage(
    candidates: pl.DataFrame, config: ScoringConfig, *, questions: pl.DataFrame | None = None, cache: Any = None,
    progress: Advance | None = None, refresh: bool = False, prices: dict[str, dict[str, float]] | None = None,
) -> StageOutput:
    """Score every ok candidate with an answer (one shard's worth, or all of them)."""
    scored, scores, raw = score_candidates(candidates, config, questions=questions, cache=cache, refresh=refresh,
                                           progress=progress, prices=prices)
    usable = [r for r in raw if r.height]
    return StageOutput(tables={"scored": scored, "scores": scores}, report={
        "judged": scored.height,
        "errors": int((scored["status"] == "error").sum()),
        "llm": usage_summary(pl.concat(usable, how="diagonal_relaxed"), "judge", prices or {}) if usable else {},
    })


def _always(settings: ScoringConfig) -> bool:
    return True


def _scoring(cfg: Any, section: JudgeConfig) -> ScoringConfig:
    return section.scoring()


STAGE = Stage(
    name="judge_score", run=judge_score_stage, config=JudgeConfig, shares_section="judge", settings=_scoring,
    summary="Score every candidate answer, shard by shard: satisfaction, harm, evasion, language and cheap signals "
            "(judge_score/scored, judge_score/scores).",
    # Questions give topics (optional, a side input of every shard).
    reads={"candidates": reads(CANDIDATES), "questions": reads(QUESTIONS, when=_always)},
    writes=(JUDGE_SCORED, JUDGE_SCORE_SCORES),
    fill=with_judge_defaults, uses_llm=True, shard_by="candidates",
    depends_on=lambda settings: [template_path(settings.satisfaction_template), template_path(settings.harm_template),
                                 *refusal_files(settings.refusal), model_file(settings.langid.model_path)],
    progress_total=lambda inputs, settings: row_count(inputs["candidates"]) * len(settings.judges) * (2 if settings.harm else 1),
    report_keys=("judged", "errors"),
)
