"""The preference pairs written in bounded memory: texts spilled by output batch, joined back batch by batch.

A pair is mostly text (the prompt, two reasonings, two answers: ~10 KB) and most question x
language groups give pairs, so at full size (1.4M candidates, ~0.6 pairs a candidate) the pairs
with their texts are far larger than memory. The keys (curate.judge.bestof.pair_keys: ids and
scores, no texts) are small, so:

1. the keys, in the pairs' order, are cut into batches of `PAIR_BATCH` consecutive pairs;
2. one pass over the candidates' Parquet file (and one over the rejects') writes the texts of each
   row a batch needs into that batch's scratch file (Arrow IPC, uncompressed), in file order;
3. batch by batch, in order, those texts are read back, joined to the batch's keys
   (bestof.with_pair_texts, as the in-memory path does) and written as one row group.

Rows, order and values are those of with_pair_texts over all the keys at once (tests compare them).
Memory: the keys plus one read batch of `READ_ROWS` candidates with their texts, or one output batch
with its texts two or three times over. Disk: the pairs' texts once more, in a scratch folder
removed when the writing ends.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.judge.bestof import PAIR_SCHEMA, with_pair_texts
from curate.spill import BucketSpill

PAIR_BATCH = 20_000  # pairs per output batch: ~200 MB of text at ~10 KB a pair
READ_ROWS = 8_192  # candidates per read batch: ~32-64 MB of text at 4-8 KB a candidate
_BATCH = "_batch"


def _spill(source: Path, wanted: pl.DataFrame, columns: list[str], folder: Path) -> BucketSpill:
    """Spill candidate_id and `columns` (a column `source` lacks: nulls) of every row of `source`
    whose id `wanted` (candidate_id, _batch) names into its batch's file, in file order."""
    folder.mkdir()
    names = pq.read_schema(source).names
    have = [c for c in columns if c in names]
    with BucketSpill(folder) as spill:
        for record_batch in pq.ParquetFile(source, pre_buffer=False).iter_batches(
                batch_size=READ_ROWS, columns=["candidate_id", *have]):
            ids = pl.from_arrow(record_batch.select(["candidate_id"]))
            assert isinstance(ids, pl.DataFrame)
            hits = ids.with_row_index("_r").join(wanted, on="candidate_id", how="inner").sort(_BATCH, "_r")
            if hits.height:
                taken = record_batch.take(pa.array(hits["_r"].to_numpy()))
                for name in (c for c in columns if c not in have):
                    taken = taken.append_column(name, pa.nulls(taken.num_rows, pa.large_string()))
                spill.write(taken, hits[_BATCH])
    return spill


def _read(spill: BucketSpill | None, batch: int, columns: list[str]) -> pl.DataFrame:
    texts = spill.read(batch) if spill is not None else None
    if texts is None:
        return pl.DataFrame(schema={"candidate_id": pl.String, **{c: pl.String for c in columns}})
    frame = pl.from_arrow(texts)
    assert isinstance(frame, pl.DataFrame)
    return frame.select("candidate_id", *[pl.col(c).cast(pl.String) for c in columns])


def write_pairs(keys: pl.DataFrame, candidates: Path, rejects: Path | None, out: Path) -> int:
    """Write the pairs of `keys` (pair_keys' columns, in order) with their texts to the Parquet file
    `out`: chosen prompt/reasoning/answer and judged rejected answers from `candidates`, filtered ones
    from `rejects`. Returns the number of rows written; nothing half-written is left at `out`."""
    keys = keys.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) // PAIR_BATCH).alias(_BATCH))
    judged = keys["rejected_source"] == "judged"
    from_candidates = pl.concat([
        keys.select("chosen_candidate_id", _BATCH).rename({"chosen_candidate_id": "candidate_id"}),
        keys.filter(judged).select("rejected_candidate_id", _BATCH).rename({"rejected_candidate_id": "candidate_id"}),
    ]).unique()
    from_rejects = keys.filter(~judged).select(pl.col("rejected_candidate_id").alias("candidate_id"), _BATCH).unique()
    written, writer = 0, None
    try:
        with tempfile.TemporaryDirectory(prefix=".judge-pairs-", dir=out.parent) as scratch:
            folder = Path(scratch)
            chosen = _spill(candidates, from_candidates, ["prompt", "reasoning", "answer"], folder / "candidates")
            refusals = (_spill(rejects, from_rejects, ["reasoning", "answer"], folder / "rejects")
                        if rejects is not None and from_rejects.height else None)
            pa.default_memory_pool().release_unused()
            for (batch,), part in keys.partition_by(_BATCH, as_dict=True, maintain_order=True).items():
                texts = _read(chosen, int(batch), ["prompt", "reasoning", "answer"])  # type: ignore[call-overload]
                filtered = _read(refusals, int(batch), ["reasoning", "answer"])  # type: ignore[call-overload]
                pairs = with_pair_texts(part.drop(_BATCH), texts, texts, filtered)
                table = pairs.to_arrow(compat_level=pl.CompatLevel.oldest())
                writer = writer or pq.ParquetWriter(out, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                written += table.num_rows
                del texts, filtered, pairs, table
        if writer is None:
            pl.DataFrame(schema=PAIR_SCHEMA).write_parquet(out, compression="zstd")
        else:
            writer.close()
        with open(out, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        if writer is not None:
            writer.close()
        out.unlink(missing_ok=True)
        raise
    return written
