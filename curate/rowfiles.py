"""Rows from a data file in any supported format: JSONL, JSON array, CSV/TSV, Parquet, plain text
or a folder saved with `datasets.save_to_disk`. Bad input raises InputError naming the file and line.

Shared by ingest (seed prompts), the safety prompt loader and release mixing, so every reader of
user files has one parser and one wording for bad lines.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputError

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
