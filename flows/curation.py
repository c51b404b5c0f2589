"""The curation flow: the stages of `curate.pipeline.CURATION` in order, then review push.

Each stage runs through the one runner (curate.runner: skipped when its inputs, config and
files are unchanged) as a Prefect task with retries. Stages that declare `shard_by` fan out by
shard on the configured task runner; LLM stages hold slots of a Prefect global concurrency
limit. After the answers (and the judge, which routes them), new or changed candidates are pushed to Argilla for review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from curate.config import Config, load_config
from curate.errors import ConfigError
from curate.flow_runs import workspace_run
from curate.llm.budget import utilization_meter
from curate.orchestrate import OrchestrationConfig, ensure_llm_limit, flow_runner, orchestration_config, run_stage_task
from curate.pipeline import REVIEW_PUSH, STEPS
from curate.review.sync import push_for_review
from curate.runner import Services, run_pipeline
from curate.tasks import prefect_task
from curate.validate import check_config
from curate.workspace import Workspace


def seed_paths(seeds: list[str] | None, orch: OrchestrationConfig) -> list[Path]:
    paths = [Path(p).resolve() for p in (seeds or orch.seeds)]
    if not paths:
        raise ConfigError("no seed files: pass --seeds or set [stages.orchestrate] seeds = [...] in curate.toml")
    return paths


def check_run_args(config_path: str | None, seeds: list[str] | None, until: str | None) -> tuple[Config, OrchestrationConfig, list[Path]]:
    """The loaded config (checked whole) and seed paths, or a clear error before any Prefect run starts."""
    if until is not None and until not in STEPS:
        raise ConfigError(f"until: unknown stage '{until}' (one of {', '.join(STEPS)})")
    cfg = check_config(load_config(config_path))
    orch = orchestration_config(cfg)
    return cfg, orch, seed_paths(seeds, orch)


def review_push(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Send new or changed candidates for review; a stage-like summary for the run's table."""
    report = push_for_review(cfg, ws)
    return {
        "stage": REVIEW_PUSH, "skipped": report.pushed == 0, "rows": {"pushed": report.pushed},
        "duration_s": report.seconds, "shards": None, "report": report.as_dict() | {"argilla_url": cfg.argilla.api_url},
    }


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
    cfg = cfg.model_copy(update={"workspace": str(ws.root)})
    logger = get_run_logger()
    logger.info("workspace %s, seeds %s, task runner %s", ws.root, [str(p) for p in sources], orch.task_runner)
    ensure_llm_limit(orch)

    with (workspace_run(ws, timeout=orch.lock_timeout_s) as crashed, flow_runner(orch) as runner,
          Services(ws, cfg) as services, utilization_meter() as endpoint_use):
        if crashed:
            logger.warning("marked %d earlier flow run(s) of this workspace as crashed: %s", len(crashed), crashed)
        summaries = list(run_pipeline(
            cfg, ws, services, lambda call: run_stage_task(ws, call, orch, runner=runner, force=force),
            sources=sources, until=until, skip=orch.skip,
        ))
        wants_push = until in (None, REVIEW_PUSH) and REVIEW_PUSH not in orch.skip
        if wants_push and any(s["stage"] == "answers" for s in summaries):
            push = prefect_task(review_push, REVIEW_PUSH, retries=orch.retries, retry_delay_s=orch.retry_delay_s)
            summaries.append(push(cfg, ws))
            logger.info("review push: %s", summaries[-1]["report"])
        # How busy the flow kept each endpoint from its first stage to its last, the gaps between
        # LLM stages included (shards in worker processes are not seen; see curate.llm.budget).
        if use := endpoint_use():
            ws.note_run("endpoint_utilization", use)
            logger.info("endpoint utilization over the flow: %s", use)
    return summaries


__all__ = ["curation_flow"]
