"""Releases in bounded memory: batched commit / export / verify give the same content as the
whole-table path, old (v1-hashed) releases still verify, and a full disk leaves no half release."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties

from curate.errors import CurateError
from curate.records import ReleaseRow, conform
from curate.release import (
    HASH_SCHEME,
    ReleaseConfig,
    ReleaseStore,
    content_hash,
    content_hash_v1,
    export_hf,
    format_rows,
)
from curate.release import parts as parts_module
from curate.release import shards as shards_module
from curate.release import store as store_module
from curate.release import stream
from curate.release.store import COMMIT_KEY


def _rows(n: int, answer: str = "a") -> pl.DataFrame:
    return conform(
        pl.DataFrame(
            {
                "row_id": [f"row-{i:04d}" for i in range(n)],
                "prompt": [f"p{i} 中文" for i in range(n)],
                "language": ["en", "zh", "es"][:1 + n % 3] * (n // (1 + n % 3)) + ["en"] * (n % (1 + n % 3)),
                "topic": [None if i % 5 == 0 else f"t{i % 4}" for i in range(n)],
                "reasoning": [None if i % 7 == 0 else f"r{i}" for i in range(n)],
                "answer": [f"{answer}{i}" for i in range(n)],
                "answer_corrected": [i % 2 == 0 for i in range(n)],
                "n_reviews": [i % 3 for i in range(n)],
                "satisfaction_mean": [None if i % 4 == 0 else i / 3 for i in range(n)],
                "seed_ids": [None if i % 6 == 0 else ["s1", f"s{i}"] for i in range(n)],
                "split": ["test" if i % 9 == 0 else "train" for i in range(n)],
            }
        ),
        ReleaseRow,
    )


META = {"config_hash": "x", "config": ReleaseConfig().model_dump(mode="json")}


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches (and Parquet row groups) of 7 rows, so a 60-row release spans many of them."""
    monkeypatch.setattr(stream, "BATCH_ROWS", 7)
    return 7


def test_content_hash_is_independent_of_order_and_batching() -> None:
    rows = _rows(60)
    digest = content_hash(rows)
    assert content_hash(rows.reverse(), batch_rows=7) == digest
    assert content_hash(rows.sample(fraction=1.0, shuffle=True, seed=1).lazy(), batch_rows=11) == digest
    changed = rows.with_columns(pl.when(pl.col("row_id") == "row-0031").then(pl.lit(None)).otherwise("topic").alias("topic"))
    assert content_hash(changed) != digest
    # A field boundary cannot move unnoticed: "ab"+"c" and "a"+"bc" encode differently.
    moved = rows.with_columns(pl.lit("ab").alias("prompt"), pl.lit("c").alias("reasoning"))
    moved2 = rows.with_columns(pl.lit("a").alias("prompt"), pl.lit("bc").alias("reasoning"))
    assert content_hash(moved) != content_hash(moved2)


def test_batched_commit_export_and_verify_match_the_whole_table_path(tmp_path: Path, small_batches: int) -> None:
    rows = _rows(60)
    path = tmp_path / "rows.parquet"
    rows.sample(fraction=1.0, shuffle=True, seed=3).write_parquet(path)
    store = ReleaseStore(tmp_path / "store")
    result = store.commit(pl.scan_parquet(path), META)
    manifest = result.manifest
    assert manifest["hash_scheme"] == HASH_SCHEME and manifest["rows"] == 60
    assert manifest["content_hash"] == content_hash(rows)
    assert manifest["by_split"] == {"train": 53, "test": 7}
    # The data went in batch-sized row groups, zstd-compressed.
    data = tmp_path / "store" / "rows" / manifest["files"][0]["path"]
    meta = pq.ParquetFile(data).metadata
    assert meta.num_row_groups >= math.ceil(60 / small_batches)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert store.read(1).equals(rows.sort("row_id"))
    assert sum(b.height for b in store.batches(1)) == 60 and max(b.height for b in store.batches(1)) <= small_batches
    report = store.verify(1)
    assert report.ok, report.problems
    assert report.rows_checked == 60

    dest = export_hf(store, 1, tmp_path / "hf", "messages", ReleaseConfig(shard_rows=4))
    exported = pl.concat([pl.read_parquet(f) for f in sorted((dest / "data").rglob("*.parquet"))]).sort("row_id")
    whole = format_rows(store.read(1).filter(pl.col("split") != "test"), "messages").sort("row_id")
    assert exported.equals(whole)
    for lang in ("en", "zh", "es"):
        files = sorted((dest / "data" / lang).glob("*.parquet"))
        total = whole.filter(pl.col("language") == lang).height
        assert len(files) == math.ceil(total / 4)
        assert all(f.name.endswith(f"-of-{len(files):05d}.parquet") for f in files)
        assert [pq.ParquetFile(f).metadata.num_rows for f in files[:-1]] == [4] * (len(files) - 1)
    assert "this folder holds 53" in (dest / "README.md").read_text()


