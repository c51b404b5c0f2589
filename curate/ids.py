"""Stable content IDs.

An ID is a hash of normalized text plus the IDs of the record's parents, so the same input gives
the same ID on every run and machine, and a question asked under two keywords stays two records.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import polars as pl

_SPACE = re.compile(r"\s+")
ID_HEX_CHARS = 16


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed. Punctuation is kept: it can change meaning."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def content_id(kind: str, text: str, *parents: str | int | None) -> str:
    """`kind-<16 hex>` from the normalized text and parent IDs (None parents are skipped)."""
    h = hashlib.sha256()
    h.update(kind.encode())
    h.update(b"\x1f")
    h.update(normalize_text(text).encode())
    for parent in parents:
        if parent is None:
            continue
        h.update(b"\x1f")
        h.update(str(parent).encode())
    return f"{kind}-{h.hexdigest()[:ID_HEX_CHARS]}"


def content_id_expr(kind: str, text_col: str, *parent_cols: str) -> pl.Expr:
    """The same ID as `content_id`, as a polars expression over columns."""
    cols = [text_col, *parent_cols]
    return pl.struct(cols).map_elements(
        lambda row: content_id(kind, row[text_col], *(row[c] for c in parent_cols)),
        return_dtype=pl.String,
    )
