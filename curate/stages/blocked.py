"""Blocked-seed mining: send each seed to a target model, classify its replies, keep what it refused.

Tables: `blocked/probes` (one BlockedProbe row per seed and sample, errors included) and
`blocked/seeds` (Seed rows with `blocked` set; by default only the blocked ones).
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.config import EndpointConfig, with_endpoint_defaults
from curate.llm import complete_frame
from curate.progress import Advance
from curate.records import BlockedProbe, Seed, conform
from curate.refusal import RefusalConfig, classify_refusals, describe_detector, refusal_files, with_refusal_defaults
from curate.stages.declaration import Stage, reads, row_count
from curate.tables import BLOCKED_PROBES, BLOCKED_SEEDS, SEEDS
from curate.workspace import StageOutput

# API content filters answer with this finish_reason instead of a refusal text.
CONTENT_FILTER = "content_filter"


class BlockedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: EndpointConfig = Field(default_factory=EndpointConfig, description="The model whose refusals are mined.")
    refusal: RefusalConfig = Field(default_factory=RefusalConfig)
    judge: EndpointConfig | None = Field(default=None, description="Judge for refusal modes llm / rules+llm; default: target.")
    samples_per_seed: int = Field(default=1, ge=1, description="Replies per seed; use temperature > 0 when > 1.")
    min_refusal_rate: float = Field(default=0.5, gt=0, le=1, description="A seed is blocked if at least this share of its judged replies refuse.")
    keep: Literal["blocked", "all"] = Field(default="blocked", description="'all' keeps unblocked seeds in blocked/seeds too.")
    system_prompt: str | None = None
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})


def _requests(seeds: pl.DataFrame, config: BlockedConfig) -> pl.DataFrame:
    samples = pl.DataFrame({"sample_index": list(range(config.samples_per_seed))}, schema={"sample_index": pl.Int64})
    req = seeds.select("seed_id", "text", "language").join(samples, how="cross").with_columns(
        pl.format("blocked-{}-{}", "seed_id", "sample_index").alias("request_id"),
        pl.col("sample_index").alias("candidate_index"),
    )
    if config.system_prompt:
        system = pl.struct(role=pl.lit("system"), content=pl.lit(config.system_prompt))
        user = pl.struct(role=pl.lit("user"), content=pl.col("text"))
        return req.with_columns(pl.concat_list(system, user).alias("messages"))
    return req.with_columns(pl.col("text").alias("prompt"))


def probe_seeds(
    seeds: pl.DataFrame, config: BlockedConfig, *, cache=None, progress: Advance | None = None, refresh: bool = False
) -> pl.DataFrame:
    """BlockedProbe rows (plus sample_index, language, finish_reason, refusal_score) for every seed × sample."""

    requests = _requests(seeds, config)
    results = complete_frame(
        requests.select("request_id", "candidate_index", *(["messages"] if config.system_prompt else ["prompt"])),
        config.target, stage="blocked", cache=cache, refresh=refresh, overrides=config.overrides, progress=progress,
    )
    probes = requests.select("request_id", "seed_id", "sample_index", "text", "language").join(
        results.select("request_id", "content", "finish_reason", "status", "error"), on="request_id", how="left"
    ).with_columns(pl.lit(config.target.model).alias("model"), pl.col("content").alias("response"))

    ok = probes.filter(pl.col("status") == "ok")
    judged = classify_refusals(
        ok, config.refusal, endpoint=config.judge or config.target, cache=cache, response_col="response",
        prompt_col="text", language_col="language",
    )
    filtered = pl.col("finish_reason") == CONTENT_FILTER
    judged = judged.with_columns(
        pl.when(filtered).then(True).otherwise(pl.col("refused")).alias("refused"),
        pl.when(filtered).then(pl.lit("hard")).otherwise(pl.col("refusal_kind")).alias("refusal_kind"),
        pl.when(filtered).then(1.0).otherwise(pl.col("refusal_score")).alias("refusal_score"),
        pl.when(filtered).then(pl.lit(CONTENT_FILTER)).otherwise(pl.col("detector")).alias("detector"),
        # A judge failure is an error of this probe, not a silent "not refused".
        pl.when(pl.col("refused").is_null() & pl.col("judge_error").is_not_null() & ~filtered)
        .then(pl.lit("error")).otherwise(pl.col("status")).alias("status"),
        pl.coalesce("error", "judge_error").alias("error"),
    )
    failed = probes.filter(pl.col("status") != "ok").with_columns(
        pl.lit(None, dtype=pl.Boolean).alias("refused"), pl.lit(None, dtype=pl.String).alias("refusal_kind"),
        pl.lit(None, dtype=pl.Float64).alias("refusal_score"), pl.lit("none").alias("detector"),
        pl.lit("error").alias("status"),
    )
    columns = [*BlockedProbe.model_fields, "sample_index", "language", "finish_reason", "refusal_score"]
    both = pl.concat([judged.select(columns), failed.select(columns)], how="vertical_relaxed")
    extras = both.select("sample_index", "language", "finish_reason", "refusal_score")
    return pl.concat([conform(both, BlockedProbe), extras], how="horizontal").sort("seed_id", "sample_index")


def mark_blocked(seeds: pl.DataFrame, probes: pl.DataFrame, min_refusal_rate: float) -> pl.DataFrame:
    """Seed rows with `blocked`: refusal share among judged replies >= rate; null if none was judged."""
    rates = probes.filter(pl.col("refused").is_not_null()).group_by("seed_id").agg(
        pl.col("refused").mean().alias("_rate")
    )
    return seeds.drop("blocked", strict=False).join(rates, on="seed_id", how="left").with_columns(
        (pl.col("_rate") >= min_refusal_rate).alias("blocked")
    ).drop("_rate")


def blocked_stage(
    seeds: pl.DataFrame, config: BlockedConfig, *, cache=None, progress: Advance | None = None, refresh: bool = False
) -> StageOutput:
    probes = probe_seeds(seeds, config, cache=cache, progress=progress, refresh=refresh)
    marked = mark_blocked(seeds, probes, config.min_refusal_rate)
    kept = marked if config.keep == "all" else marked.filter(pl.col("blocked").fill_null(False))
    report = {
        "model": config.target.model,
        "detector_mode": config.refusal.mode,
        "detector": describe_detector(config.refusal),
        "seeds": seeds.height,
        "blocked": int(marked["blocked"].fill_null(False).sum()),
        "not_blocked": int((~marked["blocked"].fill_null(True)).sum()),
        "undetermined": int(marked["blocked"].is_null().sum()),
        "probe_errors": int((probes["status"] == "error").sum()),
        "by_refusal_kind": {str(k): int(n) for k, n in probes.group_by("refusal_kind").len().sort("refusal_kind", nulls_last=True).iter_rows()},
    }
    return StageOutput(tables={"probes": probes, "seeds": conform(kept, Seed)}, report=report)


STAGE = Stage(
    name="blocked", run=blocked_stage, config=BlockedConfig,
    summary="Send ingested seeds to the target model; keep the ones it refuses (blocked/probes, blocked/seeds).",
    reads={"seeds": reads(SEEDS)}, writes=(BLOCKED_PROBES, BLOCKED_SEEDS),
    fill=lambda cfg, raw: with_refusal_defaults(cfg.stages, with_endpoint_defaults(cfg.llm, raw, "target", optional=("judge",))),
    depends_on=lambda settings: refusal_files(settings.refusal), uses_llm=True, shard_by="seeds",
    progress_total=lambda inputs, settings: row_count(inputs["seeds"]) * settings.samples_per_seed,
)
