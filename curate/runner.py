"""The one way a declared stage runs: settings from the config, inputs from the workspace, the
services its function asks for, and a fingerprint that covers every input.

`curate <stage>` runs one stage through `run_call`; `curate run` and the Prefect flows run
`curate.pipeline.CURATION` through `run_pipeline`, handing it their own `execute` (a Prefect task
that may fan the stage out by shard; see curate.orchestrate).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curate.config import Config, validate_section
from curate.errors import ConfigError
from curate.identity import path_identity
from curate.llm.cache import LLMCache
from curate.pipeline import CURATION
from curate.progress import progress_bar
from curate.stages.declaration import Previous, Stage
from curate.tables import TableRef
from curate.workspace import StageOutput, StageResult, Workspace

log = logging.getLogger(__name__)

InputRef = str | Path | list[Path]


def stage_settings(stage: Stage, cfg: Config, overrides: Mapping[str, Any] | None = None) -> Any:
    """What `stage.run` receives as `config`: its section of `cfg` (with `overrides` that are set)
    validated by the stage's config model, plus the shared settings it takes."""
    if stage.section is not None:
        raw = getattr(cfg, stage.section).model_dump()
        where = stage.section
    else:
        name = stage.shares_section or stage.name
        raw = dict(cfg.stages.get(name, {}))
        where = f"stages.{name}"
    raw = stage.fill(cfg, raw) | {k: v for k, v in (overrides or {}).items() if v is not None}
    section = validate_section(stage.config, raw, where, cfg.source)
    return stage.settings(cfg, section)


def file_hashes(stage: Stage, settings: Any) -> dict[str, str]:
    """Content identity of every file the stage declares it depends on (for its fingerprint)."""
    paths = [Path(p).expanduser() for p in stage.depends_on(settings) if p is not None]
    return {str(p): path_identity(p) for p in paths}


class Services:
    """What the runner hands a stage function besides its inputs and `config`, by parameter name.

    The LLM cache is opened on first use (a stage that needs none leaves no cache file behind)."""

    def __init__(self, ws: Workspace, cfg: Config, *, refresh: bool = False):
        self.ws, self.cfg, self.refresh = ws, cfg, refresh
        self._cache: LLMCache | None = None

    def llm_cache(self) -> LLMCache:
        if self._cache is None:
            self._cache = LLMCache.for_workspace(self.ws.root)
        return self._cache

    def for_stage(self, stage: Stage, settings: Any) -> dict[str, Any]:
        params = inspect.signature(stage.run).parameters
        offered: dict[str, Callable[[], Any]] = {
            "cache": lambda: self.llm_cache() if stage.calls_llm(settings) else None,
            "refresh": lambda: self.refresh,
            "prices": lambda: self.cfg.prices,
            "cache_dir": lambda: self.ws.root / "cache" / "embeddings",
        }
        return {name: make() for name, make in offered.items() if name in params}

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StageCall:
    """One declared stage, ready to run in one workspace."""

    stage: Stage
    settings: Any
    inputs: dict[str, InputRef]
    files: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def version(self) -> str:
        return self.stage.version_for(self.settings)

    @property
    def uses_llm(self) -> bool:
        return self.stage.calls_llm(self.settings)

    def fingerprint(self, ws: Workspace) -> str:
        return ws.fingerprint(self.name, self.version, self.settings, self.inputs, files=self.files)["fingerprint"]


def resolve_inputs(stage: Stage, settings: Any, have: Callable[[TableRef], bool]) -> tuple[dict[str, TableRef], list[TableRef]]:
    """Each input's table (the first of its refs that `have` accepts) and the required ones missing.

    A missing required input is still named, by its last ref, so the workspace's error says which
    stage to run first."""
    chosen: dict[str, TableRef] = {}
    missing: list[TableRef] = []
    for name, wanted in stage.reads.items():
        if wanted.when is not None and not wanted.when(settings):
            continue
        ref = next((r for r in wanted.refs if have(r)), None)
        if ref is None:
            if wanted.optional:
                continue
            ref = wanted.refs[-1]
            missing.append(ref)
        chosen[name] = ref
    return chosen, missing


