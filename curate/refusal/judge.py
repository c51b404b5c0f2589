"""LLM mode of the refusal detector: a rubric judge through the LLM layer.

The rubric (curate/prompts/refusal_judge.j2) is sent with a JSON schema; the judge returns a
verdict and a confidence. The rubric separates replies that recite an official line from answers
that report an official position among other views. A failed or unusable call leaves the verdict
null with the reason in `judge_error`: it never turns into "answered".
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.llm import complete_frame
from curate.prompts import render_prompt
from curate.refusal.config import KINDS, RefusalConfig

JUDGE_VERDICTS = ("answer", *KINDS)
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": list(JUDGE_VERDICTS)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["verdict", "confidence"],
    "additionalProperties": False,
}


def _clip_for_judge(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def parse_judge_output(content: str) -> dict[str, Any]:
    """The judge's JSON; raises ValueError (so the LLM layer retries) when it is not usable."""
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"judge output is not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict) or obj.get("verdict") not in JUDGE_VERDICTS:
        raise ValueError(f"judge verdict must be one of {list(JUDGE_VERDICTS)}")
    confidence = obj.get("confidence", 1.0)
    if not isinstance(confidence, int | float):
        raise ValueError("judge confidence must be a number")
    return {"verdict": obj["verdict"], "confidence": min(max(float(confidence), 0.0), 1.0)}


def judge_requests(df: pl.DataFrame, config: RefusalConfig, response_col: str, prompt_col: str, language_col: str) -> pl.DataFrame:
    has_prompt = prompt_col in df.columns
    has_language = language_col in df.columns
    prompts = []
    for i, row in enumerate(df.iter_rows(named=True)):
        prompts.append(
            render_prompt(
                config.judge_template,
                question=(row[prompt_col] or "") if has_prompt else "",
                response=_clip_for_judge(row[response_col] or "", config.judge_max_chars),
                language=(row[language_col] or "") if has_language else "",
            )
        )
    return pl.DataFrame({"request_id": [f"refusal-judge-{i}" for i in range(df.height)], "prompt": prompts}, schema={"request_id": pl.String, "prompt": pl.String})


def classify_llm(
    df: pl.DataFrame, config: RefusalConfig, endpoint: EndpointConfig, *, cache=None, response_col: str = "response",
    prompt_col: str = "prompt", language_col: str = "language", progress=None,
) -> pl.DataFrame:
    """Judge every row; a failed call leaves refused null with the error in judge_error."""
    empty = df[response_col].fill_null("").str.strip_chars().str.len_chars() == 0
    to_judge = df.filter(~empty)
    verdicts: list[dict[str, Any]] = []
    if to_judge.height:
        requests = judge_requests(to_judge, config, response_col, prompt_col, language_col)
        results = complete_frame(
            requests, endpoint, stage="refusal_judge", cache=cache, response_schema=JUDGE_SCHEMA,
            validate=parse_judge_output, overrides=config.judge_overrides, progress=progress,
        )
        for status, parsed, content, error in results.select("status", "parsed", "content", "error").iter_rows():
            if status != "ok":
                verdicts.append({"refused": None, "refusal_kind": None, "refusal_score": None, "judge_error": error or "judge call failed"})
                continue
            try:
                out = parse_judge_output(parsed if parsed is not None else content or "")
            except ValueError as exc:
                verdicts.append({"refused": None, "refusal_kind": None, "refusal_score": None, "judge_error": str(exc)})
                continue
            refused = out["verdict"] != "answer"
            score = out["confidence"] if refused else 1.0 - out["confidence"]
            verdicts.append({"refused": refused, "refusal_kind": out["verdict"] if refused else None,
                             "refusal_score": round(score, 4), "judge_error": None})
    schema = {"refused": pl.Boolean, "refusal_kind": pl.String, "refusal_score": pl.Float64, "judge_error": pl.String}
    judged = pl.DataFrame(verdicts, schema=schema)
    # Put judged rows back in place; empty replies get null verdicts without a call.
    index = pl.Series("_i", range(df.height))
    judged = judged.with_columns(index.filter(~empty))
    full = pl.DataFrame({"_i": index}).join(judged, on="_i", how="left").sort("_i").drop("_i")
    return pl.concat([df, full.with_columns(pl.lit("llm").alias("detector"))], how="horizontal").select(
        *df.columns, "refused", "refusal_kind", "refusal_score", "detector", "judge_error"
    )
