"""The train/test split of a release, decided per question so that every translation and
candidate of one question lands on the same side and cannot leak from training into evaluation.

A row is in `test` when a seeded sha256 of its question id (or row id) falls below the fraction.
Eval used the same hash before releases carried the column, so old releases split the same way.
"""

from __future__ import annotations

import hashlib

import polars as pl

SPLITS = ("train", "test")


def held_out(keys: pl.Series, fraction: float, seed: int = 0) -> pl.Series:
    """True for the keys in the test split."""
    threshold = int(fraction * 2**32)
    return keys.cast(pl.String).fill_null("").map_elements(
        lambda k: int(hashlib.sha256(f"{seed}\x1f{k}".encode()).hexdigest()[:8], 16) < threshold,
        return_dtype=pl.Boolean,
    ).alias("held_out")


def split_key(df: pl.DataFrame) -> pl.Series:
    key = next(c for c in ("question_id", "row_id", "prompt") if c in df.columns)
    return df[key]


def with_split(rows: pl.DataFrame, fraction: float, seed: int = 0) -> pl.DataFrame:
    """`rows` with a `split` column ("train" or "test")."""
    if rows.is_empty():
        return rows.with_columns(split=pl.lit("train"))
    key = pl.coalesce("question_id", "row_id") if "question_id" in rows.columns else pl.col("row_id")
    test = held_out(rows.select(key.alias("k"))["k"], fraction, seed)
    return rows.with_columns(split=pl.when(test).then(pl.lit("test")).otherwise(pl.lit("train")))
