"""How a stage declares itself, once, beside its function.

A declaration says everything the runner (`curate.runner`), the command line and the flows need:
which tables the stage reads and writes, how its config is built from curate.toml, which files
its output depends on, whether it calls the LLM and how it fans out. Nothing else wires a stage.

The runner passes a stage function, besides its inputs and `config`, only the services its
signature asks for by name: `cache` (the workspace's LLM cache, for a stage that uses the LLM),
`refresh`, `prices`, `progress`, `cache_dir` (the workspace's embedding cache) and
`map_partitions` (partitions as task runs, inside a flow), and `previous` when it declares one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel

from curate.config import Config
from curate.tables import TableRef


@dataclass(frozen=True)
class Input:
    """A table a stage reads: the first of `refs` the run has (so a filtering stage's output,
    e.g. blocked/seeds, is preferred over the table it filtered). `when` makes the input optional:
    it is read only when `when(settings)` is true and the table is there."""

    refs: tuple[TableRef, ...]
    when: Callable[[Any], bool] | None = None

    @property
    def optional(self) -> bool:
        return self.when is not None


def reads(*refs: TableRef, when: Callable[[Any], bool] | None = None) -> Input:
    return Input(tuple(refs), when)


@dataclass(frozen=True)
class Previous:
    """One of the stage's own tables as its last run wrote it, passed as `previous`, a lazy scan of
    its file (so a rerun can stay consistent with what it decided before: dedupe keeps the rows it kept).
    Not passed when the table is missing or when any of the settings named in `same` differ
    from the last run's. It does not enter the fingerprint: it is the output of the last run, so
    with unchanged inputs and settings the stage must reproduce it (and is skipped)."""

    table: TableRef
    same: tuple[str, ...] = ()


def row_count(table: pl.DataFrame | pl.LazyFrame, where: pl.Expr | None = None) -> int:
    """Rows of a table (those matching `where`), a frame or a lazy scan of its file: a sharded
    stage's `progress_total` gets its shard input as a scan, so only the columns counted are read."""
    lazy = table.lazy() if where is None else table.lazy().filter(where)
    return lazy.select(pl.len()).collect().item()


def _no_files(settings: Any) -> Iterable[Path | str | None]:
    return ()


def _same(cfg: Config, settings: BaseModel) -> BaseModel:
    return settings


def _unchanged(cfg: Config, raw: dict[str, Any]) -> dict[str, Any]:
    return raw


@dataclass(frozen=True)
class Stage:
    """One curation stage: its function and everything needed to run it from a config.

    `config` validates the stage's own section (`[stages.<name>]`, or `section`'s top-level key);
    `fill` adds shared settings to the raw section first (e.g. endpoint fields from `[llm]`);
    `settings` builds what `run` receives as `config` from the whole config and the section.
    `depends_on(section)` names the files whose contents shape the output (templates, rules,
    stoplists, model folders): their hashes enter the fingerprint.
    """

    name: str
    run: Callable[..., Any]
    config: type[BaseModel]
    summary: str
    reads: Mapping[str, Input] = field(default_factory=dict)
    writes: tuple[TableRef, ...] = ()
    external: tuple[str, ...] = ()  # inputs the caller passes as paths (ingest's seed files)
    section: str | None = None  # a top-level section instead of [stages.<name>]
    shares_section: str | None = None  # another stage's [stages.<name>] section, read instead of its own
    fill: Callable[[Config, dict[str, Any]], dict[str, Any]] = _unchanged
    settings: Callable[[Config, Any], BaseModel] = _same
    depends_on: Callable[[Any], Iterable[Path | str | None]] = _no_files
    uses_llm: Callable[[Any], bool] | bool = False
    shard_by: str | None = None  # the input whose rows are independent: fan out over it (flows and the CLI)
    as_paths: tuple[str, ...] = ()  # inputs passed as their Parquet file's Path, for a stage that reads them lazily
    version: str = "1"
    version_of: Callable[[Any], str] | None = None  # a version that depends on the settings
    # Rows the progress bar counts, from the inputs (the shard input as a LazyFrame: use row_count).
    progress_total: Callable[[Mapping[str, pl.DataFrame | pl.LazyFrame], Any], int | None] | None = None
    report_keys: tuple[str, ...] = ()  # report entries `curate <stage>` prints
    previous: Previous | None = None  # its own last output, passed as `previous` (see Previous)

    def __post_init__(self) -> None:
        for table in self.writes:
            if table.stage != self.name:
                raise ValueError(f"stage {self.name} declares a table of stage {table.stage}: {table}")
        if self.shard_by is not None and self.shard_by not in self.reads:
            raise ValueError(f"stage {self.name}: shard_by '{self.shard_by}' is not one of its inputs")
        if self.previous is not None and self.previous.table not in self.writes:
            raise ValueError(f"stage {self.name}: previous {self.previous.table} is not one of its own tables")
        if self.shard_by is not None and self.shard_by in self.as_paths:
            raise ValueError(f"stage {self.name}: its shard input '{self.shard_by}' is read shard by shard by the runner, not listed in as_paths")

    def calls_llm(self, settings: Any) -> bool:
        return self.uses_llm(settings) if callable(self.uses_llm) else self.uses_llm

    def version_for(self, settings: Any) -> str:
        return self.version_of(settings) if self.version_of is not None else self.version