def _commit_as_v1(store: ReleaseStore, rows: pl.DataFrame) -> dict:
    """A release exactly as the store wrote them before hash schemes: content_hash_v1 of the rows
    sorted by row_id, no `hash_scheme` key, snappy-compressed `write_delta`."""
    rows = rows.sort("row_id")
    body = {
        "config_hash": "old", "version": 1, "delta_version": 0, "commit_id": "c" * 32,
        "content_hash": content_hash_v1(rows), "schema_version": 1, "created_at": "2026-01-01T00:00:00+00:00",
        "parent": None, "rows": rows.height, "by_language": {}, "by_topic": {}, "by_source": {}, "by_split": {},
        "by_language_topic": {},
    }
    rows.write_delta(store.table_uri, mode="overwrite", delta_write_options={
        "commit_properties": CommitProperties(custom_metadata={COMMIT_KEY: json.dumps(body, sort_keys=True)}),
        "configuration": store_module.TABLE_PROPERTIES})
    return store._finish(body)


def test_a_release_hashed_with_v1_still_verifies_and_tampering_is_still_found(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "store")
    old = _commit_as_v1(store, _rows(30))
    assert "hash_scheme" not in old
    new = store.commit(_rows(30, answer="b"), {"config_hash": "new"})
    assert new.version == 2 and new.manifest["hash_scheme"] == HASH_SCHEME
    reports = store.verify_all()
    assert [r.ok for r in reports] == [True, True], [r.problems for r in reports]
    # The v1 check is still a real check: a manifest claiming another hash is named.
    manifest_path = tmp_path / "store" / "manifests" / "000001.json"
    edited = json.loads(manifest_path.read_text()) | {"content_hash": "0" * 64}
    manifest_path.write_text(json.dumps(edited))
    problems = store.verify(1).problems
    assert any("content hash" in p for p in problems), problems


def test_unknown_hash_scheme_is_a_verification_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ReleaseStore(tmp_path / "store")
    monkeypatch.setattr(store_module, "HASH_SCHEME", "from-the-future/v9")
    store.commit(_rows(5), META)
    problems = store.verify(1).problems
    assert any("unknown content hash scheme 'from-the-future/v9'" in p for p in problems), problems


def _disk_full_after(writes: int, monkeypatch: pytest.MonkeyPatch, module) -> None:
    """The `writes`+1-th Parquet write through `module`'s pyarrow fails as on a full disk."""
    calls = {"n": 0}
    real_write = pq.ParquetWriter.write_table

    def write_table(self, table, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == writes + 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, table, *args, **kwargs)

    monkeypatch.setattr(module.pq.ParquetWriter, "write_table", write_table)


def _data_files_on_disk(store_root: Path) -> set[str]:
    return {p.name for p in (store_root / "rows").glob("*.parquet")}


