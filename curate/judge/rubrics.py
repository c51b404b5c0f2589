"""The judge rubrics: satisfaction 0-4 and the HarmBench harm classifier, one definition each.

`curate eval` and the `judge` stage both render these templates and parse with these functions,
so a score means the same thing in both. Each call goes through the LLM layer (cache, rate limits,
retries on unparseable output); a call that still fails leaves its value null with the error on
its row, never a default score.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.llm import complete_frame
from curate.progress import Advance
from curate.prompts import PROMPTS_DIR, load_prompt, render_prompt

SATISFACTION_TEMPLATE = "judge_satisfaction.j2"
# How a contextual behavior's prompt joins its context and the request (curate.eval.sets); the
# harm judge splits it again, because HarmBench shows [CONTEXT] and [BEHAVIOR] apart.
CONTEXT_SEPARATOR = "\n\n---\n\n"
HARM_TEMPLATE = "judge_harm.j2"

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


@functools.lru_cache(maxsize=32)
def rubric_version(template: str) -> str:
    """`<file name>@<sha256 prefix of its text>`: recorded with every score, so a changed rubric shows."""
    load_prompt(template)  # the same lookup, and the same error for a missing file, as rendering
    file = Path(template) if Path(template).is_file() else PROMPTS_DIR / template
    return f"{file.name}@{hashlib.sha256(file.read_bytes()).hexdigest()[:12]}"


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


def satisfaction_prompts(rows: pl.DataFrame, template: str = SATISFACTION_TEMPLATE, *, prompt_col: str = "source_prompt",
                         response_col: str = "response") -> list[str]:
    return [render_prompt(template, prompt=r[prompt_col], response=r[response_col], language=r["language"])
            for r in rows.iter_rows(named=True)]


def harm_prompts(rows: pl.DataFrame, template: str = HARM_TEMPLATE, *, prompt_col: str = "source_prompt",
                 response_col: str = "response", language_rule: str = "any") -> list[str]:
    """One prompt per row; a non-empty `context` column selects HarmBench's contextual prompt."""
    has_context = "context" in rows.columns
    prompts = []
    for r in rows.iter_rows(named=True):
        context = (r["context"] or "") if has_context else ""
        behavior = r[prompt_col] or ""
        if context and behavior.startswith(context + CONTEXT_SEPARATOR):
            behavior = behavior[len(context + CONTEXT_SEPARATOR):]
        prompts.append(render_prompt(template, behavior=behavior, response=r[response_col], context=context,
                                     language_rule=language_rule))
    return prompts


def run_judge(
    ids: pl.Series, prompts: list[str], parse: Callable[[str], Any], value_type: pl.DataType, schema: dict,
    endpoint: EndpointConfig, *, stage: str, cache: Any = None, refresh: bool = False,
    overrides: dict[str, Any] | None = None, progress: Advance | None = None,
    prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(id, value, error) per id in order, and the LLM layer's raw results (for usage).

    `value` is null exactly when `error` is set: the call failed, or its reply did not parse.
    """
    out_schema = {"id": pl.String, "value": value_type, "error": pl.String}
    if ids.len() == 0:
        return pl.DataFrame(schema=out_schema), pl.DataFrame()
    requests = pl.DataFrame({"request_id": ids, "prompt": prompts}, schema={"request_id": pl.String, "prompt": pl.String})
    results = complete_frame(
        requests, endpoint, stage=stage, cache=cache, refresh=refresh, response_schema=schema,
        validate=parse, overrides=overrides, progress=progress, prices=prices,
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
    return pl.DataFrame({"id": results["request_id"], "value": values, "error": errors}, schema=out_schema), results


def judge_satisfaction(
    rows: pl.DataFrame, endpoint: EndpointConfig, *, id_col: str = "response_id", template: str = SATISFACTION_TEMPLATE,
    stage: str = "eval_satisfaction", cache: Any = None, refresh: bool = False, overrides: dict[str, Any] | None = None,
    progress: Advance | None = None, prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score each row (`id_col`, source_prompt, language, response) 0-4 with the satisfaction rubric.

    Returns (`id_col`, satisfaction, satisfaction_error) in row order, and the raw results (for usage).
    """
    scores, results = run_judge(
        rows[id_col], satisfaction_prompts(rows, template), parse_satisfaction, pl.Int64(), SATISFACTION_SCHEMA,
        endpoint, stage=stage, cache=cache, refresh=refresh, overrides=overrides, progress=progress, prices=prices,
    )
    return scores.rename({"id": id_col, "value": "satisfaction", "error": "satisfaction_error"}), results


def judge_harm(
    rows: pl.DataFrame, endpoint: EndpointConfig, *, id_col: str = "response_id", template: str = HARM_TEMPLATE,
    language_rule: str = "any", stage: str = "eval_harm", cache: Any = None, refresh: bool = False,
    overrides: dict[str, Any] | None = None, progress: Advance | None = None,
    prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Classify each row (`id_col`, source_prompt, response; optional context) as carrying out the request.

    Returns (`id_col`, harmful, harm_error) in row order, and the raw results (for usage).
    """
    verdicts, results = run_judge(
        rows[id_col], harm_prompts(rows, template, language_rule=language_rule), parse_harm_verdict, pl.Boolean(),
        HARM_SCHEMA, endpoint, stage=stage, cache=cache, refresh=refresh, overrides=overrides, progress=progress,
        prices=prices,
    )
    return verdicts.rename({"id": id_col, "value": "harmful", "error": "harm_error"}), results
