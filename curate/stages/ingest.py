"""Read blocked seed prompts from JSONL, JSON, CSV/TSV, Parquet, plain text or a saved `datasets` folder.

Everything is validated before anything is written: bad input raises one `InputError` naming
the file, the line (or row) and the field. Rows that are readable but unusable go to the
`rejects` table instead, naming file and line: prompts longer than `[ingest] max_prompt_chars`,
and prompts empty once control characters are removed (the rule: curate.text.clean).
Identical prompts (after normalization) are kept once and counted in the report. A seed's ID is
a hash of its normalized text; the source's own id column is kept as `source_id`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from curate.config import IngestConfig, LangIdConfig
from curate.errors import InputError
from curate.ids import content_id, normalize_text
from curate.records import Seed, conform
from curate.rowfiles import read_rows
from curate.stages.declaration import Stage
from curate.tables import INGEST_REJECTS, SEEDS
from curate.text.clean import remove_control_characters
from curate.text.langid import detect_languages, model_file
from curate.workspace import StageOutput

TEXT_FIELD_CANDIDATES = ("prompt", "text", "question", "instruction", "query", "input", "content")
ID_FIELD_CANDIDATES = ("id", "seed_id", "prompt_id", "uid")
LANGUAGE_FIELD_CANDIDATES = ("language", "lang", "locale")
TOPIC_FIELD_CANDIDATES = ("topic", "category")


class IngestStageConfig(BaseModel):
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)


REJECT_SCHEMA = {"source": pl.String, "source_line": pl.Int64, "source_id": pl.String, "reason": pl.String,
                 "detail": pl.String}


def _pick(path: Path, columns: list[str], configured: str | None, candidates: tuple[str, ...], required: bool) -> str | None:
    if configured:
        if configured not in columns:
            raise InputError(path, f"column not found; the file has {columns}", line=1, field=configured)
        return configured
    lowered = {c.lower(): c for c in columns}
    found = next((lowered[c] for c in candidates if c in lowered), None)
    if found is None and required:
        raise InputError(
            path, f"no prompt column; expected one of {list(candidates)} or set [ingest] text_field. Columns: {columns}",
            line=1, field="text",
        )
    return found


def _seeds_from_file(path: Path, cfg: IngestConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(seeds, rejects, kept rows whose control characters were removed) of one file."""
    rows = list(read_rows(path))
    if not rows:
        raise InputError(path, "file is empty: no seed prompts found")
    columns = list(rows[0][1].keys())
    text_f = _pick(path, columns, cfg.text_field, TEXT_FIELD_CANDIDATES, required=True)
    id_f = _pick(path, columns, cfg.id_field, ID_FIELD_CANDIDATES, required=False)
    lang_f = _pick(path, columns, cfg.language_field, LANGUAGE_FIELD_CANDIDATES, required=False)
    topic_f = _pick(path, columns, cfg.topic_field, TOPIC_FIELD_CANDIDATES, required=False)

    seen_ids: dict[str, int] = {}
    seeds, rejects, cleaned = [], [], 0
    for line, row in rows:
        if text_f not in row:
            raise InputError(path, "missing", line=line, field=text_f)
        text = row[text_f]
        if not isinstance(text, str) or not text.strip():
            raise InputError(path, "empty or not text", line=line, field=text_f)
        source_id = None
        if id_f is not None:
            raw_id = row.get(id_f)
            if raw_id is None or str(raw_id).strip() == "":
                raise InputError(path, "empty id", line=line, field=id_f)
            source_id = str(raw_id).strip()
            if source_id in seen_ids:
                raise InputError(path, f"duplicate id '{source_id}' (first seen on line {seen_ids[source_id]})", line=line, field=id_f)
            seen_ids[source_id] = line
        text, removed = remove_control_characters(text)
        text = text.strip()
        reject = {"source": str(path), "source_line": line, "source_id": source_id}
        if not text:
            rejects.append(reject | {"reason": "empty_after_cleaning", "detail": f"{removed} control characters, no text"})
            continue
        if len(text) > cfg.max_prompt_chars:
            rejects.append(reject | {"reason": "too_long",
                                     "detail": f"{len(text)} characters > max_prompt_chars {cfg.max_prompt_chars}"})
            continue
        cleaned += bool(removed)
        language = None
        if lang_f is not None and row.get(lang_f) not in (None, ""):
            language = str(row[lang_f]).strip().lower().replace("_", "-").split("-")[0]
        topic = row.get(topic_f) if topic_f else None
        seeds.append(
            {
                "text": text,
                "source": str(path),
                "source_line": line,
                "source_id": source_id,
                "language": language,
                "topic": str(topic) if topic not in (None, "") else None,
            }
        )
    return seeds, rejects, cleaned


