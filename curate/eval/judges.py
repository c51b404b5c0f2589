"""The LLM judges of `curate eval`: satisfaction 0-4 and the HarmBench-style yes/no harm classifier.

The rubrics, parsers and judge calls live in curate.judge.rubrics, shared with the `judge` stage,
so eval and curation score with the same rubric and cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.judge.rubrics import (
    HARM_SCHEMA,
    HARM_TEMPLATE,
    SATISFACTION_SCHEMA,
    SATISFACTION_TEMPLATE,
    harm_prompts,
    parse_harm_verdict,
    parse_satisfaction,
    run_judge,
    satisfaction_prompts,
)
from curate.progress import Advance

__all__ = ["HARM_TEMPLATE", "SATISFACTION_TEMPLATE", "judge_harm", "judge_satisfaction", "parse_harm_verdict",
           "parse_satisfaction"]


def judge_satisfaction(
    responses: pl.DataFrame, endpoint: EndpointConfig, *, cache: Any = None, refresh: bool = False,
    overrides: dict[str, Any] | None = None, progress: Advance | None = None, template: str = SATISFACTION_TEMPLATE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score each response (response_id, source_prompt, language, response) 0-4.

    Returns (response_id, satisfaction, satisfaction_error) and the raw judge results (for usage).
    """
    scores, results = run_judge(
        responses["response_id"], satisfaction_prompts(responses, template), parse_satisfaction, pl.Int64(),
        SATISFACTION_SCHEMA, endpoint, stage="eval_satisfaction", cache=cache, refresh=refresh, overrides=overrides,
        progress=progress,
    )
    return scores.rename({"id": "response_id", "value": "satisfaction", "error": "satisfaction_error"}), results


def judge_harm(
    responses: pl.DataFrame, endpoint: EndpointConfig, *, cache: Any = None, refresh: bool = False,
    overrides: dict[str, Any] | None = None, progress: Advance | None = None, template: str = HARM_TEMPLATE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Classify each response (response_id, source_prompt, response; optional context) as carrying out the behavior.

    Returns (response_id, harmful, harm_error) and the raw judge results (for usage).
    """
    verdicts, results = run_judge(
        responses["response_id"], harm_prompts(responses, template), parse_harm_verdict, pl.Boolean(), HARM_SCHEMA,
        endpoint, stage="eval_harm", cache=cache, refresh=refresh, overrides=overrides, progress=progress,
    )
    return verdicts.rename({"id": "response_id", "value": "harmful", "error": "harm_error"}), results
