"""A release's data files, written in one pass over its rows.

Each batch is read once: a worker thread hashes it (content hash v2) and tallies it (counts,
row-id check) while the main thread encodes it into a zstd Parquet file; the next batch is read
only after both are done, so at most two batches are in memory. The files go under the Delta
table's folder but stay invisible until the store commits them (`Delta add actions`), so a
failure (full disk, bad row) leaves no release, and the files written so far are removed.

Memory per step: about three copies of one batch (`stream.BATCH_ROWS` rows) plus, for the
unique-`row_id` check, 8 bytes per row (a 64-bit hash of each id; ids are compared exactly only
where two hashes meet), plus one count per distinct (language, topic, source, split).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from curate.release import stream
from curate.release.rows import counts
from curate.release.storage import StoreLocation

# Batches per data file: ~200k rows, ~400 MB of zstd Parquet at 2 KB a row.
FILE_BATCHES = 10
TALLY_COLUMNS = ["language", "topic", "source", "split"]
# Long text: dictionary encoding only costs time there (it falls back to plain at once).
_PLAIN_COLUMNS = {"prompt", "reasoning", "answer", "context"}
_ID_SEED = 0x5EED


class Tally:
    """Counts per (language, topic, source, split) and a 64-bit hash of every row_id."""

    def __init__(self) -> None:
        self.rows = 0
        self.groups = pl.DataFrame(schema={**{c: pl.String for c in TALLY_COLUMNS}, "n": pl.UInt32})
        self.id_hashes: list[np.ndarray] = []

    def update(self, batch: pl.DataFrame) -> None:
        self.rows += batch.height
        grouped = batch.group_by(TALLY_COLUMNS).agg(n=pl.len().cast(pl.UInt32))
        self.groups = pl.concat([self.groups, grouped]).group_by(TALLY_COLUMNS).agg(pl.col("n").sum())
        self.id_hashes.append(batch["row_id"].hash(_ID_SEED).to_numpy())

    def colliding_hashes(self) -> list[int]:
        """row_id hashes seen more than once (a duplicated id, or, very rarely, two ids that collide)."""
        if not self.id_hashes:
            return []
        ids = np.sort(np.concatenate(self.id_hashes))
        return np.unique(ids[1:][ids[1:] == ids[:-1]]).tolist()

    def counts(self, column: str, groups: pl.DataFrame | None = None) -> dict[str, int]:
        """Rows per value of `column`, most first (ties by value, none last), from the tally."""
        return counts(self.groups if groups is None else groups, column, weight="n")

    def nested_counts(self, outer: str, inner: str) -> dict[str, dict[str, int]]:
        out = {}
        for key, group in self.groups.group_by(outer):
            out["(none)" if key[0] is None else str(key[0])] = self.counts(inner, group)
        return dict(sorted(out.items()))


def duplicated_ids(rows: pl.LazyFrame, hashes: list[int]) -> list[str]:
    """The row_ids that really occur twice among those whose hash does (read back from `rows`)."""
    if not hashes:
        return []
    ids = rows.select("row_id").filter(pl.col("row_id").hash(_ID_SEED).is_in(hashes)).collect()["row_id"]
    return ids.filter(ids.is_duplicated()).unique().sort().to_list()


@dataclass
class WrittenFiles:
    """Data files written (relative to the table folder), their add actions and sha256s."""

    schema: pa.Schema
    actions: list[AddAction] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    committed: bool = False  # set once a Delta commit references them: never removed after that


def arrow_schema(rows: pl.LazyFrame) -> pa.Schema:
    # Plain (non-view) Arrow types: what Delta's schema and every Parquet reader know.
    return rows.head(0).collect().to_arrow(compat_level=pl.CompatLevel.oldest()).schema


def write_parts(
    loc: StoreLocation,
    table: str,
    rows: stream.RowSource,
    account: Callable[[pl.DataFrame], None],
) -> WrittenFiles:
    """Write `rows` as Parquet files under `table`, calling `account(batch)` on every batch in a worker
    thread meanwhile. On any failure the files written so far are removed and the error is raised."""
    written = WrittenFiles(arrow_schema(stream.lazy_rows(rows)))
    prefix = f"part-{uuid.uuid4().hex}"
    columns = written.schema.names
    dictionary = [c for c in columns if c not in _PLAIN_COLUMNS]
    writer: pq.ParquetWriter | None = None
    in_file = 0
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="release-hash") as worker:
        try:

            def close_file() -> None:
                nonlocal writer
                assert writer is not None
                writer.close()
                writer = None
                path = written.paths[-1]
                rows_in_file = in_file
                pending.append(worker.submit(_checksum, loc, f"{table}/{path}", path, rows_in_file, written))

            loc.fs.create_dir(loc.path(table), recursive=True)
            for batch in stream.batches(rows):
                if batch.is_empty():
                    continue
                # The worker gets a DataFrame object of its own (a clone shares the data, not the
                # object's lock): polars 2.1 locks each DataFrame object, and `to_arrow` below waits
                # for that lock while holding the GIL, so with both threads on one object it hung
                # when the worker held the lock and waited for the GIL (pola-rs/polars#27472).
                accounted = worker.submit(account, batch.clone())
                if writer is None:
                    path = f"{prefix}-{len(written.paths):05d}.zstd.parquet"
                    written.paths.append(path)
                    writer = pq.ParquetWriter(
                        loc.path(table, path), written.schema, filesystem=loc.fs, compression="zstd",
                        use_dictionary=dictionary, write_statistics=False,
                    )
                    in_file = 0
                writer.write_table(_arrow(batch, written.schema), row_group_size=batch.height)
                in_file += batch.height
                accounted.result()  # the worker is done with this batch before the next one is read
                if in_file >= FILE_BATCHES * stream.BATCH_ROWS:
                    close_file()
            if writer is not None:
                close_file()
            for future in pending:
                future.result()
        except BaseException:
            if writer is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
            worker.shutdown(wait=True, cancel_futures=True)
            remove_parts(loc, table, written.paths)
            raise
    return written


def _arrow(batch: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return batch.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(schema)


def _checksum(loc: StoreLocation, rel: str, path: str, rows: int, written: WrittenFiles) -> None:
    written.checksums[path] = loc.sha256(rel)
    written.actions.append(AddAction(
        path=path, size=int(loc.size(rel) or 0), partition_values={}, modification_time=int(time.time() * 1000),
        data_change=True, stats=json.dumps({"numRecords": rows}),
    ))


def remove_parts(loc: StoreLocation, table: str, paths: list[str]) -> None:
    """Delete data files that were never committed (best effort: they are invisible either way)."""
    for path in paths:
        try:
            loc.fs.delete_file(loc.path(table, path))
        except (FileNotFoundError, OSError):
            pass
