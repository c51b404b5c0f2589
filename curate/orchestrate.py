"""Support for running stages inside Prefect flows: task-runner choice, stage tasks with retries,
a global concurrency limit around LLM work, and fan-out of a stage's rows by shard.

Stages stay plain functions (see curate.workspace); this module only decides *where* they run:

- `run_stage_task` runs one stage through `Workspace.run_stage` (skip-if-unchanged, atomic
  Parquet + manifest) as a Prefect task with retries.
- A stage whose rows are independent can be fanned out: its main input is cut into contiguous
  shards of `shard_size` rows, one Prefect task run per shard (so 100k questions are ~50 task
  runs, not 100k), on the configured task runner (threads, processes or Dask). Each finished
  shard is checkpointed under the stage folder, so a run killed mid-stage resumes with the
  shards it already has and recomputes only the rest.
- An LLM stage holds slots of a Prefect global concurrency limit while it runs, one per shard it
  keeps in flight, so all flow runs on one Prefect server together keep at most `llm_slots`
  shards talking to the endpoint. (The slots are taken once per stage by the flow, not per shard
  task: Prefect's lease-based slots take up to ~2 s to re-acquire inside task runs.)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.config import Config, stage_config
from curate.errors import ConfigError, CurateError
from curate.progress import progress_bar
from curate.workspace import StageOutput, StageResult, Workspace, atomic_write_json, atomic_write_parquet

CURATION_STAGES = ("ingest", "blocked", "keywords", "questions", "translate", "dedupe", "answers", "review_push")
SHARDS_DIR = ".shards"
DONE = "done.json"


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
        unknown = [s for s in skip if s not in CURATION_STAGES]
        if unknown or "ingest" in skip:
            raise ValueError(f"cannot skip {unknown or ['ingest']}; stages that can be skipped: {', '.join(CURATION_STAGES[1:])}")
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


# -- shards ---------------------------------------------------------------------------------------
def shard_frame(df: pl.DataFrame, shard_size: int) -> list[pl.DataFrame]:
    """Contiguous slices of `shard_size` rows; the same frame always gives the same shards."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    if df.height == 0:
        return [df]
    return [df.slice(offset, shard_size) for offset in range(0, df.height, shard_size)]


def _as_output(result: StageOutput | Mapping[str, pl.DataFrame]) -> StageOutput:
    return result if isinstance(result, StageOutput) else StageOutput(tables=dict(result))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts add up across shards (nested dicts too); anything else keeps the first shard's value."""
    merged: dict[str, Any] = {}
    for report in reports:
        for key, value in report.items():
            if key not in merged:
                merged[key] = value
            elif _is_number(value) and _is_number(merged[key]):
                merged[key] += value
            elif isinstance(value, dict) and isinstance(merged[key], dict):
                merged[key] = _merge_reports([merged[key], value])
    return merged


@dataclass
class ShardCheckpoints:
    """Finished shards of one stage attempt, keyed by the stage fingerprint and shard size."""

    folder: Path

    def shard_dir(self, index: int) -> Path:
        return self.folder / f"{index:06d}"

    def load(self, index: int) -> StageOutput | None:
        done = self.shard_dir(index) / DONE
        if not done.exists():
            return None
        meta = json.loads(done.read_text(encoding="utf-8"))
        tables = {t: pl.read_parquet(self.shard_dir(index) / f"{t}.parquet") for t in meta["tables"]}
        return StageOutput(tables=tables, report=meta.get("report", {}))

    def save(self, index: int, output: StageOutput) -> None:
        folder = self.shard_dir(index)
        for table, df in output.tables.items():
            atomic_write_parquet(folder / f"{table}.parquet", df)
        # The marker goes last: a shard without it is recomputed, never half-read.
        atomic_write_json(folder / DONE, {"tables": sorted(output.tables), "report": output.report})

    def clear(self) -> None:
        shutil.rmtree(self.folder.parent, ignore_errors=True)


@dataclass(frozen=True)
class _CacheAt:
    """An LLM cache by path: SQLite connections cannot be pickled to worker processes or Dask."""

    path: Path


def _portable(kwargs: dict[str, Any]) -> dict[str, Any]:
    from curate.llm.cache import LLMCache

    return {k: _CacheAt(v.path) if isinstance(v, LLMCache) else v for k, v in kwargs.items()}


def _run_shard(func: Callable[..., Any], shard_input: str, shard: pl.DataFrame, kwargs: dict[str, Any]) -> StageOutput:
    opened = {k: v for k, v in kwargs.items() if isinstance(v, _CacheAt)}
    if opened:
        from curate.llm.cache import LLMCache

        opened = {k: LLMCache(v.path) for k, v in opened.items()}
    try:
        return _as_output(func(**{shard_input: shard}, **{**kwargs, **opened}))
    finally:
        for cache in opened.values():
            cache.close()


