"""The release stage's rows in bounded memory: decide from small facts, then join the long texts back.

A release row is mostly text (prompt, reasoning, answer: 2-8 KB) and a few small fields. The
decision (reviews, routing, drafts, lineage, split, mix sampling) needs only the small fields, so:

1. `read_facts`: one pass over the candidates' Parquet file, batch by batch, keeps each
   candidate's small facts (curate.release.rows.candidate_facts) and drops its texts;
2. `curate.release.rows.decide_rows` picks the released rows from the facts, and the mix sources
   add theirs (already whole rows, small);
3. `write_rows`: the released rows, in `row_id` order, are cut into buckets of `BUCKET_ROWS`
   consecutive rows. A second pass over the candidates' file spills each released candidate's
   texts into its bucket's file (Arrow IPC, uncompressed); then bucket by bucket, in order, the texts are
   read back, joined to the bucket's facts (`rows.with_texts`) and written as one row group of
   the output Parquet file.

Rows and their order are those of `build_release_rows` + `mix_sources` (a test compares them).
Memory: the facts (~0.3-0.5 KB a candidate, without texts) plus a per-batch constant: one read batch
of `stream.BATCH_ROWS` candidates with its texts, or one bucket with its texts two or three times over
(the spilled texts, the joined rows, their Arrow copy for the writer). Disk: the released texts once
more, uncompressed, in a scratch folder removed when the stage ends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.release import stream
from curate.release.rows import POSITION, TEXT_COLUMNS, candidate_facts, with_texts
from curate.spill import BucketSpill

# Released rows per bucket: like a store batch, 80-160 MB of text at 4-8 KB a row.
BUCKET_ROWS = stream.BATCH_ROWS
_BUCKET = "_bucket"


# Row groups up to this many rows are read a column chunk at a time; larger ones page by page.
WHOLE_CHUNK_ROWS = 4 * stream.BATCH_ROWS


def _file_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    # No pre-buffering or read-ahead: a batch is read when asked for. Unbuffered, pyarrow holds one
    # row group's column chunk at a time, which reads twice as fast as a 1 MB buffered stream (the
    # streamed tables here have 8,192-row groups); a file with larger row groups (a frame written
    # whole: up to 262,144 rows, ~1 GB of text) is read through the buffered stream, page by page.
    metadata = pq.read_metadata(path)
    largest = max((metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)), default=0)
    buffered = {"buffer_size": 1 << 20} if largest > WHOLE_CHUNK_ROWS else {}
    reader = pq.ParquetFile(path, pre_buffer=False, **buffered)
    return reader.iter_batches(batch_size=stream.BATCH_ROWS, columns=columns, use_threads=True)


def read_facts(candidates: Path, reviewed: pl.Series) -> pl.DataFrame:
    """Every candidate's small facts (rows.candidate_facts), read from its Parquet file batch by batch."""
    parts, offset = [], 0
    names = pq.read_schema(candidates).names
    texts = [c for c in ("reasoning", "answer") if c in names]
    for record_batch in _file_batches(candidates, names):
        # Reasoning (the longest text) is turned into polars only for the reviewed rows.
        batch = pl.from_arrow(record_batch.drop_columns([c for c in ("reasoning", "context") if c in names]))
        assert isinstance(batch, pl.DataFrame)
        rows = batch["candidate_id"].is_in(reviewed.implode()).arg_true()
        judged = pl.from_arrow(record_batch.select(texts).take(pa.array(rows.to_numpy())))
        assert isinstance(judged, pl.DataFrame)
        judged = judged.with_columns((rows.cast(pl.Int64) + offset).alias(POSITION))
        parts.append(candidate_facts(batch, reviewed, offset, judged))
        offset += batch.height
    if not parts:
        return candidate_facts(pl.read_parquet(candidates), reviewed)
    facts = pl.concat(parts)
    # pyarrow's allocator keeps what the read batches freed (0.5 GB at 1.4M candidates); polars,
    # which does the deciding next, has its own allocator and cannot reuse it.
    pa.default_memory_pool().release_unused()
    return facts


