"""Exact de-duplication after normalization.

Normalized form: NFKC, lower-cased, punctuation (Unicode category P) removed, whitespace
collapsed. Symbols, digits and the few punctuation marks that carry meaning (% ‰ # @ &) stay:
"5%" and "5" can be different questions.
"""

from __future__ import annotations

import polars as pl


def normalized_text_expr(col: str) -> pl.Expr:
    """The dedupe key of a text column; empty results become null (never merged)."""
    norm = (
        pl.col(col)
        .str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_all(r"[\p{P}&&[^%‰#@&]]+", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )
    return pl.when(norm == "").then(None).otherwise(norm)


def normalize_texts(texts: list[str | None]) -> list[str | None]:
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    return frame.select(normalized_text_expr("text")).to_series(0).to_list()
