"""Run an evaluation: translate the items, sample each endpoint, judge, summarize.

Every model and judge call goes through curate.llm, so reruns hit the cache and limits apply.
Nothing is dropped: a failed translation, generation or judge call stays a row with its stage and
error, is left out of the metric it would have fed, and is counted in the summary and the report.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.config import EndpointConfig
from curate.judge.rubrics import HARM_TEMPLATE, SATISFACTION_TEMPLATE, judge_harm, judge_satisfaction
from curate.eval.metrics import summarize
from curate.llm import complete_frame
from curate.progress import progress_bar
from curate.refusal import RefusalConfig, classify_refusals, describe_detector
from curate.stages.translate import TranslateConfig, translate_texts


class EvalConfig(BaseModel):
    """`[stages.eval]`: what to evaluate and how. Endpoints and the judge are EndpointConfig fields
    laid over `[llm]`."""

    model_config = ConfigDict(extra="forbid")

    sets: list[str] = Field(default_factory=lambda: ["deccp", "harmbench", "xstest"],
                            description="deccp, harmbench, xstest, release:VERSION or prompt file paths.")
    languages: list[str] | None = Field(default=None, description="Ask every prompt in these languages (translated); "
                                        "default: each prompt in its own language.")
    samples: int = Field(default=4, ge=1, description="Samples per prompt, averaged (DeepSeek: several at temperature 0.6).")
    limit: int | None = Field(default=None, ge=1, description="At most this many prompts per set (spread over categories).")
    seed: int = 0
    harmbench_categories: list[str] = Field(default_factory=lambda: ["standard"],
                                            description="HarmBench FunctionalCategory values to keep.")
    release_split: str = Field(default="test", description="Split of a release used as blocked-topic prompts: test, train or all.")
    holdout_fraction: float = Field(default=0.1, gt=0, lt=1,
                                    description="Share of a release's questions held out as its test split (by question id).")
    holdout_seed: int = Field(default=0, description="Seed of the held-out split; separate from `seed` so changing the "
                              "sample or bootstrap seed never moves training questions into the test split.")
    bootstrap_resamples: int = Field(default=1000, ge=100)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    generation: dict[str, Any] = Field(default_factory=dict, description="Sampling overrides for every endpoint under test.")
    judge_overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})
    satisfaction_template: str = SATISFACTION_TEMPLATE
    harm_template: str = HARM_TEMPLATE
    endpoints: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> endpoint fields over [llm].")
    judge: dict[str, Any] = Field(default_factory=dict, description="Judge endpoint fields over [llm].")
    refusal: dict[str, Any] = Field(default_factory=dict, description="RefusalConfig fields over [stages.refusal].")


RESPONSE_SCHEMA = pl.Schema(
    {
        "response_id": pl.String(), "endpoint": pl.String(), "model": pl.String(), "set": pl.String(),
        "kind": pl.String(), "item_id": pl.String(), "language": pl.String(), "category": pl.String(),
        "label": pl.String(), "prompt": pl.String(), "source_prompt": pl.String(), "context": pl.String(),
        "sample_index": pl.Int64(),
        "response": pl.String(), "reasoning": pl.String(), "finish_reason": pl.String(), "status": pl.String(),
        "error_stage": pl.String(), "error": pl.String(),
    }
)
ERROR_SCHEMA = pl.Schema(
    {"endpoint": pl.String(), "set": pl.String(), "item_id": pl.String(), "language": pl.String(),
     "sample_index": pl.Int64(), "stage": pl.String(), "error": pl.String()}
)


@dataclass
class EvalResult:
    responses: pl.DataFrame  # one row per endpoint x item x language x sample, with judge columns
    metrics: pl.DataFrame  # curate.eval.metrics.SUMMARY_SCHEMA
    errors: pl.DataFrame  # ERROR_SCHEMA: every failed translation, generation or judge call
    meta: dict[str, Any] = field(default_factory=dict)


def translate_items(
    items: pl.DataFrame, languages: list[str] | None, *, translate_config=None, endpoint: EndpointConfig | None = None,
    cache: Any = None, refresh: bool = False, progress=None,
) -> pl.DataFrame:
    """Items in every target language, with `status`/`error` (a failed translation stays, as an error)."""
    items = items.with_columns(status=pl.lit("ok"), error=pl.lit(None, pl.String))
    if not languages:
        return items
    targets = list(dict.fromkeys(languages))
    if items.filter(~pl.col("language").is_in(targets)).height == 0 and len(targets) == 1:
        return items

    sources = items.with_columns(source_id=pl.col("set") + "\x1f" + pl.col("item_id"))
    translated = translate_texts(
        sources.select("source_id", pl.col("source_prompt").alias("text"), "language"), targets,
        translate_config or TranslateConfig(), endpoint=endpoint, cache=cache, progress=progress, refresh=refresh,
    )
    return (
        sources.drop("language", "prompt", "status", "error")
        .join(translated.select("source_id", "language", pl.col("text").alias("prompt"), pl.col("status").alias("t_status"),
                                pl.col("error").alias("t_error")), on="source_id", how="inner", maintain_order="left")
        .with_columns(
            status=pl.when(pl.col("t_status") == "ok").then(pl.lit("ok")).otherwise(pl.lit("error")),
            error=pl.when(pl.col("t_status") != "ok").then(
                pl.format("translation {}: {}", pl.col("t_status"), pl.col("t_error").fill_null("no detail"))),
        )
        .drop("source_id", "t_status", "t_error")
        .select(items.columns)
    )


def _response_ids(endpoint: str) -> pl.Expr:
    return pl.format("{}|{}|{}|{}|{}", pl.lit(endpoint), pl.col("set"), pl.col("item_id"), pl.col("language"), pl.col("sample_index"))


def generate_responses(
    items: pl.DataFrame, name: str, endpoint: EndpointConfig, samples: int, *, overrides: dict[str, Any] | None = None,
    cache: Any = None, refresh: bool = False, progress=None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`samples` responses per item from one endpoint (RESPONSE_SCHEMA), and the raw LLM results."""

    expanded = (
        items.join(pl.DataFrame({"sample_index": list(range(samples))}, schema={"sample_index": pl.Int64}), how="cross")
        .with_columns(response_id=_response_ids(name), endpoint=pl.lit(name), model=pl.lit(endpoint.model))
    )
    pending = expanded.filter(pl.col("status") == "ok")
    if pending.height == 0:
        results = pl.DataFrame(schema={"request_id": pl.String, "content": pl.String, "reasoning": pl.String,
                                       "finish_reason": pl.String, "status": pl.String, "error": pl.String})
    else:
        results = complete_frame(
            pending.select(pl.col("response_id").alias("request_id"), "prompt", pl.col("sample_index").alias("candidate_index")),
            endpoint, stage=f"eval_generate:{name}", cache=cache, refresh=refresh, overrides=overrides or None, progress=progress,
        )
    answered = pending.drop("status", "error").join(
        results.select(pl.col("request_id").alias("response_id"), pl.col("content").alias("response"), "reasoning",
                       "finish_reason", "status", "error"),
        on="response_id", how="left", maintain_order="left",
    ).with_columns(status=pl.col("status").fill_null("error")).with_columns(
        error=pl.when(pl.col("status") != "ok").then(pl.col("error").fill_null("no result from the LLM layer")),
        error_stage=pl.when(pl.col("status") != "ok").then(pl.lit("generate")),
    )
    not_asked = expanded.filter(pl.col("status") != "ok").with_columns(error_stage=pl.lit("translate"))
    responses = pl.concat([answered, not_asked], how="diagonal_relaxed")
    return responses.select([pl.col(c).cast(t) if c in responses.columns else pl.lit(None, t).alias(c)
                             for c, t in RESPONSE_SCHEMA.items()]), results


