"""The stage store: where stage tables and manifests live in a workspace.

Layout of a workspace (the run directory)::

    <root>/stages/<stage>/<table>.parquet   one file per output table, replaced atomically
    <root>/stages/<stage>/manifest.json     rows, config hash, input hashes, timings, status, report
    <root>/runs/<run_id>.json               which stages ran or were skipped in one run
    <root>/.lock                            serializes runs on one workspace

A stage is skipped when its fingerprint (stage name and version, config hash, hashes of its
inputs) matches a complete manifest whose output files still hash as recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from filelock import FileLock, Timeout
from pydantic import BaseModel

from curate.config import config_hash
from curate.errors import CurateError
from curate.failures import llm_errors
from curate.secrets import redact
from curate.tables import TableRef

MANIFEST = "manifest.json"
FAILURE = "failed.json"
# A stage's outputs can be read by later stages when it is complete, or incomplete (some LLM
# calls failed: those rows carry status "error"); only a complete stage is skipped on rerun.
USABLE_STATUSES = ("complete", "incomplete")
# Rows per row group when a table is streamed to disk: at answers' 2-8 KB a row, 16-64 MB a group.
STREAM_ROW_GROUP_ROWS = 8192


@dataclass
class StageOutput:
    """What a stage returns: its tables, plus optional extra report entries."""

    tables: dict[str, pl.DataFrame]  # or LazyFrames, streamed to disk by Workspace.run_stage, or written files' Paths
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    stage: str
    skipped: bool
    outputs: dict[str, Path]
    manifest: dict[str, Any]

    @property
    def rows(self) -> dict[str, int]:
        return {name: meta["rows"] for name, meta in self.manifest["outputs"].items()}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """Hash of a file, or of every file (relative name and bytes) under a folder."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    # Redaction here is a second line of defence: configs hold env var names, never values.
    atomic_write_text(path, redact(json.dumps(obj, indent=2, sort_keys=True, default=str)) + "\n")