def ingest_seeds(paths: list[Path], config: IngestConfig, langid: LangIdConfig) -> StageOutput:
    """Tables `seeds` (one per normalized prompt text) and `rejects`, with a report of what was
    read, dropped as a duplicate, cleaned and rejected."""
    if not paths:
        raise InputError("<none>", "no seed files given")
    records: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    cleaned = 0
    for path in paths:
        file_seeds, file_rejects, file_cleaned = _seeds_from_file(Path(path), config)
        records.extend(file_seeds)
        rejects.extend(file_rejects)
        cleaned += file_cleaned
    if not records:
        raise InputError(paths[0], f"no usable seed prompts: all {len(rejects)} rows were rejected "
                                   f"({', '.join(sorted({r['reason'] for r in rejects}))})")

    unique: dict[str, dict[str, Any]] = {}
    duplicates: list[dict[str, str]] = []
    for rec in records:
        # Identity is the normalized text, whatever id the source gave it.
        key = normalize_text(rec["text"])
        first = unique.setdefault(key, rec)
        if first is not rec:
            duplicates.append({"text": rec["text"][:80], "at": f"{rec['source']}:{rec['source_line']}",
                               "first": f"{first['source']}:{first['source_line']}"})
    seeds = list(unique.values())

    missing = [i for i, s in enumerate(seeds) if s["language"] is None]
    if config.default_language:
        for i in missing:
            seeds[i]["language"] = config.default_language
    elif missing:
        langs, confs = detect_languages([seeds[i]["text"] for i in missing], langid.model_path)
        for i, lang, conf in zip(missing, langs, confs, strict=True):
            seeds[i]["language"], seeds[i]["language_confidence"] = lang, conf

    for s in seeds:
        s["seed_id"] = content_id("seed", s["text"])
    report = {
        "rows_read": len(records) + len(rejects),
        "duplicates": len(duplicates),
        "duplicate_examples": duplicates[:5],
        "control_characters_removed": cleaned,
        "rejected": {reason: sum(r["reason"] == reason for r in rejects) for reason in sorted({r["reason"] for r in rejects})},
    }
    return StageOutput(
        tables={"seeds": conform(pl.DataFrame(seeds, infer_schema_length=None), Seed),
                "rejects": pl.DataFrame(rejects, schema=REJECT_SCHEMA)},
        report=report,
    )


def read_seeds(paths: list[Path], config: IngestConfig, langid: LangIdConfig) -> pl.DataFrame:
    """All usable seeds from `paths` as a Seed table (see `ingest_seeds` for rejects and counts)."""
    return ingest_seeds(paths, config, langid).tables["seeds"]


def ingest_stage(sources: list[Path], config: IngestStageConfig) -> StageOutput:
    return ingest_seeds(sources, config.ingest, config.langid)


STAGE = Stage(
    name="ingest", run=ingest_stage, config=IngestConfig, section="ingest",
    summary="Read seed prompts into the workspace (language detected with fastText where missing).",
    writes=(SEEDS, INGEST_REJECTS), external=("sources",),
    report_keys=("rows_read", "duplicates", "control_characters_removed", "rejected"),
    settings=lambda cfg, section: IngestStageConfig(ingest=section, langid=cfg.langid),
    depends_on=lambda settings: [model_file(settings.langid.model_path)] if settings.ingest.default_language is None else [],
)
