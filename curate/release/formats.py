"""The training formats a release can be written in.

- messages:        [{role: user, content: prompt}, {role: assistant, content: <think>reasoning</think> answer}],
                   after the earlier turns of a multi-turn row (its `context`)
- reasoning:       prompt, reasoning, response (reasoning as its own field)
- prompt_response: prompt, response (the answer only)

Every format keeps the metadata columns (row_id, language, topic, source, review stats, lineage IDs).
"""

from __future__ import annotations

import polars as pl

from curate.errors import ConfigError
from curate.release.config import OUTPUT_FORMATS
from curate.release.rows import RELEASE_COLUMNS

_TEXT_COLUMNS = ("prompt", "reasoning", "answer")
METADATA_COLUMNS = [c for c in RELEASE_COLUMNS if c not in _TEXT_COLUMNS]


def check_format(fmt: str) -> str:
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown output format '{fmt}' (use one of: {', '.join(OUTPUT_FORMATS)})")
    return fmt


def format_rows(
    rows: pl.DataFrame, fmt: str, *, think_open: str = "<think>\n", think_close: str = "\n</think>\n\n"
) -> pl.DataFrame:
    check_format(fmt)
    metadata = [c for c in METADATA_COLUMNS if c in rows.columns]
    if fmt == "messages":
        has_reasoning = pl.col("reasoning").is_not_null() & (pl.col("reasoning").str.strip_chars() != "")
        assistant = (
            pl.when(has_reasoning)
            .then(pl.concat_str(pl.lit(think_open), pl.col("reasoning"), pl.lit(think_close), pl.col("answer")))
            .otherwise(pl.col("answer"))
        )
        turn = pl.Struct({"role": pl.String, "content": pl.String})
        last = pl.concat_list(
            pl.struct(role=pl.lit("user"), content=pl.col("prompt")),
            pl.struct(role=pl.lit("assistant"), content=assistant),
        )
        if "context" in rows.columns and rows["context"].is_not_null().any():
            earlier = pl.col("context").str.json_decode(pl.List(turn))
            messages = pl.when(pl.col("context").is_null()).then(last).otherwise(pl.concat_list(earlier, last))
        else:
            messages = last
        return rows.select(messages.alias("messages"), *(c for c in metadata if c != "context"))
    if fmt == "reasoning":
        return rows.select("prompt", "reasoning", pl.col("answer").alias("response"), *metadata)
    return rows.select("prompt", pl.col("answer").alias("response"), *metadata)
