"""Which text a review judged.

A reviewer judges a candidate's reasoning and answer, so a review belongs to that text, not only
to the candidate: the Argilla record of a candidate is keyed `<candidate_id>@<answer_version>`,
where the answer version is a hash of the reasoning and the answer. A regenerated answer is then a
new record, and reviews of the earlier text (kept as history) no longer decide the candidate.
Records pushed before versions existed are keyed by the bare candidate id (version unknown).
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

SEPARATOR = "@"
VERSION_HEX_CHARS = 12


def answer_version(reasoning: str | None, answer: str | None) -> str:
    payload = json.dumps([reasoning or "", answer or ""], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:VERSION_HEX_CHARS]


# Rows whose texts are turned into Python strings at a time: a full-size candidate table (1.4M rows
# of 2-8 KB) would otherwise be copied whole into Python lists.
VERSION_SLICE_ROWS = 10_000


def with_answer_version(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with an `answer_version` column from its `reasoning` (optional) and `answer` columns."""
    def versions(part: pl.DataFrame) -> pl.Series:
        def column(name: str) -> list[str | None]:
            return part[name].to_list() if name in part.columns else [None] * part.height

        pairs = zip(column("reasoning"), column("answer"), strict=True)
        return pl.Series([answer_version(r, a) for r, a in pairs], dtype=pl.String)

    parts = [versions(part) for part in df.iter_slices(VERSION_SLICE_ROWS)]
    column = pl.concat(parts) if parts else pl.Series([], dtype=pl.String)
    return df.with_columns(column.alias("answer_version"))


def record_key(candidate_id: str, version: str) -> str:
    return f"{candidate_id}{SEPARATOR}{version}"


def split_record_key(key: str) -> tuple[str, str | None]:
    """(candidate_id, answer_version); the version is None for records keyed by the bare id."""
    candidate_id, sep, version = key.rpartition(SEPARATOR)
    return (candidate_id, version) if sep and candidate_id else (key, None)
