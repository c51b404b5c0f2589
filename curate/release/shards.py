"""Parquet shards per language, written from a release batch by batch (bounded memory).

The layout is the one the dataset card's configs name: data/<language>/train-<i>-of-<n>.parquet,
each shard `shard_rows` long except a language's last. Shard counts must be known before the first
file is named, so a first pass counts rows per language from the `language` and `split` columns,
batch by batch; the second pass formats and writes one release batch at a time (the next one is
read and formatted in a thread meanwhile), keeping one open writer per language.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.release.store import ReleaseStore
from curate.release.stream import prefetch

# Columns of long text (or lists of it): dictionary encoding (abandoned after the first pages) and
# min/max statistics only cost time there; the short metadata columns keep both.
_TEXT_COLUMNS = {"messages", "prompt", "reasoning", "response", "context"}


def _short_columns(schema: pa.Schema) -> list[str]:
    return [name for name in schema.names if name not in _TEXT_COLUMNS]


class LanguageShards:
    """Appends rows of one language, rolling to the next shard file every `shard_rows` rows."""

    def __init__(self, folder: Path, total: int, shard_rows: int):
        self.folder, self.shard_rows = folder, shard_rows
        self.shards = max(1, math.ceil(total / shard_rows))
        self.index = self.in_shard = 0
        self.schema: pa.Schema | None = None
        self.writer: pq.ParquetWriter | None = None
        folder.mkdir(parents=True)

    def write(self, table: pa.Table) -> None:
        self.schema = self.schema or table.schema
        table = table.cast(self.schema)
        offset = 0
        while offset < table.num_rows:
            if self.writer is None:
                name = f"train-{self.index:05d}-of-{self.shards:05d}.parquet"
                short = _short_columns(self.schema)
                self.writer = pq.ParquetWriter(
                    self.folder / name, self.schema, compression="zstd", use_dictionary=short, write_statistics=short
                )
            take = min(self.shard_rows - self.in_shard, table.num_rows - offset)
            self.writer.write_table(table.slice(offset, take))
            offset += take
            self.in_shard += take
            if self.in_shard == self.shard_rows:
                self.close()
                self.index, self.in_shard = self.index + 1, 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _kept(batch: pl.DataFrame, include_test: bool) -> pl.DataFrame:
    # Same rule as export.training_rows: without include_test, only rows whose split is not `test`.
    return batch if include_test else batch.filter(pl.col("split") != "test")


def stream_language_shards(
    store: ReleaseStore,
    version: int,
    folder: Path,
    shard_rows: int,
    include_test: bool,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
) -> tuple[list[str], int, int]:
    """Write release `version` (formatted by `transform`) as language shards under `folder`.

    Returns the languages, the rows written and the `test` rows left out."""
    totals: dict[str, int] = {}
    left_out = 0
    for small in store.batches(version, ["language", "split"]):  # counts only, batch by batch
        kept = _kept(small, include_test)
        left_out += small.height - kept.height
        for lang, n in kept.group_by("language").len().iter_rows():
            totals[lang] = totals.get(lang, 0) + n
    languages = sorted(totals)
    writers = {lang: LanguageShards(folder / "data" / lang, totals[lang], shard_rows) for lang in languages}
    written = 0
    try:
        # The next batch is read and formatted in a thread while this one is written.
        for batch in prefetch(_formatted(store.batches(version), include_test, transform)):
            for (lang,), part in batch.partition_by("language", as_dict=True, maintain_order=True).items():
                writers[lang].write(part.to_arrow())
                written += part.height
    finally:
        for writer in writers.values():
            writer.close()
    return languages, written, left_out


def _formatted(
    batches: Iterator[pl.DataFrame], include_test: bool, transform: Callable[[pl.DataFrame], pl.DataFrame]
) -> Iterator[pl.DataFrame]:
    for batch in batches:
        batch = _kept(batch, include_test)
        if batch.height:
            yield transform(batch)