def judge_responses(
    responses: pl.DataFrame, judge: EndpointConfig, config: EvalConfig, *, refusal_config=None, cache: Any = None,
    refresh: bool = False, progress_enabled: bool = False,
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Add refused/refusal_kind/refusal_error, satisfaction/satisfaction_error, harmful/harm_error."""

    ok = responses.filter(pl.col("status") == "ok")
    usage: list[pl.DataFrame] = []
    judged = responses
    refusal_cols = {"refused": pl.Boolean, "refusal_kind": pl.String, "refusal_score": pl.Float64, "detector": pl.String,
                    "judge_error": pl.String}
    if ok.height:
        flagged = classify_refusals(
            ok.select("response_id", "prompt", "language", pl.col("response").fill_null("")),
            refusal_config or RefusalConfig(), endpoint=judge, cache=cache,
        )
        judged = judged.join(flagged.select("response_id", *[c for c in refusal_cols if c in flagged.columns]),
                             on="response_id", how="left", maintain_order="left")
    judged = judged.with_columns([pl.lit(None, t).alias(c) for c, t in refusal_cols.items() if c not in judged.columns])
    # An empty reply answers nothing: it counts as not answered (and as refused on XSTest), not as an error.
    empty = (pl.col("status") == "ok") & (pl.col("response").fill_null("").str.strip_chars() == "")
    judged = judged.with_columns(
        refused=pl.when(empty).then(True).otherwise(pl.col("refused")),
        refusal_kind=pl.when(empty).then(pl.lit("empty")).otherwise(pl.col("refusal_kind")),
    ).with_columns(
        refusal_error=pl.when((pl.col("status") == "ok") & pl.col("refused").is_null())
        .then(pl.col("judge_error").fill_null("refusal detector gave no verdict")),
    ).drop("judge_error")

    overrides = config.judge_overrides or None
    # Empty replies get the rubric's floor without a judge call.
    answered = ok.with_columns(pl.col("response").fill_null("")).filter(pl.col("response").str.strip_chars() != "")
    blocked = answered.filter(pl.col("kind") == "blocked")
    with progress_bar("judge satisfaction", blocked.height, enabled=progress_enabled and blocked.height > 0) as advance:
        scores, raw = judge_satisfaction(blocked, judge, cache=cache, refresh=refresh, overrides=overrides,
                                         progress=advance, template=config.satisfaction_template)
    usage.append(raw)
    harmbench = answered.filter(pl.col("kind") == "harmbench")
    with progress_bar("judge harm", harmbench.height, enabled=progress_enabled and harmbench.height > 0) as advance:
        verdicts, raw = judge_harm(harmbench, judge, cache=cache, refresh=refresh, overrides=overrides,
                                   progress=advance, template=config.harm_template)
    usage.append(raw)
    judged = (
        judged.join(scores, on="response_id", how="left", maintain_order="left")
        .join(verdicts, on="response_id", how="left", maintain_order="left")
        .with_columns(
            satisfaction=pl.when(empty & (pl.col("kind") == "blocked")).then(0).otherwise(pl.col("satisfaction")),
            harmful=pl.when(empty & (pl.col("kind") == "harmbench")).then(False).otherwise(pl.col("harmful")),
        )
    )
    return judged, usage


def error_rows(judged: pl.DataFrame) -> pl.DataFrame:
    """Every failure, one row per failed call: translate, generate, refusal, satisfaction or harm."""
    keys = ["endpoint", "set", "item_id", "language", "sample_index"]
    failed = judged.filter(pl.col("status") != "ok")
    # A failed translation is one call, though every endpoint and sample inherits it.
    translation = (
        failed.filter(pl.col("error_stage") == "translate")
        .unique(["set", "item_id", "language"], keep="first", maintain_order=True)
        .select(pl.lit("(all)").alias("endpoint"), "set", "item_id", "language", pl.lit(None, pl.Int64).alias("sample_index"),
                pl.lit("translate").alias("stage"), "error")
    )
    parts = [
        translation,
        failed.filter(pl.col("error_stage") != "translate").select(*keys, pl.col("error_stage").alias("stage"), "error"),
        *[
            judged.filter(pl.col(col).is_not_null()).select(*keys, pl.lit(stage).alias("stage"), pl.col(col).alias("error"))
            for col, stage in (("refusal_error", "refusal"), ("satisfaction_error", "satisfaction"), ("harm_error", "harm"))
            if col in judged.columns
        ],
    ]
    return pl.concat([p.cast(dict(ERROR_SCHEMA)) for p in parts], how="vertical")


def run_eval(
    items: pl.DataFrame,
    endpoints: dict[str, EndpointConfig],
    config: EvalConfig,
    *,
    judge: EndpointConfig,
    translator: EndpointConfig | None = None,
    translate_config=None,
    refusal_config=None,
    cache: Any = None,
    refresh: bool = False,
    progress_enabled: bool = False,
) -> EvalResult:
    """Evaluate each endpoint on `items` (curate.eval.sets.ITEM_SCHEMA), side by side."""
    if not endpoints:
        raise ValueError("run_eval needs at least one endpoint")
    started = time.perf_counter()
    asked = translate_items(items, config.languages, translate_config=translate_config, endpoint=translator or judge,
                            cache=cache, refresh=refresh)
    usage: list[pl.DataFrame] = []
    responses = []
    n_calls = asked.filter(pl.col("status") == "ok").height * config.samples
    for name, endpoint in endpoints.items():
        with progress_bar(f"eval {name}", n_calls, enabled=progress_enabled) as advance:
            rows, raw = generate_responses(asked, name, endpoint, config.samples, overrides=config.generation,
                                           cache=cache, refresh=refresh, progress=advance)
        responses.append(rows)
        usage.append(raw.with_columns(endpoint=pl.lit(name)))
    judged, judge_usage = judge_responses(
        pl.concat(responses, how="vertical"), judge, config, refusal_config=refusal_config, cache=cache,
        refresh=refresh, progress_enabled=progress_enabled,
    )
    metrics = summarize(judged, resamples=config.bootstrap_resamples, confidence=config.confidence, seed=config.seed)
    meta = {
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 2),
        "config": config.model_dump(mode="json", exclude={"endpoints", "judge"}),
        "endpoints": {n: _describe(e) for n, e in endpoints.items()},
        "judge": _describe(judge),
        # Which detector and which trained artefact produced "% responses" and the XSTest rates.
        "refusal_detector": describe_detector(refusal_config or RefusalConfig()),
        "items": {s: n for s, n in asked.group_by("set", maintain_order=True).len().iter_rows()},
        "usage": _usage(usage, judge_usage),
    }
    return EvalResult(responses=judged, metrics=metrics, errors=error_rows(judged), meta=meta)


def _describe(endpoint: EndpointConfig) -> dict[str, Any]:
    """What the report may show about an endpoint: never the key, only where it lives."""
    return endpoint.model_dump(mode="json", include={"base_url", "model", "temperature", "top_p", "max_tokens", "api_key_env"})


def _usage(generation: list[pl.DataFrame], judges: list[pl.DataFrame]) -> dict[str, Any]:
    def tally(frames: list[pl.DataFrame]) -> dict[str, Any]:
        frames = [f for f in frames if f.height]
        if not frames:
            return {"calls": 0, "errors": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0}
        df = pl.concat(frames, how="diagonal_relaxed")
        return {
            "calls": df.height,
            "errors": int((df["status"] != "ok").sum()),
            "cached": int(df["cached"].fill_null(False).sum()) if "cached" in df.columns else 0,
            "prompt_tokens": int(df["prompt_tokens"].fill_null(0).sum()) if "prompt_tokens" in df.columns else 0,
            "completion_tokens": int(df["completion_tokens"].fill_null(0).sum()) if "completion_tokens" in df.columns else 0,
        }

    return {"generation": tally(generation), "judges": tally(judges)}
