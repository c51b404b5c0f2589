"""A stage's rows fanned out by shard: contiguous slices of `shard_size` rows, each run as one
task (or here, without a task runner: one after another, or on a rolling window of threads),
checkpointed as it lands so a killed run resumes with the shards it already has, and concatenated
back in input order (streamed from the checkpoint files, so the merge holds one batch at a time).

The rows come from a frame in memory, or from a Parquet file: then a shard is only its place in
the file (`ParquetSlice`), read where and when the shard runs, so the stage's input is never
held whole and peak memory grows with the shards in flight, not the rows."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import ConfigError
from curate.failures import llm_errors
from curate.llm import connections
from curate.llm.budget import set_process_share
from curate.llm.cache import LLMCache
from curate.progress import progress_bar
from curate.tasks import prefect_task
from curate.workspace import StageOutput, atomic_write_json, atomic_write_parquet

SHARDS_DIR = ".shards"
DONE = "done.json"

def _offsets(rows: int, shard_size: int) -> range:
    """Where each shard starts; an empty input is one empty shard (the stage still writes its tables)."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    return range(0, max(rows, 1), shard_size)


def shard_frame(df: pl.DataFrame, shard_size: int) -> list[pl.DataFrame]:
    """Contiguous slices of `shard_size` rows; the same frame always gives the same shards."""
    return [df.slice(offset, shard_size) for offset in _offsets(df.height, shard_size)]


@dataclass(frozen=True)
class ParquetSlice:
    """Rows `offset` to `offset + rows` of a Parquet file: a shard that is read where it runs (a
    thread, a process-pool or Dask worker), so only its place, not its rows, travels to the task."""

    path: Path
    offset: int
    rows: int

    def read(self) -> pl.DataFrame:
        # The slice is pushed into the reader: only the row groups that hold these rows are decoded.
        return pl.scan_parquet(self.path).slice(self.offset, self.rows).collect()


def parquet_rows(path: Path) -> int:
    """A Parquet file's row count, from its footer (no rows are read)."""
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def shard_file(path: Path, shard_size: int) -> list[ParquetSlice]:
    """The shards `shard_frame` cuts from the file's table (same bounds, same order), unread."""
    path = Path(path).resolve()  # a worker may run in another folder
    rows = parquet_rows(path)
    return [ParquetSlice(path, offset, min(shard_size, rows - offset)) for offset in _offsets(rows, shard_size)]


def _shard_rows(shard: pl.DataFrame | ParquetSlice) -> pl.DataFrame:
    return shard.read() if isinstance(shard, ParquetSlice) else shard


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
    """Finished shards of one stage attempt, keyed by the stage fingerprint and shard size.

    A shard whose rows hold failed LLM calls is saved but never resumed: a rerun computes it
    again, and the LLM cache makes that send only its failed calls."""

    folder: Path

    def shard_dir(self, index: int) -> Path:
        return self.folder / f"{index:06d}"

    def meta(self, index: int) -> dict[str, Any] | None:
        """The marker of a finished shard that can be resumed (no failed LLM calls), else None."""
        done = self.shard_dir(index) / DONE
        if not done.exists():
            return None
        meta = json.loads(done.read_text(encoding="utf-8"))
        return None if meta.get("llm_errors", 0) else meta

    def load(self, index: int) -> StageOutput | None:
        meta = self.meta(index)
        if meta is None:
            return None
        tables = {t: pl.read_parquet(self.table_path(index, t)) for t in meta["tables"]}
        return StageOutput(tables=tables, report=meta.get("report", {}))

    def table_path(self, index: int, table: str) -> Path:
        return self.shard_dir(index) / f"{table}.parquet"

    def save(self, index: int, output: StageOutput) -> None:
        folder = self.shard_dir(index)
        for table, df in output.tables.items():
            atomic_write_parquet(folder / f"{table}.parquet", df)
        # The marker goes last: a shard without it is recomputed, never half-read.
        atomic_write_json(folder / DONE, {"tables": sorted(output.tables), "report": output.report,
                                          "llm_errors": llm_errors(output.tables)["count"]})

    def scan(self, indices: Iterable[int], tables: Iterable[str]) -> dict[str, pl.LazyFrame]:
        """Each table over the shards `indices`, in that order, as one lazy scan of their files.

        Consecutive files with the same schema (normally all of them) are one multi-file scan; only
        where the schema changes (a shard with a column missing or typed Null) are the runs
        concatenated diagonally. A scan per file cost ~90 KB of peak RSS per file in the streamed
        merge: 618 MB against 366-381 MB for the 2,800 shard files of 1.4M candidates
        (docs/benchmarks.md, "answers: what grew with the rows")."""
        indices = list(indices)
        scans: dict[str, pl.LazyFrame] = {}
        for table in tables:
            paths = [path for i in indices if (path := self.table_path(i, table)).exists()]
            runs: list[list[Path]] = []
            last_schema: dict[str, pl.DataType] | None = None
            for path in paths:
                schema = pl.read_parquet_schema(path)
                if runs and schema == last_schema:
                    runs[-1].append(path)
                else:
                    runs.append([path])
                last_schema = schema
            parts = [pl.scan_parquet(run) for run in runs]
            if parts:
                scans[table] = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
        return scans

    def clear(self) -> None:
        shutil.rmtree(self.folder.parent, ignore_errors=True)