def test_a_release_that_runs_out_of_disk_leaves_the_previous_one_intact(
    tmp_path: Path, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ReleaseStore(tmp_path / "store")
    store.commit(_rows(60), META)
    before = _data_files_on_disk(tmp_path / "store")
    _disk_full_after(3, monkeypatch, parts_module)
    with pytest.raises(Exception) as failure:
        store.commit(_rows(60, answer="b"), META)
    assert "No space left on device" in str(failure.value)
    assert store.versions() == [1]
    assert _data_files_on_disk(tmp_path / "store") == before  # the new release's files are gone again
    assert store.verify(1).ok, store.verify(1).problems
    assert store.read("latest")["answer"].str.starts_with("a").all()
    monkeypatch.undo()  # space is back: the next release is number 2 and everything verifies
    assert store.commit(_rows(60, answer="b"), META).version == 2
    assert all(r.ok for r in store.verify_all())


def test_an_export_that_runs_out_of_disk_leaves_nothing_behind(
    tmp_path: Path, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ReleaseStore(tmp_path / "store")
    store.commit(_rows(60), META)
    _disk_full_after(3, monkeypatch, shards_module)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="No space left"):
        export_hf(store, 1, out / "hf", "messages", ReleaseConfig(shard_rows=4))
    assert list(out.iterdir()) == []  # neither the folder nor its temporary sibling
    assert store.verify(1).ok


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs: a real full disk. Needs root (mount); skipped where mounting is not allowed."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _incompressible(n: int) -> pl.DataFrame:
    import os

    rows = _rows(n)
    return rows.with_columns(pl.Series("answer", [os.urandom(4096).hex() for _ in range(n)]))


def test_a_release_on_a_full_disk_fails_cleanly(small_disk: Path, small_batches: int) -> None:
    store = ReleaseStore(small_disk / "store")
    store.commit(_rows(60), META)
    with pytest.raises(Exception, match="(?i)space|os error 28"):
        store.commit(_incompressible(2000), META)  # ~8 MB once compressed, on a 4 MB disk
    assert store.versions() == [1]
    report = store.verify(1)
    assert report.ok, report.problems
    assert store.read("latest")["answer"].str.starts_with("a").all()


def test_an_export_to_a_full_disk_fails_cleanly(tmp_path: Path, small_disk: Path) -> None:
    store = ReleaseStore(tmp_path / "store")
    store.commit(_incompressible(2000), META)
    with pytest.raises(OSError):
        export_hf(store, 1, small_disk / "hf", "messages", ReleaseConfig(shard_rows=500))
    assert list(small_disk.iterdir()) == []
    assert store.verify(1).ok


# The v2 content hash of `_rows(60)` as the first v2 implementation (one sha256 and one Python
# integer sum per row) computed it: releases it wrote must keep verifying.
V2_HASH_OF_60_ROWS = "83f1f892adff3873998fcbd9d04e1c11433096a81b1ff5f77d46b9e505f8845c"


def test_the_v2_content_hash_has_not_changed() -> None:
    assert content_hash(_rows(60)) == V2_HASH_OF_60_ROWS
    assert content_hash(_rows(60), batch_rows=7) == V2_HASH_OF_60_ROWS


def test_counts_from_batches_equal_the_whole_table_counts(tmp_path: Path, small_batches: int) -> None:
    from curate.release.rows import counts

    rows = _rows(60).with_columns(language=pl.Series([["en", "zh", "es", None][i % 4] for i in range(60)]))
    manifest = ReleaseStore(tmp_path / "store").commit(rows.sample(fraction=1.0, shuffle=True, seed=5), META).manifest
    for column in ("language", "topic", "source", "split"):
        assert manifest[f"by_{column}"] == counts(rows, column), column
    nested = {("(none)" if lang is None else lang): counts(rows.filter(pl.col("language").eq_missing(lang)), "topic")
              for lang in ("en", "es", "zh", None)}
    assert manifest["by_language_topic"] == dict(sorted(nested.items()))
    assert manifest["by_topic"]["(none)"] == 12  # null topics are counted, as "(none)"


def test_duplicated_row_ids_across_batches_are_refused_and_leave_no_files(tmp_path: Path, small_batches: int) -> None:
    store = ReleaseStore(tmp_path / "store")
    store.commit(_rows(60), META)
    before = _data_files_on_disk(tmp_path / "store")
    rows = _rows(60).with_columns(
        pl.when(pl.col("row_id") == "row-0059").then(pl.lit("row-0003")).otherwise("row_id").alias("row_id"))
    with pytest.raises(CurateError, match=r"unique row_id; duplicated: \['row-0003'\]"):
        store.commit(rows.lazy(), META)
    assert store.versions() == [1] and _data_files_on_disk(tmp_path / "store") == before
    # Ids that only share a 64-bit hash are not duplicates: the ids themselves are compared.
    distinct = pl.LazyFrame({"row_id": ["a", "b"]})
    assert parts_module.duplicated_ids(distinct, [h for h in distinct.collect()["row_id"].hash(parts_module._ID_SEED)]) == []


def test_an_unchanged_release_is_not_written_again(tmp_path: Path, small_batches: int) -> None:
    store = ReleaseStore(tmp_path / "store")
    first = store.commit(_rows(60), META)
    before = _data_files_on_disk(tmp_path / "store")
    again = store.commit(_rows(60).reverse().lazy(), META, tags=["again"])
    assert not again.created and again.version == first.version == 1
    assert _data_files_on_disk(tmp_path / "store") == before  # the pass's files were removed
    assert store.tags()["again"]["version"] == 1


def test_a_release_spans_several_data_files(tmp_path: Path, small_batches: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_module, "FILE_BATCHES", 2)  # a file every 14 rows
    store = ReleaseStore(tmp_path / "store")
    manifest = store.commit(_rows(60), META).manifest
    assert len(manifest["files"]) == math.ceil(60 / 14)
    assert store.read(1).equals(_rows(60).sort("row_id"))
    assert store.verify(1).ok
    second = store.commit(_rows(40, answer="b"), META)  # an overwrite: release 2 holds only its own files
    assert {f["path"] for f in second.manifest["files"]}.isdisjoint({f["path"] for f in manifest["files"]})
    assert store.read(2).height == 40 and store.read(1).height == 60
    assert all(r.ok for r in store.verify_all())


def test_prefetch_hands_on_items_and_errors_and_stops_early() -> None:
    assert list(stream.prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        list(stream.prefetch(failing()))
    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i

    items = stream.prefetch(endless())
    assert next(items) == 0
    items.close()  # the producer stops too, one or two items ahead at most
    assert len(produced) <= 3


def test_a_release_committed_from_a_parquet_path_equals_one_from_a_lazy_scan(tmp_path: Path, small_batches: int) -> None:
    rows = _rows(60)
    path = tmp_path / "rows.parquet"
    rows.drop("context", "satisfaction_mean").write_parquet(path, row_group_size=25)  # optional columns missing
    from_path = ReleaseStore(tmp_path / "a").commit(path, META).manifest
    from_scan = ReleaseStore(tmp_path / "b").commit(pl.scan_parquet(path), META).manifest
    assert from_path["content_hash"] == from_scan["content_hash"]
    assert from_path["rows"] == 60 and from_path["by_split"] == from_scan["by_split"]
    read = ReleaseStore(tmp_path / "a").read(1)
    assert read["context"].is_null().all() and read.drop("context", "satisfaction_mean").equals(
        rows.drop("context", "satisfaction_mean").sort("row_id"))


def test_a_commit_that_fails_after_taking_effect_keeps_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable

    store = ReleaseStore(tmp_path / "store")
    store.commit(_rows(20), META)
    real = DeltaTable.create_write_transaction

    def commits_then_fails(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise OSError("connection lost after the commit")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commits_then_fails)
    with pytest.raises(OSError, match="connection lost"):
        store.commit(_rows(20, answer="b"), META)
    monkeypatch.undo()
    # The Delta version exists and its files were kept; the next commit completes its manifest.
    assert store.commit(_rows(20, answer="c"), META).version == 3
    assert store.versions() == [1, 2, 3] and all(r.ok for r in store.verify_all())