def atomic_write_parquet(path: Path, df: pl.DataFrame | pl.LazyFrame | Path) -> None:
    """Write `df` to `path` atomically; a LazyFrame is streamed (sunk in batches, in order), and a
    Path (a Parquet file already written and synced, in the same folder) is renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(df, Path):
        os.chmod(df, 0o600)  # the same mode as every table written through mkstemp below
        os.replace(df, path)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if isinstance(df, pl.LazyFrame):
            # The sink's default row group is most of a large table, held whole before it is
            # written; a bounded one keeps peak memory to a few row groups, whatever the rows.
            df.sink_parquet(tmp, compression="zstd", statistics=True, maintain_order=True,
                            row_group_size=STREAM_ROW_GROUP_ROWS)
        else:
            df.write_parquet(tmp, compression="zstd", statistics=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summarize_table(df: pl.DataFrame | pl.LazyFrame, examples_per_reason: int = 3) -> dict[str, Any]:
    """Counts per language, topic, status and reject reason, with examples of each reject reason.

    A LazyFrame (a scan of a written table) is summarized without loading it: only the counts
    and examples are collected."""
    lazy = df.lazy()
    columns = lazy.collect_schema().names()
    summary: dict[str, Any] = {"rows": df.height if isinstance(df, pl.DataFrame) else lazy.select(pl.len()).collect().item()}
    for col in ("language", "topic", "status", "reject_reason"):
        if col in columns:
            counts = lazy.group_by(col).len().sort(["len", col], descending=[True, False], nulls_last=True).collect()
            summary[f"by_{col}"] = {str(k): int(v) for k, v in counts.iter_rows()}
    if "reject_reason" in columns:
        text_col = next((c for c in ("answer", "text", "prompt", "keyword") if c in columns), None)
        if text_col:
            # A failed call has no text to show; its error says what went wrong.
            shown = pl.col(text_col)
            if "error" in columns:
                shown = pl.when(pl.col("reject_reason") == "llm_error").then(pl.col("error")).otherwise(shown)
            examples = (
                lazy.filter(pl.col("reject_reason").is_not_null())
                .group_by("reject_reason", maintain_order=True)
                .agg(shown.head(examples_per_reason).str.slice(0, 200))
                .collect()
            )
            summary["reject_examples"] = {r: list(ex) for r, ex in examples.iter_rows()}
    return summary


class WorkspaceLocked(CurateError):
    pass


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.run_id: str | None = None

    # -- paths -----------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / "stages" / stage

    def table_path(self, stage: str, table: str) -> Path:
        return self.stage_dir(stage) / f"{table}.parquet"

    def manifest(self, stage: str) -> dict[str, Any] | None:
        path = self.stage_dir(stage) / MANIFEST
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def failure(self, stage: str) -> dict[str, Any] | None:
        """The last failed attempt of a stage, if it failed after its last good run."""
        path = self.stage_dir(stage) / FAILURE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def stages(self) -> list[str]:
        base = self.root / "stages"
        if not base.exists():
            return []
        return sorted(p.name for p in base.iterdir() if (p / MANIFEST).exists() or (p / FAILURE).exists())

    def read(self, ref: str | TableRef) -> pl.DataFrame:
        """Read a table by `stage/table` reference."""
        ref = TableRef.parse(ref)
        path = self.table_path(ref.stage, ref.table)
        if not path.exists():
            raise CurateError(f"table '{ref}' does not exist in {self.root}; run stage '{ref.stage}' first")
        return pl.read_parquet(path)

    def _input(self, ref: str, as_path: bool) -> pl.DataFrame | Path:
        if not as_path:
            return self.read(ref)
        table = TableRef.parse(ref)
        return self.table_path(table.stage, table.table)

    def has_table(self, ref: str | TableRef) -> bool:
        """Whether the last run of the table's stage wrote it (complete, or incomplete with failed LLM calls)."""
        ref = TableRef.parse(ref)
        manifest = self.manifest(ref.stage)
        return bool(manifest and manifest.get("status") in USABLE_STATUSES and ref.table in manifest.get("outputs", {}))

    # -- locking ---------------------------------------------------------------------------
    @contextmanager
    def locked(self, timeout: float = -1) -> Iterator[str]:
        """Hold the workspace lock for one run; yields the run id. Blocks (or times out)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / ".lock")
        try:
            lock.acquire(timeout=timeout)
        except Timeout as exc:
            raise WorkspaceLocked(f"{self.root}: another run holds the workspace lock") from exc
        self.run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
        self._run_log: list[dict[str, Any]] = []
        self._run_notes: dict[str, Any] = {}
        started = time.time()
        try:
            yield self.run_id
        finally:
            atomic_write_json(
                self.root / "runs" / f"{self.run_id}.json",
                {"run_id": self.run_id, "started_at": started, "finished_at": time.time(), "stages": self._run_log,
                 **self._run_notes},
            )
            self.run_id = None
            lock.release()

    def note_run(self, key: str, value: Any) -> None:
        """Add `key` to this run's log (`runs/<run_id>.json`), e.g. a flow's endpoint utilization."""
        if self.run_id is not None:
            self._run_notes[key] = value

    # -- running stages ---------------------------------------------------------------------
    def _input_hash(self, ref: str | Path | list[Path]) -> str:
        if isinstance(ref, list):
            return hashlib.sha256("".join(self._input_hash(p) for p in ref).encode()).hexdigest()
        if isinstance(ref, Path):
            if not ref.exists():
                raise CurateError(f"{ref}: input not found")
            return sha256_path(ref)
        table = TableRef.parse(ref)
        if not self.has_table(table):
            raise CurateError(f"input '{table}' is missing in {self.root}; run stage '{table.stage}' first")
        return (self.manifest(table.stage) or {})["outputs"][table.table]["sha256"]

    def fingerprint(
        self, stage: str, version: str, config: BaseModel | None, inputs: Mapping[str, str | Path | list[Path]],
        files: Mapping[str, str] | None = None,
    ) -> dict:
        """The stage's identity for this run: name, version, config, input tables and `files` (path ->
        content identity of each file the stage depends on: templates, rules, stoplists, models)."""
        input_hashes = {name: self._input_hash(ref) for name, ref in sorted(inputs.items())}
        cfg_hash = config_hash(config) if config is not None else "none"
        parts: list[Any] = [stage, version, cfg_hash, input_hashes]
        if files:
            parts.append(dict(sorted(files.items())))
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
        return {"fingerprint": digest, "config_hash": cfg_hash, "inputs": input_hashes} | ({"files": dict(files)} if files else {})

    def is_fresh(self, stage: str, fingerprint: str) -> bool:
        manifest = self.manifest(stage)
        if not manifest or manifest.get("status") != "complete" or manifest.get("fingerprint") != fingerprint:
            return False
        for table, meta in manifest["outputs"].items():
            path = self.table_path(stage, table)
            if not path.exists() or sha256_file(path) != meta["sha256"]:
                return False
        return True

    def run_stage(
        self,
        stage: str,
        func: Callable[..., StageOutput | dict[str, pl.DataFrame]],
        *,
        inputs: Mapping[str, str | Path | list[Path]] | None = None,
        config: BaseModel | None = None,
        version: str = "1",
        files: Mapping[str, str] | None = None,
        force: bool = False,
        paths: Collection[str] = (),
        **kwargs: Any,
    ) -> StageResult:
        """Run `func` unless its inputs and config are unchanged since the last complete run.

        `inputs` maps parameter names to `stage/table` refs (read as frames) or external Paths
        or lists of Paths (passed as they are, hashed by content). `kwargs` go to `func` as they are and do not enter the fingerprint,
        so they must not change its output (clients, progress callbacks). Inputs named in `paths` are
        passed as their Parquet file's Path, for a stage that reads them in batches.
        """
        inputs = dict(inputs or {})
        fp = self.fingerprint(stage, version, config, inputs, files)
        if not force and self.is_fresh(stage, fp["fingerprint"]):
            manifest = self.manifest(stage) or {}
            # Inputs are back to those of the good run, so an earlier failure no longer applies.
            (self.stage_dir(stage) / FAILURE).unlink(missing_ok=True)
            self._log_run(stage, "skipped", manifest)
            return StageResult(stage, True, self._outputs(stage, manifest), manifest)

        stage_dir = self.stage_dir(stage)
        manifest: dict[str, Any] = {
            "stage": stage,
            "version": version,
            **fp,
            "config": config.model_dump(mode="json") if config is not None else None,
            "run_id": self.run_id,
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "outputs": {},
        }
        failure_path = stage_dir / FAILURE
        started = time.perf_counter()
        try:
            args = {name: (self._input(ref, name in paths) if isinstance(ref, str) else ref) for name, ref in inputs.items()}
            if config is not None:
                args["config"] = config
            result = func(**args, **kwargs)
            output = result if isinstance(result, StageOutput) else StageOutput(tables=result)
        except BaseException as exc:
            # Outputs and manifest of the last good run stay untouched; the failure is recorded beside them.
            failure = manifest | {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "duration_s": round(time.perf_counter() - started, 3)}
            atomic_write_json(failure_path, failure)
            self._log_run(stage, "failed", failure)
            raise
        # Each table is replaced atomically and the manifest last: after a crash in between, the
        # recorded hashes no longer match and the stage reruns instead of being skipped.
        # A LazyFrame (a sharded stage's merge) is streamed to its file, then counted from the file.
        written: dict[str, pl.DataFrame | pl.LazyFrame] = {}
        for table, df in output.tables.items():
            path = self.table_path(stage, table)
            atomic_write_parquet(path, df)
            written[table] = df if isinstance(df, pl.DataFrame) else pl.scan_parquet(path)
            rows = df.height if isinstance(df, pl.DataFrame) else written[table].select(pl.len()).collect().item()
            manifest["outputs"][table] = {"rows": rows, "sha256": sha256_file(path), "path": path.name}
        for stale in set(self._outputs(stage, self.manifest(stage) or {})) - set(output.tables):
            self.table_path(stage, stale).unlink(missing_ok=True)
        manifest["report"] = {t: summarize_table(df) for t, df in written.items()} | output.report
        # Failed LLM calls leave the stage incomplete: usable outputs, but not skipped next time.
        manifest["llm_errors"] = llm_errors(written)
        manifest["status"] = "incomplete" if manifest["llm_errors"]["count"] else "complete"
        manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        manifest["duration_s"] = round(time.perf_counter() - started, 3)
        atomic_write_json(stage_dir / MANIFEST, manifest)
        failure_path.unlink(missing_ok=True)
        self._log_run(stage, "complete", manifest)
        return StageResult(stage, False, self._outputs(stage, manifest), manifest)

    def _outputs(self, stage: str, manifest: dict[str, Any]) -> dict[str, Path]:
        return {t: self.table_path(stage, t) for t in manifest.get("outputs", {})}

    def _log_run(self, stage: str, status: str, manifest: dict[str, Any]) -> None:
        if self.run_id is not None:
            self._run_log.append(
                {"stage": stage, "status": status, "fingerprint": manifest.get("fingerprint"),
                 "duration_s": manifest.get("duration_s")}
            )