def prepare(
    stage: Stage,
    cfg: Config,
    ws: Workspace,
    services: Services,
    *,
    have: Callable[[TableRef], bool],
    sources: list[Path] | None = None,
    inputs: Mapping[str, str | TableRef | None] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[StageCall, list[TableRef]]:
    """The call that runs `stage`, and the required inputs `have` did not find."""
    settings = stage_settings(stage, cfg, overrides)
    chosen, missing = resolve_inputs(stage, settings, have)
    refs: dict[str, InputRef] = {name: str(ref) for name, ref in chosen.items()}
    for name, ref in (inputs or {}).items():
        if ref is not None:
            refs[name] = str(ref)
            missing = [m for m in missing if m not in stage.reads[name].refs]
    for name in stage.external:
        if sources is None:
            raise ConfigError(f"stage {stage.name} needs {name}")
        refs[name] = [Path(p).resolve() for p in sources]
    kwargs = services.for_stage(stage, settings)
    if stage.previous is not None:
        kwargs["previous"] = previous_output(stage.name, stage.previous, settings, ws)
    call = StageCall(stage, settings, refs, files=file_hashes(stage, settings), kwargs=kwargs)
    return call, missing


def previous_output(stage: str, previous: Previous, settings: Any, ws: Workspace) -> pl.LazyFrame | None:
    """A stage's declared own table from its last run, unless missing or a setting in
    `previous.same` changed since (compared with the settings its manifest recorded).

    A lazy scan of its file: prepare runs before the runner knows whether the stage is skipped as
    unchanged, so nothing is read here; a stage that runs reads only the columns it uses."""
    if not ws.has_table(previous.table):
        return None
    last = (ws.manifest(stage) or {}).get("config") or {}
    now = settings.model_dump(mode="json")
    if any(last.get(key) != now.get(key) for key in previous.same):
        return None
    return pl.scan_parquet(ws.table_path(previous.table.stage, previous.table.table))


def with_progress(call: StageCall, enabled: bool) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The stage function and extra kwargs that show its progress: a bar sized by the declared
    total, or the progress-bar factory for a stage that draws its own bars (dedupe)."""
    stage = call.stage
    if "progress" not in inspect.signature(stage.run).parameters:
        return stage.run, {}
    if stage.progress_total is None:
        return stage.run, ({"progress": progress_bar} if enabled else {})

    def run_with_bar(**args: Any) -> StageOutput | dict[str, pl.DataFrame]:
        frames = {k: v for k, v in args.items() if isinstance(v, pl.DataFrame)}
        with progress_bar(stage.name, stage.progress_total(frames, call.settings), enabled=enabled) as advance:
            return stage.run(**args, progress=advance)

    return run_with_bar, {}


def run_call(ws: Workspace, call: StageCall, *, force: bool = False, progress: bool = False, **extra: Any) -> StageResult:
    """Run one prepared stage here (skipped when its fingerprint is unchanged)."""
    func, shown = with_progress(call, progress)
    return ws.run_stage(
        call.name, func, inputs=call.inputs, config=call.settings, version=call.version, files=call.files,
        force=force, paths=call.stage.as_paths, **call.kwargs, **shown, **extra,
    )


def run_pipeline(
    cfg: Config,
    ws: Workspace,
    services: Services,
    execute: Callable[[StageCall], Any],
    *,
    sources: list[Path],
    stages: Iterable[Stage] = CURATION,
    until: str | None = None,
    skip: Iterable[str] = (),
) -> Iterator[Any]:
    """Run the stages in order (through `until`, leaving out `skip`), each reading the tables this
    run produces; yields what `execute` returns for each. A stage whose inputs come only from
    stages left out of the run is left out too, with a warning."""
    planned: set[str] = set()
    for stage in stages:
        if stage.name not in skip:
            call, missing = prepare(stage, cfg, ws, services, have=lambda ref: ref.stage in planned, sources=sources)
            if missing:
                log.warning("stage %s left out: its inputs %s come from stages not in this run", stage.name,
                            [str(m) for m in missing])
            else:
                planned.add(stage.name)
                yield execute(call)
        if stage.name == until:
            return


def summarize_result(result: StageResult) -> dict[str, Any]:
    return {
        "stage": result.stage,
        "skipped": result.skipped,
        "rows": result.rows,
        "duration_s": result.manifest.get("duration_s"),
        "shards": (result.manifest.get("report") or {}).get("shards"),
    }
