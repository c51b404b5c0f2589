"""Support for running stages inside Prefect flows: task-runner choice, stage tasks with retries,
a global concurrency limit around LLM work, and fan-out of a stage's rows by shard.

Stages stay plain functions (see curate.workspace); this module only decides *where* they run:

- `run_stage_task` runs one declared stage (see curate.runner) (skip-if-unchanged, atomic
  Parquet + manifest) as a Prefect task with retries.
- A stage that declares `shard_by` is fanned out (curate.shards): its main input is cut into
  contiguous shards of `shard_size` rows (each read from the table's Parquet file by the task
  that runs it, so the whole input is never in memory), one Prefect task run per shard (so 100k questions are
  ~50 task runs, not 100k), on the configured task runner (threads, processes or Dask); from the
  CLI (no runner) on `llm_slots` threads of the process. Each finished shard is checkpointed under
  the stage folder, so a run killed mid-stage (even by SIGKILL) resumes with the shards it
  already has and recomputes only the rest; the merged tables are streamed from those files.
- An LLM stage holds slots of a Prefect global concurrency limit while it runs, one per shard it
  keeps in flight, so all flow runs on one Prefect server together keep at most `llm_slots`
  shards talking to the endpoint. (The slots are taken once per stage by the flow, not per shard
  task: Prefect's lease-based slots take up to ~2 s to re-acquire inside task runs.)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.config import Config, stage_config
from curate.llm.budget import utilization_meter
from curate.pipeline import STEPS
from curate.progress import progress_bar
from curate.runner import StageCall, run_call, summarize_result
from curate.shards import SHARDS_DIR, ShardCheckpoints, map_shards
from curate.tasks import prefect_task
from curate.workspace import StageResult, Workspace


class OrchestrationConfig(BaseModel):
    """`[stages.orchestrate]` in curate.toml."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[str] = Field(default_factory=list, description="Seed files the curation flow ingests.")
    skip: list[str] = Field(default_factory=list, description="Curation stages to leave out, e.g. ['blocked'] for seeds already known to be blocked.")
    task_runner: Literal["threads", "processes", "dask"] = "threads"
    max_workers: int | None = Field(default=None, ge=1, description="Threads/processes, or LocalCluster workers for dask.")
    dask_address: str | None = Field(default=None, description="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786.")
    dask_processes: bool = Field(default=True, description="LocalCluster: worker processes (True) or threads (False).")
    dask_threads_per_worker: int = Field(default=1, ge=1)
    dask_memory_limit: str = "2GiB"
    shard_size: int = Field(default=2000, ge=1, description="Rows per task run when a stage fans out.")
    retries: int = Field(default=2, ge=0, description="Retries per stage task and per shard task.")
    retry_delay_s: float = Field(default=10.0, ge=0)
    llm_limit_name: str | None = Field(
        default="curate-llm", description="Prefect global concurrency limit held by LLM stages; empty disables."
    )
    llm_slots: int = Field(default=4, ge=1, description="LLM shards in flight at once across all flow runs on a server.")
    llm_lease_s: float = Field(
        default=60, ge=60, le=86400,
        description="Lease on held slots, renewed while the stage runs; slots of a killed run free up after it.",
    )
    lock_timeout_s: float = Field(default=-1, description="Wait for the workspace lock this long (-1: forever).")

    @field_validator("skip")
    @classmethod
    def _known_stages(cls, skip: list[str]) -> list[str]:
        unknown = [s for s in skip if s not in STEPS]
        if unknown or "ingest" in skip:
            raise ValueError(f"cannot skip {unknown or ['ingest']}; stages that can be skipped: {', '.join(STEPS[1:])}")
        return skip

    def runner_workers(self) -> int:
        return self.max_workers or (2 if self.task_runner == "dask" else max(4, os.cpu_count() or 1))


def orchestration_config(cfg: Config) -> OrchestrationConfig:
    return stage_config(cfg, "orchestrate", OrchestrationConfig)  # type: ignore[return-value]


