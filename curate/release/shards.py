"""Parquet shards per language, written from a release batch by batch (bounded memory).

The layout is the one the dataset card's configs name: data/<language>/train-<i>-of-<n>.parquet,
each shard `shard_rows` long except a language's last. Shard counts must be known before the first
file is named, so a first pass reads only the `language` and `split` columns; the second pass
formats and writes one release batch at a time, keeping one open writer per language.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.release.store import ReleaseStore


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
                self.writer = pq.ParquetWriter(self.folder / name, self.schema, compression="zstd")
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
    small = pl.concat(list(store.batches(version, ["language", "split"])), how="vertical")
    kept = _kept(small, include_test)
    totals = dict(kept.group_by("language").len().iter_rows())
    left_out = small.height - kept.height
    languages = sorted(totals)
    writers = {lang: LanguageShards(folder / "data" / lang, totals[lang], shard_rows) for lang in languages}
    written = 0
    try:
        for batch in _formatted(store.batches(version), include_test, transform):
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
