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


# Rows hashed at a time: their JSON is built as a few copies of their texts (and a full-size
# candidate table, 1.4M rows of 2-8 KB, must never be copied whole).
VERSION_SLICE_ROWS = 500


def json_string(text: pl.Expr) -> pl.Expr:
    """`text` as a JSON string literal, the bytes `json.dumps(text, ensure_ascii=False)` writes
    (null stays null), so content hashes are built in polars instead of one `json.dumps` per row.
    polars' JSON writer escapes as Python does (the quote, the backslash, \\b \\f \\n \\r \\t, other
    control characters as lowercase \\u00XX, nothing else); tests/test_review_push_payloads.py checks
    it against json.dumps on every control character and non-ASCII text."""
    member = pl.struct(text.alias("s")).struct.json_encode()  # {"s":"<escaped>"}
    return pl.when(text.is_not_null()).then(member.str.strip_prefix('{"s":').str.strip_suffix("}"))


def sha256_hex(texts: pl.Series) -> list[str]:
    """sha256 hex digest of each string's UTF-8 bytes (no nulls)."""
    return [hashlib.sha256(b).hexdigest() for b in texts.cast(pl.Binary).to_list()]


def with_answer_version(df: pl.DataFrame) -> pl.DataFrame:
    """`df` with an `answer_version` column from its `reasoning` (optional) and `answer` columns:
    `answer_version` of each row, its JSON built by polars and hashed slice by slice."""
    def text(name: str) -> pl.Expr:
        return json_string(pl.col(name).cast(pl.String).fill_null("") if name in df.columns else pl.lit(""))

    # json.dumps([reasoning, answer]) with its default ", " separator.
    payload = pl.concat_str(pl.lit("["), text("reasoning"), pl.lit(", "), text("answer"), pl.lit("]"))
    parts = [pl.Series([h[:VERSION_HEX_CHARS] for h in sha256_hex(part.select(payload).to_series())], dtype=pl.String)
             for part in df.iter_slices(VERSION_SLICE_ROWS)]
    column = pl.concat(parts) if parts else pl.Series([], dtype=pl.String)
    return df.with_columns(column.alias("answer_version"))


def record_key(candidate_id: str, version: str) -> str:
    return f"{candidate_id}{SEPARATOR}{version}"


def split_record_key(key: str) -> tuple[str, str | None]:
    """(candidate_id, answer_version); the version is None for records keyed by the bare id."""
    candidate_id, sep, version = key.rpartition(SEPARATOR)
    return (candidate_id, version) if sep and candidate_id else (key, None)