@dataclass(frozen=True)
class _CacheAt:
    """An LLM cache by path: SQLite connections cannot be pickled to worker processes or Dask."""

    path: Path


def _portable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: _CacheAt(v.path) if isinstance(v, LLMCache) else v for k, v in kwargs.items()}


@dataclass(frozen=True)
class _BudgetShare:
    """The part of each LLM endpoint's budget a shard's process may use when it is not the flow's
    own process (a process-pool or Dask worker cannot share the flow's limiter; see curate.llm.budget)."""

    flow_host: str
    flow_pid: int
    share: float

    def apply(self) -> None:
        if (socket.gethostname(), os.getpid()) != (self.flow_host, self.flow_pid):
            set_process_share(self.share)


def _run_shard(func: Callable[..., Any], shard_input: str, shard: pl.DataFrame | ParquetSlice, kwargs: dict[str, Any],
               llm_share: _BudgetShare | None = None) -> StageOutput:
    if llm_share is not None:
        llm_share.apply()
    opened = {k: LLMCache(v.path) for k, v in kwargs.items() if isinstance(v, _CacheAt)}
    # Shards on threads get DataFrame objects of their own: polars locks each object, and two
    # threads on one object can deadlock (one waits for the lock holding the GIL, the other holds
    # the lock waiting for the GIL; curate/release/parts.py hit it). A clone shares the data.
    frames = {k: v.clone() for k, v in kwargs.items() if isinstance(v, pl.DataFrame)}
    try:
        return _as_output(func(**{shard_input: _shard_rows(shard)}, **{**kwargs, **frames, **opened}))
    finally:
        for cache in opened.values():
            cache.close()


def _rolling_window(todo: list[int], limit: int, submit: Callable[[int], Any], first_done: Callable[[list[Any]], Any],
                    finished: Callable[[int, StageOutput], None]) -> None:
    """Keep at most `limit` shards submitted; as each lands, record it and submit the next."""
    queue = list(todo)
    pending = {submit(i): i for i in queue[:limit]}
    queue = queue[limit:]
    while pending:
        future = first_done(list(pending))
        finished(pending.pop(future), future.result())
        if queue:
            pending[submit(queue[0])] = queue[0]
            queue = queue[1:]


