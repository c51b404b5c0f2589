"""The LLM judges: satisfaction 0-4 and the HarmBench-style yes/no harm classifier.

Both render a rubric template from curate/prompts/, ask for structured JSON through the LLM layer
(cached, rate-limited) and keep a judge failure as an error on its row, never a silent score.
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.llm import complete_frame
from curate.progress import Advance
from curate.prompts import render_prompt

SATISFACTION_TEMPLATE = "eval_satisfaction.j2"
HARM_TEMPLATE = "eval_harm.j2"

SATISFACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 400},
        "score": {"type": "integer", "minimum": 0, "maximum": 4},
    },
    "required": ["reason", "score"],
    "additionalProperties": False,
}
HARM_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object in a judge reply; judges without structured output wrap it in prose or fences."""
    match = _JSON_OBJECT.search(text or "")
    if not match:
        raise ValueError(f"no JSON object in judge reply: {text[:120]!r}")
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"judge reply is not valid JSON: {exc.msg}") from exc
    if not isinstance(obj, dict):
        raise ValueError("judge reply is not a JSON object")  # noqa: TRY004 - ValueError is what the LLM layer retries on
    return obj


def parse_satisfaction(text: str) -> int:
    score = _json_object(text).get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or score != int(score) or not 0 <= score <= 4:
        raise ValueError(f"satisfaction score must be an integer 0-4, got {score!r}")
    return int(score)


def parse_harm_verdict(text: str) -> bool:
    """True for "yes". A bare Yes/No (HarmBench's own classifier format) is accepted too."""
    bare = (text or "").strip().strip(".").lower()
    if bare in ("yes", "no"):
        return bare == "yes"
    verdict = str(_json_object(text).get("verdict", "")).strip().lower()
    if verdict not in ("yes", "no"):
        raise ValueError(f"harm verdict must be 'yes' or 'no', got {verdict!r}")
    return verdict == "yes"


def _judge(
    rows: pl.DataFrame, prompts: list[str], parse, value_type: pl.DataType, schema: dict, endpoint: EndpointConfig, *,
    stage: str, cache: Any,
    refresh: bool, overrides: dict[str, Any] | None, progress: Advance | None,
) -> pl.DataFrame:
    """(response_id, value, error) for each row, and the raw judge results; `value` is null when the judge failed."""

    if rows.height == 0:
        empty = pl.DataFrame(schema={"response_id": pl.String, "value": value_type, "error": pl.String})
        return empty, pl.DataFrame()
    requests = pl.DataFrame(
        {"request_id": rows["response_id"], "prompt": prompts}, schema={"request_id": pl.String, "prompt": pl.String}
    )
    results = complete_frame(
        requests, endpoint, stage=stage, cache=cache, refresh=refresh, response_schema=schema,
        validate=parse, overrides=overrides, progress=progress,
    )
    values, errors = [], []
    for status, parsed, content, error in results.select("status", "parsed", "content", "error").iter_rows():
        if status != "ok":
            values.append(None)
            errors.append(f"{stage}: {error or 'judge call failed'}")
            continue
        try:
            values.append(parse(parsed if parsed is not None else content))
            errors.append(None)
        except ValueError as exc:
            values.append(None)
            errors.append(f"{stage}: {exc}")
    return pl.DataFrame(
        {"response_id": results["request_id"], "value": values, "error": errors},
        schema={"response_id": pl.String, "value": value_type, "error": pl.String},
    ), results


def judge_satisfaction(
    responses: pl.DataFrame, endpoint: EndpointConfig, *, cache: Any = None, refresh: bool = False,
    overrides: dict[str, Any] | None = None, progress: Advance | None = None, template: str = SATISFACTION_TEMPLATE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score each response (response_id, source_prompt, language, response) 0-4.

    Returns (response_id, satisfaction, satisfaction_error) and the raw judge results (for usage).
    """
    prompts = [
        render_prompt(template, prompt=r["source_prompt"], response=r["response"], language=r["language"])
        for r in responses.iter_rows(named=True)
    ]
    scores, results = _judge(responses, prompts, parse_satisfaction, pl.Int64(), SATISFACTION_SCHEMA, endpoint,
                             stage="eval_satisfaction", cache=cache, refresh=refresh, overrides=overrides, progress=progress)
    return scores.rename({"value": "satisfaction", "error": "satisfaction_error"}), results


def judge_harm(
    responses: pl.DataFrame, endpoint: EndpointConfig, *, cache: Any = None, refresh: bool = False,
    overrides: dict[str, Any] | None = None, progress: Advance | None = None, template: str = HARM_TEMPLATE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Classify each response (response_id, source_prompt, response) as carrying out the behavior.

    Returns (response_id, harmful, harm_error) and the raw judge results (for usage).
    """
    prompts = [render_prompt(template, behavior=r["source_prompt"], response=r["response"]) for r in responses.iter_rows(named=True)]
    verdicts, results = _judge(responses, prompts, parse_harm_verdict, pl.Boolean(), HARM_SCHEMA, endpoint,
                               stage="eval_harm", cache=cache, refresh=refresh, overrides=overrides, progress=progress)
    return verdicts.rename({"value": "harmful", "error": "harm_error"}), results
