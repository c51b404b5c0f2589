"""Mix external datasets (messages format) into a release at a set ratio or count.

Sampling is deterministic and library-independent: each eligible row is ranked by
sha256(seed, row_id) and the lowest n are taken, so the same file and seed give the same rows
on every machine, and growing the source keeps most earlier picks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputError
from curate.ids import content_id
from curate.llm.reasoning import split_reasoning
from curate.records import ReleaseRow, conform
from curate.release.config import MixSource
from curate.release.table_mix import rows_from_table, taken_by_subset
from curate.rowfiles import read_jsonl_rows, read_rows
from curate.workspace import sha256_path

_SUFFIXES = (".jsonl", ".json", ".parquet")


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(path, "mix source not found")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES)
        if not files:
            raise InputError(path, f"folder has no {'/'.join(_SUFFIXES)} files")
        return files
    if path.suffix not in _SUFFIXES:
        raise InputError(path, f"unsupported mix file type (use {', '.join(_SUFFIXES)})")
    return [path]


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Records with their 1-based line (or row) number under `__line`."""
    is_array = path.suffix == ".json" and path.read_text(encoding="utf-8").lstrip().startswith("[")
    rows = read_rows(path) if is_array or path.suffix == ".parquet" else read_jsonl_rows(path)
    return [record | {"__line": n} for n, record in rows]


def load_mix_source(source: MixSource) -> tuple[pl.DataFrame, dict[str, Any]]:
    """All eligible rows of a source as ReleaseRows, and counts of what was skipped and why.

    Eligible: one user turn followed by one assistant turn, both non-empty. Multi-turn
    conversations and system prompts cannot be represented by a ReleaseRow, so they are
    counted (not silently dropped) in the returned stats.
    """
    path = Path(source.path).expanduser()
    rows: list[dict[str, Any]] = []
    skipped = {"filtered": 0, "not_single_turn": 0, "empty": 0}
    for file in _files(path):
        for i, record in enumerate(_read_records(file), start=1):
            line = record.pop("__line", i)
            if source.filter_field and str(record.get(source.filter_field)) not in source.filter_values:
                skipped["filtered"] += 1
                continue
            messages = record.get(source.messages_field)
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages
            ):
                raise InputError(
                    file, "expected a list of {role, content} messages", line=line, field=source.messages_field
                )
            roles = [m["role"] for m in messages]
            if roles != ["user", "assistant"]:
                skipped["not_single_turn"] += 1
                continue
            prompt, reply = (str(m["content"] or "") for m in messages)
            # The same split as for our own generations: a <think> block is reasoning, and one
            # left unclosed leaves no answer (the row is then skipped as empty).
            split = split_reasoning(reply)
            reasoning, answer = split.reasoning, split.answer or ""
            if not prompt.strip() or not answer.strip():
                skipped["empty"] += 1
                continue
            language = record.get(source.language_field) or source.language
            rows.append(
                {
                    "row_id": content_id("mix", prompt, source.name, answer),
                    "prompt": prompt,
                    "reasoning": reasoning,
                    "answer": answer,
                    "language": str(language),
                    "topic": source.topic,
                    "source": source.name,
                }
            )
    frame = pl.DataFrame(
        rows,
        schema={
            "row_id": pl.String,
            "prompt": pl.String,
            "reasoning": pl.String,
            "answer": pl.String,
            "language": pl.String,
            "topic": pl.String,
            "source": pl.String,
        },
    )
    frame = frame.unique("row_id", keep="first", maintain_order=True)
    stats = {
        "files": [str(f) for f in _files(path)],
        "sha256": sha256_path(path),
        "eligible": frame.height,
        "skipped": skipped,
    }
    return conform(frame, ReleaseRow), stats


def sample_rows(pool: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    rank = [hashlib.sha256(f"{seed}\x1f{rid}".encode()).hexdigest() for rid in pool["row_id"]]
    return pool.with_columns(_rank=pl.Series(rank, dtype=pl.String)).sort("_rank").head(n).drop("_rank")


def mix_sources(
    curated: pl.DataFrame, sources: list[MixSource], tables: dict[str, pl.DataFrame] | None = None
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """curated rows plus the sampled rows of each source, and one lineage record per source.

    `tables` holds the workspace tables that `table` sources name, by source name."""
    parts, lineage = mixed_in(curated.height, sources, tables)
    mixed = pl.concat([curated, *parts], how="vertical_relaxed")
    check_unique_row_ids(mixed["row_id"])
    return mixed.sort("row_id"), lineage


def check_unique_row_ids(row_ids: pl.Series) -> None:
    duplicated = row_ids.filter(row_ids.is_duplicated())
    if not duplicated.is_empty():
        raise InputError("mix", f"row ids collide across sources: {duplicated.unique().to_list()[:5]}")


def mixed_in(
    curated_rows: int, sources: list[MixSource], tables: dict[str, pl.DataFrame] | None = None
) -> tuple[list[pl.DataFrame], list[dict[str, Any]]]:
    """The rows each source adds to `curated_rows` curated ones (ReleaseRows, one frame per source)
    and one lineage record per source."""
    parts = []
    lineage = []
    for source in sources:
        if source.table is not None:
            pool, stats = rows_from_table(source, (tables or {})[source.name])
        else:
            pool, stats = load_mix_source(source)
        requested = source.count if source.count is not None else round(source.ratio * curated_rows)
        taken = sample_rows(pool, requested, source.seed)
        parts.append(taken)
        from_table = {"table": source.table, "answered_by": stats["answered_by"], "filtered_by": stats["filtered_by"],
                      "eligible_by_release_path": stats["released_by"],
                      "eligible_by_subset": stats["eligible_by_subset"], "taken_by_subset": taken_by_subset(taken, source.name),
                      "multi_turn": int(taken["context"].is_not_null().sum())} if source.table else {}
        lineage.append(
            {
                **from_table,
                "name": source.name,
                "path": source.path,
                "sha256": stats.get("sha256"),
                "ratio": source.ratio,
                "count": source.count,
                "seed": source.seed,
                "requested": requested,
                "taken": taken.height,
                "eligible": stats["eligible"],
                "skipped": stats["skipped"],
            }
        )
    return parts, lineage
