"""The curation flow: ingest -> blocked detection -> keywords -> questions -> translations ->
dedupe -> answers -> review push.

Each stage is a library function run through `Workspace.run_stage` (skipped when its inputs and
config are unchanged) as a Prefect task with retries. Stages whose rows are independent fan out
by shard on the configured task runner; LLM stages hold slots of a Prefect global concurrency
limit. After the answers, new or changed candidates are pushed to Argilla for review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from curate.config import Config, load_config
from curate.errors import ConfigError
from curate.orchestrate import (
    OrchestrationConfig,
    ensure_llm_limit,
    flow_runner,
    orchestration_config,
    retry_unless_user_error,
    run_stage_task,
)
from curate.workspace import Workspace
from flows.stages import CURATION_STAGES, curation_specs, push_for_review


def seed_paths(seeds: list[str] | None, orch: OrchestrationConfig) -> list[Path]:
    paths = [Path(p).resolve() for p in (seeds or orch.seeds)]
    if not paths:
        raise ConfigError("no seed files: pass --seeds or set [stages.orchestrate] seeds = [...] in curate.toml")
    return paths


def check_run_args(config_path: str | None, seeds: list[str] | None, until: str | None) -> tuple[Config, OrchestrationConfig, list[Path]]:
    """The loaded config and seed paths, or a clear error before any Prefect run starts."""
    if until is not None and until not in CURATION_STAGES:
        raise ConfigError(f"until: unknown stage '{until}' (one of {', '.join(CURATION_STAGES)})")
    cfg = load_config(config_path)
    orch = orchestration_config(cfg)
    return cfg, orch, seed_paths(seeds, orch)


@flow(name="curation", log_prints=True)
def curation_flow(
    config_path: str | None = None,
    seeds: list[str] | None = None,
    until: str | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Run every curation stage in order (through `until`); unchanged stages are skipped."""
    cfg, orch, sources = check_run_args(config_path, seeds, until)
    ws = Workspace(cfg.workspace_path.resolve())
    logger = get_run_logger()
    logger.info("workspace %s, seeds %s, task runner %s", ws.root, [str(p) for p in sources], orch.task_runner)
    ensure_llm_limit(orch)

    summaries: list[dict[str, Any]] = []
    with ws.locked(timeout=orch.lock_timeout_s), flow_runner(orch) as runner:
        for spec in curation_specs(cfg, ws, sources, orch=orch, runner=runner, until=until):
            summaries.append(run_stage_task(ws, spec, orch, runner=runner, force=force))
        wants_push = until in (None, "review_push") and "review_push" not in orch.skip
        if wants_push and any(s["stage"] == "answers" for s in summaries):
            push = task(
                push_for_review, name="review_push", cache_policy=NONE, persist_result=False, retries=orch.retries,
                retry_delay_seconds=orch.retry_delay_s, retry_condition_fn=retry_unless_user_error,
            )
            summaries.append(push(cfg.model_copy(update={"workspace": str(ws.root)}), ws))
            logger.info("review push: %s", summaries[-1]["report"])
    return summaries


__all__ = ["curation_flow"]