def _shard_task(retries: int, retry_delay_s: float):
    from prefect import task
    from prefect.cache_policies import NONE

    # Shard outputs are persisted by ShardCheckpoints, not by Prefect; hashing frames for Prefect's
    # cache would cost more than the work in cheap stages.
    return task(
        _run_shard, name="shard", cache_policy=NONE, persist_result=False, retries=retries, retry_delay_seconds=retry_delay_s,
        retry_condition_fn=retry_unless_user_error,
    )


def map_shards(
    func: Callable[..., StageOutput | dict[str, pl.DataFrame]],
    frame: pl.DataFrame,
    *,
    shard_input: str,
    kwargs: Mapping[str, Any] | None = None,
    shard_size: int,
    runner=None,
    checkpoints: ShardCheckpoints | None = None,
    max_in_flight: int | None = None,
    retries: int = 0,
    retry_delay_s: float = 0.0,
    stage: str = "stage",
    progress: bool = False,
) -> StageOutput:
    """Apply a row-independent stage to `frame` shard by shard and concatenate, in input order.

    With `runner` (a Prefect task runner that is already started) each shard is one task run;
    without it the shards run here, one after another (a plain function call, no Prefect).
    """
    kwargs = dict(kwargs or {})
    shards = shard_frame(frame, shard_size)
    outputs: dict[int, StageOutput] = {}
    if checkpoints is not None:
        for i in range(len(shards)):
            if (done := checkpoints.load(i)) is not None:
                outputs[i] = done
    resumed = len(outputs)
    todo = [i for i in range(len(shards)) if i not in outputs]

    def finished(i: int, out: StageOutput) -> None:
        outputs[i] = out
        if checkpoints is not None:
            checkpoints.save(i, out)

    with progress_bar(f"{stage} shards", len(shards), enabled=progress) as advance:
        advance(resumed)
        if runner is None:
            for i in todo:
                finished(i, _run_shard(func, shard_input, shards[i], kwargs))
                advance(1)
        else:
            from prefect.futures import as_completed
            from prefect.task_runners import ThreadPoolTaskRunner

            shard_task = _shard_task(retries, retry_delay_s)
            if not isinstance(runner, ThreadPoolTaskRunner):
                kwargs = _portable(kwargs)

            def submit(i: int):
                return runner.submit(
                    shard_task.with_options(task_run_name=f"{stage}[{i}/{len(shards)}]"),
                    parameters={"func": func, "shard_input": shard_input, "shard": shards[i], "kwargs": kwargs},
                )

            # At most `max_in_flight` shards are submitted at a time: that bounds LLM traffic to the
            # slots the stage holds, and memory when a run has many shards.
            limit = max_in_flight or len(todo) or 1
            queue = list(todo)
            pending = {submit(i): i for i in queue[:limit]}
            queue = queue[limit:]
            # Checkpoint each shard as soon as it lands, in the flow process: workers need no
            # access to the workspace folder, and a kill loses only the shards in flight.
            while pending:
                future = next(as_completed(list(pending)))
                finished(pending.pop(future), future.result())
                advance(1)
                if queue:
                    pending[submit(queue[0])] = queue[0]
                    queue = queue[1:]

    tables: dict[str, list[pl.DataFrame]] = {}
    for i in range(len(shards)):
        for table, df in outputs[i].tables.items():
            tables.setdefault(table, []).append(df)
    merged = {t: pl.concat(dfs, how="diagonal_relaxed") if len(dfs) > 1 else dfs[0] for t, dfs in tables.items()}
    report = _merge_reports([outputs[i].report for i in range(len(shards))])
    report["shards"] = {"total": len(shards), "resumed": resumed, "shard_size": shard_size}
    return StageOutput(tables=merged, report=report)


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: bad input or config fails the same way every time, so it is not retried."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the failure's payload is unreadable: retrying is the safe side
        return True
    return not isinstance(exc, CurateError)


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
@dataclass
class StageSpec:
    """How a flow runs one library stage: the function, its inputs and config, and whether it fans out."""

    name: str
    func: Callable[..., StageOutput | dict[str, pl.DataFrame]]
    inputs: dict[str, str | Path | list[Path]] = field(default_factory=dict)
    config: BaseModel | None = None
    version: str = "1"
    kwargs: dict[str, Any] = field(default_factory=dict)
    shard_input: str | None = None  # the input whose rows are independent: fan out over it
    progress_input: str | None = None  # the input whose rows the stage's `progress` callback counts
    uses_llm: bool = False


def summarize_result(result: StageResult) -> dict[str, Any]:
    return {
        "stage": result.stage,
        "skipped": result.skipped,
        "rows": result.rows,
        "duration_s": result.manifest.get("duration_s"),
        "shards": (result.manifest.get("report") or {}).get("shards"),
    }


