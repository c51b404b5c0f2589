"""Rows that record a failed LLM call, counted per stage.

A call that failed after its retries becomes a row with `status == "error"` (or a reject with
reason `llm_error`) and its `error` text. A stage whose tables hold such rows is `incomplete`, not
`complete`: its outputs are usable, but a plain rerun runs it again, and the LLM cache makes that
rerun send exactly the failed calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl

MAX_KIND_CHARS = 60


def error_kind(error: str | None) -> str:
    """The error's class: the text before its first ':' ("HTTP 500", "timeout", "invalid_output")."""
    text = (error or "llm error").strip()
    return text.split(":", 1)[0].strip()[:MAX_KIND_CHARS] or "llm error"


def _error_rows(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The failed-call rows (their `error` column only when there is one); a LazyFrame is
    filtered lazily, so only those rows are loaded."""
    lazy = df.lazy()
    columns = lazy.collect_schema().names()
    failed = pl.lit(False)
    if "status" in columns:
        failed = failed | (pl.col("status") == "error").fill_null(False)
    if "reject_reason" in columns:
        failed = failed | (pl.col("reject_reason") == "llm_error").fill_null(False)
    rows = lazy.filter(failed)
    return rows.select("error").collect() if "error" in columns else rows.select(pl.len().alias("n")).collect()


def llm_errors(tables: dict[str, pl.DataFrame] | dict[str, pl.DataFrame | pl.LazyFrame]) -> dict[str, Any]:
    """{count, kinds: {kind: n}, by_table: {table: n}} over every table's failed-call rows."""
    kinds: Counter[str] = Counter()
    by_table: dict[str, int] = {}
    for name, df in tables.items():
        rows = _error_rows(df)
        count = rows.height if "error" in rows.columns else int(rows["n"][0])
        if count:
            by_table[name] = count
            errors = rows["error"].to_list() if "error" in rows.columns else [None] * count
            kinds.update(error_kind(e) for e in errors)
    return {"count": sum(by_table.values()), "kinds": dict(kinds.most_common()), "by_table": by_table}
