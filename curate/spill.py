"""Scratch spill files by bucket: rows sorted by bucket are appended to one Arrow IPC file per bucket,
then read back bucket by bucket. What keeps a join of long texts in bounded memory (the release
stage's rows, the judge's preference pairs): one pass over a large file spills the wanted rows'
texts, and each bucket's texts are joined back alone.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

# Uncompressed: the spill is read back once, soon, and CPU is what the steps are short of.
_OPTIONS = ipc.IpcWriteOptions(compression=None)


class BucketSpill:
    """One IPC file per bucket in `folder` (which must exist); use as a context manager so that
    every file is closed (and readable) however the writing ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writers: dict[int, ipc.RecordBatchFileWriter] = {}

    def path(self, bucket: int) -> Path:
        return self.folder / f"{bucket:06d}.arrow"

    def write(self, rows: pa.RecordBatch, buckets: pl.Series) -> None:
        """Append `rows` to their buckets' files; `buckets` (one per row) is sorted, so each
        bucket's rows are one zero-copy slice."""
        bounds = pl.DataFrame({"_b": buckets}).with_row_index("_r").group_by("_b", maintain_order=True).agg(
            start=pl.col("_r").first(), n=pl.len())
        for bucket, start, n in bounds.iter_rows():
            if bucket not in self._writers:
                self._writers[bucket] = ipc.new_file(self.path(bucket), rows.schema, options=_OPTIONS)
            self._writers[bucket].write_batch(rows.slice(start, n))

    def read(self, bucket: int) -> pa.Table | None:
        """A bucket's rows (memory-mapped), or None when none were spilled into it."""
        path = self.path(bucket)
        return ipc.open_file(pa.memory_map(str(path))).read_all() if path.exists() else None

    def __enter__(self) -> BucketSpill:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