# -- task runners ---------------------------------------------------------------------------------
def make_task_runner(cfg: OrchestrationConfig):
    """The Prefect task runner named by the config (a fresh one; use it as a context manager)."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if cfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.runner_workers())
    if cfg.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=cfg.runner_workers())
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": cfg.runner_workers(),
        "threads_per_worker": cfg.dask_threads_per_worker,
        "processes": cfg.dask_processes,
        "memory_limit": cfg.dask_memory_limit,
        "dashboard_address": None,  # no dashboard port opened on the machine
    }
    if cfg.dask_processes:
        cluster_kwargs["host"] = "127.0.0.1"  # worker processes talk over loopback TCP only
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


# -- LLM concurrency ------------------------------------------------------------------------------
def ensure_llm_limit(cfg: OrchestrationConfig) -> None:
    """Create or update the Prefect global concurrency limit that LLM shards hold."""
    if not cfg.llm_limit_name:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(cfg.llm_limit_name, cfg.llm_slots)


def llm_slot(limit_name: str | None, occupy: int = 1, lease_s: float = 60):
    """Hold `occupy` slots of the named Prefect global concurrency limit (no-op without a name).

    The slots are leased for `lease_s` and renewed in the background while held, so a process
    killed with SIGKILL blocks them for at most `lease_s`.
    """
    if not limit_name:
        return nullcontext()
    from prefect.concurrency.sync import concurrency

    # strict: a missing limit is a setup bug (ensure_llm_limit runs at flow start), not a reason
    # to hit the endpoint without a bound.
    return concurrency(limit_name, occupy=occupy, strict=True, lease_duration=lease_s)


# -- stage tasks ----------------------------------------------------------------------------------
def partitions_as_tasks(runner: Any, cfg: OrchestrationConfig, stage: str) -> Callable[[Callable[..., Any], list[dict[str, Any]]], list[Any]]:
    """A `map_partitions` for stages that split their work into partitions (dedupe): each
    partition one task run on `runner`, results in job order."""

    def map_as_tasks(fn: Callable[..., Any], jobs: list[dict[str, Any]]) -> list[Any]:
        partition_task = prefect_task(fn, f"{stage}-partition", retries=cfg.retries, retry_delay_s=cfg.retry_delay_s)
        futures = [
            runner.submit(partition_task.with_options(task_run_name=f"{stage}[{job['key']}]"), parameters=job)
            for job in jobs
        ]
        return [f.result() for f in futures]

    return map_as_tasks


def execute_stage(
    ws: Workspace,
    call: StageCall,
    cfg: OrchestrationConfig,
    *,
    runner=None,
    force: bool = False,
    progress: bool = False,
) -> StageResult:
    """Run one stage in `ws`: skipped if unchanged; fanned out by shard when the stage declares it
    (on `runner`, or without one on `llm_slots` threads of this process, as `curate <stage>`
    does), or by partition on `runner`; holding LLM slots on the Prefect server while an LLM
    stage runs in a flow."""
    # An unchanged stage is skipped by run_stage; it must not wait for LLM slots first.
    fresh = not force and ws.is_fresh(call.name, call.fingerprint(ws))
    llm_limit = cfg.llm_limit_name if call.uses_llm and runner is not None and not fresh else None
    # Shards the stage keeps in flight, and so the LLM slots it holds while it runs. Without a
    # runner (the CLI) an LLM stage's shards run on threads sharing this process's endpoint budget.
    if runner is None:
        in_flight: int | None = cfg.llm_slots if call.uses_llm else 1
    else:
        in_flight = min(cfg.llm_slots, cfg.runner_workers()) if llm_limit else None
    # Out of process, each shard gets its part of the endpoint budget: at most this many call it at once.
    llm_share = 1 / (in_flight or cfg.runner_workers()) if call.uses_llm and runner is not None else None
    shard_by = call.stage.shard_by
    if shard_by is None:
        extra: dict[str, Any] = {}
        if runner is not None and "map_partitions" in inspect.signature(call.stage.run).parameters:
            extra["map_partitions"] = partitions_as_tasks(runner, cfg, call.name)
        with llm_slot(llm_limit, 1, cfg.llm_lease_s):
            # No progress bar for partitions: a bar cannot follow a task into another process.
            return run_call(ws, call, force=force, progress=progress and not extra, **extra)

    checkpoints = ShardCheckpoints(ws.stage_dir(call.name) / SHARDS_DIR / f"{call.fingerprint(ws)}-{cfg.shard_size}")
    if force:
        checkpoints.clear()
    # Here (no runner) a stage with a declared total shows one bar of rows across its shards.
    takes_progress = "progress" in inspect.signature(call.stage.run).parameters
    row_total = call.stage.progress_total if runner is None and progress and takes_progress else None

    def fanned_out(**args: Any) -> Any:
        # The shard input comes as its Parquet file: each shard reads its own rows where it runs.
        table = args.pop(shard_by)
        rows_bar = (progress_bar(call.name, row_total(args | {shard_by: pl.scan_parquet(table)}, call.settings))
                    if row_total else nullcontext())
        with utilization_meter() as endpoint_use, rows_bar as advance:
            output = map_shards(
                call.stage.run, table, shard_input=shard_by, kwargs=args | ({"progress": advance} if advance else {}),
                shard_size=cfg.shard_size, runner=runner, checkpoints=checkpoints, max_in_flight=in_flight,
                retries=cfg.retries, retry_delay_s=cfg.retry_delay_s, stage=call.name,
                progress=progress and not row_total, llm_share=llm_share, stream_merge=True,
                # A remote Dask cluster may not see the workspace folder: its shards are read here.
                read_in_worker=not (cfg.task_runner == "dask" and cfg.dask_address),
            )
        if call.uses_llm and (use := endpoint_use()):
            # How busy the stage kept each endpoint, shard tails included (threads runner: shards
            # in worker processes use budgets this process cannot see).
            output.report["endpoint_utilization"] = use
        return output

    with llm_slot(llm_limit, in_flight or 1, cfg.llm_lease_s):
        result = ws.run_stage(call.name, fanned_out, inputs=call.inputs, config=call.settings, version=call.version,
                              files=call.files, force=force, paths={shard_by, *call.stage.as_paths}, **call.kwargs)
    checkpoints.clear()
    return result


def run_stage_task(ws: Workspace, call: StageCall, cfg: OrchestrationConfig, *, runner=None, force: bool = False) -> dict[str, Any]:
    """`execute_stage` as a Prefect task run named after the stage, with the configured retries."""

    def stage(ws: Workspace, call: StageCall, force: bool) -> dict[str, Any]:
        from prefect import get_run_logger  # Prefect is heavy to import; only flows get here

        summary = summarize_result(execute_stage(ws, call, cfg, runner=runner, force=force, progress=_interactive()))
        rows = ", ".join(f"{t}={n}" for t, n in summary["rows"].items())
        get_run_logger().info("%s: %s %s", call.name, "skipped (unchanged)" if summary["skipped"] else "done", rows)
        return summary

    return prefect_task(stage, call.name, retries=cfg.retries, retry_delay_s=cfg.retry_delay_s)(ws, call, force)


def _interactive() -> bool:
    return os.isatty(2) and os.environ.get("CURATE_PROGRESS", "1") != "0"


@contextmanager
def flow_runner(cfg: OrchestrationConfig) -> Iterator[Any]:
    """Start the configured task runner for the fan-out of one flow run."""
    with make_task_runner(cfg) as runner:
        yield runner