def execute_stage(
    ws: Workspace,
    spec: StageSpec,
    cfg: OrchestrationConfig,
    *,
    runner=None,
    force: bool = False,
    progress: bool = False,
) -> StageResult:
    """Run one stage in `ws`: skipped if unchanged, fanned out by shard when the spec says so."""
    fp = ws.fingerprint(spec.name, spec.version, spec.config, spec.inputs)["fingerprint"]
    # An unchanged stage is skipped by run_stage; it must not wait for LLM slots first.
    fresh = not force and ws.is_fresh(spec.name, fp)
    llm_limit = cfg.llm_limit_name if spec.uses_llm and runner is not None and not fresh else None
    # Shards the stage keeps in flight, and so the LLM slots it holds while it runs.
    in_flight = min(cfg.llm_slots, cfg.runner_workers()) if llm_limit else None
    if spec.shard_input is None:
        func = spec.func
        if spec.progress_input is not None:

            def func(**args: Any) -> StageOutput | dict[str, pl.DataFrame]:
                total = args[spec.progress_input].height
                with progress_bar(spec.name, total, enabled=progress) as advance:
                    return spec.func(**args, progress=advance)

        with llm_slot(llm_limit, 1, cfg.llm_lease_s):
            return ws.run_stage(spec.name, func, inputs=spec.inputs, config=spec.config, version=spec.version, force=force, **spec.kwargs)

    checkpoints = ShardCheckpoints(ws.stage_dir(spec.name) / SHARDS_DIR / f"{fp}-{cfg.shard_size}")
    if force:
        checkpoints.clear()

    def fanned_out(**args: Any) -> StageOutput:
        frame = args.pop(spec.shard_input)
        return map_shards(
            spec.func, frame, shard_input=spec.shard_input, kwargs=args, shard_size=cfg.shard_size, runner=runner,
            checkpoints=checkpoints, max_in_flight=in_flight, retries=cfg.retries, retry_delay_s=cfg.retry_delay_s,
            stage=spec.name, progress=progress,
        )

    with llm_slot(llm_limit, in_flight or 1, cfg.llm_lease_s):
        result = ws.run_stage(spec.name, fanned_out, inputs=spec.inputs, config=spec.config, version=spec.version, force=force, **spec.kwargs)
    checkpoints.clear()
    return result


def run_stage_task(ws: Workspace, spec: StageSpec, cfg: OrchestrationConfig, *, runner=None, force: bool = False) -> dict[str, Any]:
    """`execute_stage` as a Prefect task run named after the stage, with the configured retries."""
    from prefect import task
    from prefect.cache_policies import NONE

    @task(
        name=spec.name, cache_policy=NONE, persist_result=False, retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_s,
        retry_condition_fn=retry_unless_user_error,
    )
    def stage(ws: Workspace, spec: StageSpec, force: bool) -> dict[str, Any]:
        from prefect import get_run_logger

        summary = summarize_result(execute_stage(ws, spec, cfg, runner=runner, force=force, progress=_interactive()))
        rows = ", ".join(f"{t}={n}" for t, n in summary["rows"].items())
        get_run_logger().info("%s: %s %s", spec.name, "skipped (unchanged)" if summary["skipped"] else "done", rows)
        return summary

    return stage(ws, spec, force)


def _interactive() -> bool:
    return os.isatty(2) and os.environ.get("CURATE_PROGRESS", "1") != "0"


@contextmanager
def flow_runner(cfg: OrchestrationConfig) -> Iterator[Any]:
    """Start the configured task runner for the fan-out of one flow run."""
    with make_task_runner(cfg) as runner:
        yield runner


# -- dedupe partitions ----------------------------------------------------------------------------
def dedupe_fanned_out(
    translations: pl.DataFrame,
    config: BaseModel,
    *,
    cache_dir: Path | None = None,
    progress: Any = None,
    runner: Any = None,
    retries: int = 0,
    retry_delay_s: float = 0.0,
) -> StageOutput:
    """`curate.stages.dedupe.dedupe_stage` with each partition (a language, or all rows when matching
    across languages) embedded and clustered in its own task run on `runner`; same tables."""
    from curate.stages.dedupe import dedupe_stage

    if runner is None:
        return dedupe_stage(translations, config, cache_dir=cache_dir, progress=progress)
    from prefect import task
    from prefect.cache_policies import NONE

    def map_as_tasks(fn: Callable[..., Any], jobs: list[dict[str, Any]]) -> list[Any]:
        partition_task = task(
            fn, name="dedupe-partition", cache_policy=NONE, persist_result=False, retries=retries,
            retry_delay_seconds=retry_delay_s, retry_condition_fn=retry_unless_user_error,
        )
        futures = [
            runner.submit(partition_task.with_options(task_run_name=f"dedupe[{job['key']}]"), parameters=job)
            for job in jobs
        ]
        return [f.result() for f in futures]

    # No progress: a bar cannot follow a task into another process or Dask worker.
    output = dedupe_stage(translations, config, cache_dir=cache_dir, map_partitions=map_as_tasks)
    output.report["dedupe"]["fanned_out_partitions"] = len(output.report["dedupe"]["partitions"])
    return output
