"""A stage's rows fanned out by shard: contiguous slices of `shard_size` rows, each run as one
task (or here, one after another, without a task runner), checkpointed as it lands so a killed
run resumes with the shards it already has, and concatenated back in input order."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import ConfigError
from curate.llm.cache import LLMCache
from curate.progress import progress_bar
from curate.tasks import prefect_task
from curate.workspace import StageOutput, atomic_write_json, atomic_write_parquet

SHARDS_DIR = ".shards"
DONE = "done.json"

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
    return {k: _CacheAt(v.path) if isinstance(v, LLMCache) else v for k, v in kwargs.items()}


def _run_shard(func: Callable[..., Any], shard_input: str, shard: pl.DataFrame, kwargs: dict[str, Any]) -> StageOutput:
    opened = {k: LLMCache(v.path) for k, v in kwargs.items() if isinstance(v, _CacheAt)}
    try:
        return _as_output(func(**{shard_input: shard}, **{**kwargs, **opened}))
    finally:
        for cache in opened.values():
            cache.close()


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
            # Prefect is heavy to import; only a run with a task runner needs it.
            from prefect.futures import as_completed
            from prefect.task_runners import ThreadPoolTaskRunner

            # Shard outputs are persisted by ShardCheckpoints, not by Prefect.
            shard_task = prefect_task(_run_shard, "shard", retries=retries, retry_delay_s=retry_delay_s)
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