def _buckets(accepted: pl.DataFrame, extra: pl.DataFrame) -> pl.DataFrame:
    """(row_id, index into accepted or extra, which of the two, bucket) of every output row, in row_id order."""
    keys = pl.concat([
        accepted.select("row_id", POSITION, _i=pl.int_range(pl.len(), dtype=pl.Int64), _extra=pl.lit(False)),
        extra.select("row_id", pl.lit(None, pl.Int64).alias(POSITION), _i=pl.int_range(pl.len(), dtype=pl.Int64),
                     _extra=pl.lit(True)),
    ]).sort("row_id")
    return keys.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) // BUCKET_ROWS).alias(_BUCKET))


def _spill(candidates: Path, keys: pl.DataFrame, text_columns: list[str], folder: Path) -> None:
    """Write each released candidate's texts (with its position) into its bucket's IPC file.

    Texts stay Arrow: each read batch's released rows are taken once, grouped by bucket, and
    written as zero-copy slices."""
    where = keys.filter(~pl.col("_extra")).select(POSITION, _BUCKET).sort(POSITION)
    positions = where[POSITION]
    offset = 0
    with BucketSpill(folder) as spill:
        for record_batch in _file_batches(candidates, text_columns):
            lo, hi = positions.search_sorted(offset, "left"), positions.search_sorted(offset + record_batch.num_rows, "left")
            if hi > lo:
                wanted = where.slice(lo, hi - lo).sort(_BUCKET, POSITION)
                taken = record_batch.take(pa.array((wanted[POSITION] - offset).to_numpy()))
                spill.write(taken.append_column(POSITION, pa.array(wanted[POSITION].to_numpy())), wanted[_BUCKET])
            offset += record_batch.num_rows


def _gather(frame: pl.DataFrame, index: pl.Series) -> pl.DataFrame:
    return frame.select(pl.all().gather(index))


def write_rows(accepted: pl.DataFrame, extra: pl.DataFrame, candidates: Path, out: Path) -> int:
    """Write the release rows (`accepted`: decide_rows' rows, texts joined from `candidates`, plus
    `extra`: whole ReleaseRows from the mix sources) to the Parquet file `out`, in row_id order; the
    number of answers a reviewer corrected. Scratch files go next to `out` and are removed."""
    keys = _buckets(accepted, extra)
    text_columns = [c for c in TEXT_COLUMNS if c in pq.read_schema(candidates).names]
    corrected = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".release-texts-", dir=out.parent) as scratch:
        folder = Path(scratch)
        _spill(candidates, keys, text_columns, folder)
        pa.default_memory_pool().release_unused()
        try:
            for (bucket,), part in keys.partition_by(_BUCKET, as_dict=True, maintain_order=True).items():
                curated = part.filter(~pl.col("_extra"))
                spilled = BucketSpill(folder).read(bucket)
                texts = pl.from_arrow(spilled) if spilled is not None else None
                rows = []
                if curated.height:
                    assert isinstance(texts, pl.DataFrame)
                    joined = with_texts(_gather(accepted, curated["_i"]), texts)
                    corrected += int(joined["answer_corrected"].sum())
                    rows.append(joined)
                if curated.height < part.height:
                    rows.append(_gather(extra, part.filter(pl.col("_extra"))["_i"]))
                bucket_rows = pl.concat(rows, how="vertical_relaxed")
                if len(rows) > 1:
                    bucket_rows = bucket_rows.sort("row_id")
                # Mixed-in rows are never evaluation prompts.
                bucket_rows = bucket_rows.with_columns(pl.col("split").fill_null("train"))
                table = bucket_rows.to_arrow(compat_level=pl.CompatLevel.oldest())
                if writer is None:
                    schema = table.schema
                    # Long text: dictionaries and min/max statistics only cost time there.
                    short = [c for c in schema.names if c not in TEXT_COLUMNS]
                    writer = pq.ParquetWriter(out, schema, compression="zstd", use_dictionary=short,
                                              write_statistics=short)
                writer.write_table(table.cast(schema), row_group_size=table.num_rows)
                del texts, rows, bucket_rows, table
        except BaseException:
            if writer is not None:
                writer.close()
            out.unlink(missing_ok=True)  # nothing half-written is left for the stage store to take
            raise
        if writer is not None:
            writer.close()
    with open(out, "rb+") as f:
        os.fsync(f.fileno())
    return corrected
