"""Safety answers: K candidates with reasoning per safety prompt from the R1 endpoint.

Reads the translated prompts when the optional translation ran, else the prompts as read.
Generation only (the inverse filter is the next stage, so a judge change does not resample).
Goes through the LLM layer like the blocked-topic answers: cached, resumable, and a failed call is
a row with status error that a rerun retries. A conversation is sent whole; its last user turn is
the one answered.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.config import EndpointConfig, with_endpoint_defaults
from curate.ids import content_id
from curate.llm import usage_summary
from curate.llm.sampling import sample_candidates
from curate.progress import Advance
from curate.stages.declaration import Stage, reads, row_count
from curate.tables import SAFETY_CANDIDATES, SAFETY_PROMPTS, SAFETY_TRANSLATED
from curate.workspace import StageOutput

PROMPT_COLUMNS = ("prompt_id", "subset", "category", "expected", "expected_rule", "language", "prompt", "messages", "turns")


class SafetyAnswersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generator: EndpointConfig = Field(default_factory=EndpointConfig, description="The R1 (reasoning) endpoint.")
    candidates_per_prompt: int = Field(default=4, ge=1, description="K sampled candidates per safety prompt.")
    system_prompt: str | None = Field(default=None, description="R1 is usually run without one.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Sampling params (temperature, max_tokens...).")


def candidate_requests(prompts: pl.DataFrame, config: SafetyAnswersConfig) -> pl.DataFrame:
    """One request per prompt x candidate index; the candidate id hashes the conversation and the model."""
    model = config.generator.model
    k = config.candidates_per_prompt
    if "status" in prompts.columns:  # a failed translation is not answered (the translate stage retries it)
        prompts = prompts.filter(pl.col("status") == "ok")
    base = prompts.select(*PROMPT_COLUMNS)
    requests = base.join(pl.DataFrame({"candidate_index": list(range(k))}, schema={"candidate_index": pl.Int64}), how="cross")
    ids = [content_id("scand", pid, model, index) for pid, index in requests.select("prompt_id", "candidate_index").iter_rows()]
    return requests.with_columns(
        pl.Series("candidate_id", ids, dtype=pl.String), pl.lit(model, dtype=pl.String).alias("model"),
    ).sort("prompt_id", "candidate_index")


def safety_answers_stage(
    prompts: pl.DataFrame, config: SafetyAnswersConfig, *, cache=None, progress: Advance | None = None,
    refresh: bool = False, prices: dict[str, dict[str, float]] | None = None,
) -> StageOutput:
    requests = candidate_requests(prompts, config)
    raw, results = sample_candidates(
        requests, config.generator, stage="safety_answers", system_prompt=config.system_prompt,
        overrides=config.overrides, cache=cache, refresh=refresh, progress=progress, prices=prices,
    )
    report = {
        "model": config.generator.model,
        "prompts": prompts.height,
        "candidates_requested": raw.height,
        "errors": int((raw["status"] != "ok").sum()),
        "llm": usage_summary(results, "safety_answers", prices or {}),
    }
    return StageOutput(tables={"candidates": raw}, report=report)


STAGE = Stage(
    name="safety_answers", run=safety_answers_stage, config=SafetyAnswersConfig,
    summary="Sample K answers with reasoning per safety prompt (safety_answers/candidates; failed calls kept as error rows).",
    reads={"prompts": reads(SAFETY_TRANSLATED, SAFETY_PROMPTS)}, writes=(SAFETY_CANDIDATES,),
    fill=lambda cfg, raw: with_endpoint_defaults(cfg.llm, raw, "generator"), uses_llm=True, shard_by="prompts",
    progress_total=lambda inputs, settings: row_count(inputs["prompts"]) * settings.candidates_per_prompt,
)
