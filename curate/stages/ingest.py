"""Read blocked seed prompts from JSONL, JSON, CSV/TSV, Parquet, plain text or a saved `datasets` folder.

Everything is validated before anything is written: bad input raises one `InputError` naming
the file, the line (or row) and the field.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from curate.config import IngestConfig, LangIdConfig
from curate.errors import InputError
from curate.ids import content_id, normalize_text
from curate.records import Seed, conform
from curate.stages.declaration import Stage
from curate.tables import SEEDS
from curate.text.langid import detect_languages, model_file

TEXT_FIELD_CANDIDATES = ("prompt", "text", "question", "instruction", "query", "input", "content")
ID_FIELD_CANDIDATES = ("id", "seed_id", "prompt_id", "uid")
LANGUAGE_FIELD_CANDIDATES = ("language", "lang", "locale")
TOPIC_FIELD_CANDIDATES = ("topic", "category")


class IngestStageConfig(BaseModel):
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)


Row = tuple[int, dict[str, Any]]  # (1-based line or row number, fields)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(path, f"not valid UTF-8 (byte {exc.start}: {exc.reason}); re-save the file as UTF-8", line=line) from exc


def read_jsonl_rows(path: Path) -> Iterator[Row]:
    """(line, object) for each non-blank line of a JSONL file; bad lines raise InputError naming the line."""
    for n, raw in enumerate(_decode(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON: {exc.msg} at column {exc.colno}", line=n) from exc
        if not isinstance(obj, dict):
            raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=n)
        yield n, obj


def _rows_json(path: Path) -> Iterator[Row]:
    text = _decode(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc.msg}", line=exc.lineno) from exc
    if not isinstance(obj, list):
        raise InputError(path, "expected a JSON array of objects (use .jsonl for one object per line)")
    for n, item in enumerate(obj, start=1):
        if not isinstance(item, dict):
            raise InputError(path, f"array item {n} is {type(item).__name__}, expected an object")
        yield n, item


def _rows_csv(path: Path, delimiter: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        return
    for record in reader:
        if None in record:
            raise InputError(path, f"row has {len(reader.fieldnames) + len(record[None])} fields, header has {len(reader.fieldnames)}", line=reader.line_num)
        yield reader.line_num, dict(record)


def _rows_text(path: Path) -> Iterator[Row]:
    for n, raw in enumerate(_decode(path).splitlines(), start=1):
        if raw.strip():
            yield n, {"prompt": raw.strip()}


def _rows_frame(df: pl.DataFrame) -> Iterator[Row]:
    for n, row in enumerate(df.iter_rows(named=True), start=1):
        yield n, row


def _rows_datasets_dir(path: Path) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(path, f"not a folder saved with datasets.save_to_disk: {exc}") from exc
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    yield from _rows_frame(pl.from_arrow(ds.data.table))


def read_rows(path: Path) -> Iterator[Row]:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        return _rows_datasets_dir(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl_rows(path)
    if suffix == ".json":
        return _rows_json(path)
    if suffix in (".csv", ".tsv"):
        return _rows_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        try:
            return _rows_frame(pl.read_parquet(path))
        except Exception as exc:  # polars raises several types for corrupt files
            raise InputError(path, f"not a readable Parquet file: {exc}") from exc
    if suffix in (".txt", ".text", ""):
        return _rows_text(path)
    raise InputError(path, f"unsupported file type '{suffix}' (use .jsonl, .json, .csv, .tsv, .parquet, .txt or a datasets folder)")


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


def _seeds_from_file(path: Path, cfg: IngestConfig) -> list[dict[str, Any]]:
    rows = list(read_rows(path))
    if not rows:
        raise InputError(path, "file is empty: no seed prompts found")
    columns = list(rows[0][1].keys())
    text_f = _pick(path, columns, cfg.text_field, TEXT_FIELD_CANDIDATES, required=True)
    id_f = _pick(path, columns, cfg.id_field, ID_FIELD_CANDIDATES, required=False)
    lang_f = _pick(path, columns, cfg.language_field, LANGUAGE_FIELD_CANDIDATES, required=False)
    topic_f = _pick(path, columns, cfg.topic_field, TOPIC_FIELD_CANDIDATES, required=False)

    seen_ids: dict[str, int] = {}
    seeds = []
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
        language = None
        if lang_f is not None and row.get(lang_f) not in (None, ""):
            language = str(row[lang_f]).strip().lower().replace("_", "-").split("-")[0]
        topic = row.get(topic_f) if topic_f else None
        seeds.append(
            {
                "text": text.strip(),
                "source": str(path),
                "source_line": line,
                "source_id": source_id,
                "language": language,
                "topic": str(topic) if topic not in (None, "") else None,
            }
        )
    return seeds


def read_seeds(paths: list[Path], config: IngestConfig, langid: LangIdConfig) -> pl.DataFrame:
    """All seeds from `paths` as a Seed table; identical prompts (after normalization) are kept once."""
    if not paths:
        raise InputError("<none>", "no seed files given")
    records: list[dict[str, Any]] = []
    for path in paths:
        records.extend(_seeds_from_file(Path(path), config))

    unique: dict[str, dict[str, Any]] = {}
    for rec in records:
        # Seeds with their own ids keep them distinct; otherwise identity is the normalized text.
        key = f"id\x1f{rec['source_id']}" if rec["source_id"] else normalize_text(rec["text"])
        if key in unique and rec["source_id"]:
            first = unique[key]
            raise InputError(
                rec["source"], f"duplicate id '{rec['source_id']}' (also {first['source']}:{first['source_line']})",
                line=rec["source_line"], field="id",
            )
        unique.setdefault(key, rec)
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
        s["seed_id"] = content_id("seed", s["source_id"] or s["text"])
    df = pl.DataFrame(seeds, infer_schema_length=None)
    return conform(df, Seed)


def ingest_stage(sources: list[Path], config: IngestStageConfig) -> dict[str, pl.DataFrame]:
    return {"seeds": read_seeds(sources, config.ingest, config.langid)}


STAGE = Stage(
    name="ingest", run=ingest_stage, config=IngestConfig, section="ingest",
    summary="Read seed prompts into the workspace (language detected with fastText where missing).",
    writes=(SEEDS,), external=("sources",),
    settings=lambda cfg, section: IngestStageConfig(ingest=section, langid=cfg.langid),
    depends_on=lambda settings: [model_file(settings.langid.model_path)] if settings.ingest.default_language is None else [],
)