def map_shards(
    func: Callable[..., StageOutput | dict[str, pl.DataFrame]],
    frame: pl.DataFrame | Path,
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
    llm_share: float | None = None,
    stream_merge: bool = False,
    read_in_worker: bool = True,
) -> StageOutput:
    """Apply a row-independent stage to `frame` shard by shard and concatenate, in input order.

    With `runner` (a Prefect task runner that is already started) each shard is one task run;
    without it the shards run here: one after another, or with `max_in_flight` > 1 on that many
    threads (a rolling window, as the threads task runner does, without Prefect).
    `llm_share`: the part of each LLM endpoint's budget a shard may use when it runs in another
    process (1 / shards that can call the endpoint at once); shards in this process share its budget.
    `stream_merge` (needs `checkpoints`): a shard's frames are dropped once checkpointed, and the
    merged tables are lazy scans of the shard files in input order (a LazyFrame per table), for
    the caller to stream to disk; peak memory then grows with the shards in flight, not the rows.
    `frame` may be a Parquet file's Path: the same shards (and checkpoints) as its table in memory,
    each read just before it runs, in its worker. `read_in_worker=False` (workers that cannot see
    the file, e.g. a remote Dask cluster): each shard is read here as it is submitted instead.
    """
    if stream_merge and checkpoints is None:
        raise ValueError("stream_merge needs checkpoints: the merge is read back from the shard files")
    kwargs = dict(kwargs or {})
    shards: list[pl.DataFrame] | list[ParquetSlice] = (
        shard_frame(frame, shard_size) if isinstance(frame, pl.DataFrame) else shard_file(frame, shard_size)
    )
    reports: dict[int, dict[str, Any]] = {}
    outputs: dict[int, StageOutput] = {}
    tables_seen: dict[str, None] = {}
    if checkpoints is not None:
        for i in range(len(shards)):
            if (meta := checkpoints.meta(i)) is not None:
                reports[i] = meta.get("report", {})
                tables_seen.update(dict.fromkeys(meta["tables"]))
                if not stream_merge:
                    outputs[i] = checkpoints.load(i)  # type: ignore[assignment]
    resumed = len(reports)
    todo = [i for i in range(len(shards)) if i not in reports]

    # The process's LLM loop, and its one connection pool per endpoint, lives across the shards.
    with connections.held(), progress_bar(f"{stage} shards", len(shards), enabled=progress) as advance:
        advance(resumed)

        def finished(i: int, out: StageOutput) -> None:
            reports[i] = out.report
            tables_seen.update(dict.fromkeys(out.tables))
            if checkpoints is not None:
                checkpoints.save(i, out)
            if not stream_merge:
                outputs[i] = out
            advance(1)

        # Without a runner, shards run one after another unless `max_in_flight` asks for threads.
        limit = max(1, min(max_in_flight or (1 if runner is None else len(todo)), len(todo) or 1))
        if runner is None and limit == 1:
            for i in todo:
                finished(i, _run_shard(func, shard_input, shards[i], kwargs))
        elif runner is None:
            # Threads of this process: the shards share its one budget per endpoint.
            pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"{stage}-shard")
            try:
                _rolling_window(
                    todo, limit, lambda i: pool.submit(_run_shard, func, shard_input, shards[i], kwargs),
                    lambda futures: next(iter(wait(futures, return_when=FIRST_COMPLETED).done)), finished,
                )
            finally:
                # A failed shard stops the stage: shards not started are dropped, not waited for.
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            # Prefect is heavy to import; only a run with a task runner needs it.
            from prefect.futures import as_completed
            from prefect.task_runners import ThreadPoolTaskRunner

            # Shard outputs are persisted by ShardCheckpoints, not by Prefect.
            shard_task = prefect_task(_run_shard, "shard", retries=retries, retry_delay_s=retry_delay_s)
            share = _BudgetShare(socket.gethostname(), os.getpid(), llm_share) if llm_share else None
            if not isinstance(runner, ThreadPoolTaskRunner):
                kwargs = _portable(kwargs)

            def submit(i: int):
                return runner.submit(
                    shard_task.with_options(task_run_name=f"{stage}[{i}/{len(shards)}]"),
                    parameters={"func": func, "shard_input": shard_input,
                                "shard": shards[i] if read_in_worker else _shard_rows(shards[i]),
                                "kwargs": kwargs, "llm_share": share},
                )

            # At most `max_in_flight` shards are submitted at a time: that bounds LLM traffic to the
            # slots the stage holds, and memory when a run has many shards. Each shard is
            # checkpointed as soon as it lands, in the flow process: workers need no access to the
            # workspace folder, and a kill loses only the shards in flight.
            _rolling_window(todo, limit, submit, lambda futures: next(as_completed(futures)), finished)

    order = range(len(shards))
    merged: dict[str, pl.DataFrame | pl.LazyFrame]
    if stream_merge:
        merged = dict(checkpoints.scan(order, tables_seen))  # type: ignore[union-attr]
    else:
        tables: dict[str, list[pl.DataFrame]] = {}
        for i in order:
            for table, df in outputs[i].tables.items():
                tables.setdefault(table, []).append(df)
        merged = {t: pl.concat(dfs, how="diagonal_relaxed") if len(dfs) > 1 else dfs[0] for t, dfs in tables.items()}
    report = _merge_reports([reports[i] for i in order])
    report["shards"] = {"total": len(shards), "resumed": resumed, "shard_size": shard_size}
    return StageOutput(tables=merged, report=report)  # type: ignore[arg-type]
