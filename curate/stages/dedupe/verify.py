"""The verification band: an LLM judge for pairs just below the merge threshold.

Embeddings measure topic and wording; a pair scoring between `verify_above` and the threshold
is either a paraphrase the model undersold or a same-topic different question. The judge
(template curate/prompts/dedupe_verify.j2, through curate.llm, so cached and rate-limited) is
asked "do these two ask the same thing?". Only a clear yes merges: a failed call, an unparsable
answer or a no leaves both rows, and a failure is kept as an error row in the `verifications`
table (rerunning retries it; answered calls come from the LLM cache).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.prompts import render_prompt

TEMPLATE = "dedupe_verify.j2"
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"same_question": {"type": "boolean"}},
    "required": ["same_question"],
}
VERIFICATIONS_SCHEMA = {
    "a": pl.Int64, "b": pl.Int64, "similarity": pl.Float32, "same_question": pl.Boolean,
    "status": pl.String, "error": pl.String, "cached": pl.Boolean,
}


@dataclass(frozen=True)
class PairVerifier:
    """What the stage needs to call the judge: the endpoint and the LLM cache file."""

    endpoint: EndpointConfig
    cache: Any = None  # an LLMCache, a path to one, or None (no cache)
    max_tokens: int = 256  # room for a reasoning model's short think before the JSON


def parse_verdict(content: str) -> bool:
    """The judge's yes/no; ValueError (retried by the LLM layer) when there is none."""
    text = (content or "").strip()
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        try:
            value = json.loads(text[start : end + 1]).get("same_question")
        except (json.JSONDecodeError, AttributeError):
            value = None
        if isinstance(value, bool):
            return value
    raise ValueError(f"no same_question true/false in the judge's answer: {text[:80]!r}")


def verify_pairs(pairs: pl.DataFrame, verifier: PairVerifier) -> pl.DataFrame:
    """Judge each pair (columns a, b: row positions; a_text, b_text; similarity).
    Returns VERIFICATIONS_SCHEMA, one row per pair, in order."""
    from curate.llm import LLMCache, complete_frame  # the openai SDK loads only when verifying

    if pairs.is_empty():
        return pl.DataFrame(schema=VERIFICATIONS_SCHEMA)
    prompts = [render_prompt(TEMPLATE, a=a, b=b) for a, b in pairs.select("a_text", "b_text").iter_rows()]
    requests = pl.DataFrame({"request_id": [f"dedupe-verify-{a}-{b}" for a, b in pairs.select("a", "b").iter_rows()],
                             "prompt": prompts})
    cache = LLMCache(verifier.cache) if isinstance(verifier.cache, str | Path) else verifier.cache
    results = complete_frame(
        requests, verifier.endpoint, stage="dedupe_verify", cache=cache, response_schema=VERDICT_SCHEMA,
        validate=parse_verdict, overrides={"max_tokens": verifier.max_tokens, "temperature": 0.0},
    )
    verdicts: list[dict[str, Any]] = []
    for status, parsed, content, error, cached in results.select("status", "parsed", "content", "error", "cached").iter_rows():
        if status != "ok":
            verdicts.append({"same_question": None, "status": "error", "error": error or "judge call failed", "cached": cached})
            continue
        try:
            same = parse_verdict(parsed if parsed is not None else content or "")
        except ValueError as exc:
            verdicts.append({"same_question": None, "status": "error", "error": f"invalid_output: {exc}", "cached": cached})
            continue
        verdicts.append({"same_question": same, "status": "ok", "error": None, "cached": cached})
    judged = pl.DataFrame(verdicts, schema={k: VERIFICATIONS_SCHEMA[k] for k in ("same_question", "status", "error", "cached")})
    return pl.concat([pairs.select(pl.col("a").cast(pl.Int64), pl.col("b").cast(pl.Int64),
                                   pl.col("similarity").cast(pl.Float32)), judged], how="horizontal")


__all__ = ["PairVerifier", "TEMPLATE", "VERIFICATIONS_SCHEMA", "parse_verdict", "verify_pairs"]
