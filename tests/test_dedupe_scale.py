"""Scale: the embedding cache reads only what is new and compacts; one language fans out over
real Dask worker processes (embedding chunks and search cells) with the same result as in process."""

from __future__ import annotations

import csv
import multiprocessing
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.stages.dedupe import DedupeConfig, EmbeddingCache, dask_map, dedupe_frame
from curate.stages.dedupe import cache as cache_module

REPO = Path(__file__).resolve().parents[1]


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _keys(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode().ljust(32, b"\0")[:32] for i in range(n)]


def test_lookups_read_only_new_key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(tmp_path, "model@1")
    cache.add(_keys("a", 5), _vectors(5, 0))
    cache.add(_keys("b", 5), _vectors(5, 1))
    reads: list[str] = []
    real = cache_module._key_frame

    def counting(path, stem):  # a spy: records each key file read
        reads.append(stem)
        return real(path, stem)

    monkeypatch.setattr(cache_module, "_key_frame", counting)
    cache_module.EmbeddingCache._indexes.clear()  # as a fresh process would start
    found, got = cache.lookup(_keys("a", 5) + _keys("b", 5))
    assert found.all() and np.allclose(got[:5], _vectors(5, 0)) and len(reads) == 2
    for _ in range(3):
        cache.lookup(_keys("b", 5))
    assert len(reads) == 2  # no key file reread
    cache.add(_keys("c", 3), _vectors(3, 2))
    found, _ = cache.lookup(_keys("c", 3))
    assert found.all() and len(reads) == 2  # its own write is indexed without reading it back


def _compact(root: str) -> int:
    return EmbeddingCache(root, "model@1").compact()


def test_cache_compacts_and_a_reader_with_a_stale_index_still_finds_everything(tmp_path: Path) -> None:
    writer = EmbeddingCache(tmp_path, "model@1", compact_above=1_000)
    for i in range(6):
        writer.add(_keys(f"s{i}", 4), _vectors(4, i))
    assert writer.shard_count() == 6
    found, _ = writer.lookup(_keys("s0", 4))  # this process now indexes the six shards
    assert found.all()
    # Another process merges the shards under this one's index.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        removed = pool.apply(_compact, (str(tmp_path),))
    assert removed == 6 and writer.shard_count() == 1
    keys = [k for i in range(6) for k in _keys(f"s{i}", 4)]
    found, got = writer.lookup(keys)
    assert found.all() and np.allclose(got, np.concatenate([_vectors(4, i) for i in range(6)]))
    # Crossing compact_above merges on write, keeping every vector.
    small = EmbeddingCache(tmp_path / "auto", "model@1", compact_above=3)
    for i in range(5):
        small.add(_keys(f"t{i}", 2), _vectors(2, 10 + i))
    assert small.shard_count() <= 3
    found, got = small.lookup([k for i in range(5) for k in _keys(f"t{i}", 2)])
    assert found.all() and np.allclose(got, np.concatenate([_vectors(2, 10 + i) for i in range(5)]))


def test_a_held_lock_skips_compaction(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "model@1")
    for i in range(3):
        cache.add(_keys(f"x{i}", 2), _vectors(2, i))
    (cache.dir / ".compact.lock").write_text("")
    assert cache.compact() == 0 and cache.shard_count() == 3


def _questions() -> pl.DataFrame:
    with open(REPO / "data" / "xstest" / "xstest_prompts.csv", newline="", encoding="utf-8") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)][:400]
    return pl.DataFrame({"translation_id": [f"t{i}" for i in range(len(prompts))],
                         "question_id": [f"q{i}" for i in range(len(prompts))],
                         "language": ["en"] * len(prompts), "text": prompts})


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~6 min at load 10 on 2 cores (three processes load the model)
def test_one_language_fans_out_over_dask_worker_processes(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    df = _questions()
    # Small chunks and cells so that one language of 400 rows spreads over both workers.
    config = DedupeConfig(model="minilm-bundled", threshold=0.88, embed_chunk_rows=100, split_above_rows=100,
                          search_jobs_per_partition=3)
    expected = dedupe_frame(df, config, id_col="translation_id", cache_dir=tmp_path / "in-process")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        got = dedupe_frame(df, config, id_col="translation_id", cache_dir=tmp_path / "shared",
                           map_partitions=dask_map(client))
        again = dedupe_frame(df, config, id_col="translation_id", cache_dir=tmp_path / "shared",
                             map_partitions=dask_map(client))
    stats = got.report["dedupe"]["partitions"]["en"]
    assert stats["embed_chunks"] == 4 and len(stats["embed_workers"]) == 2
    assert stats["search_jobs"] == 3 and stats["search_workers"]
    for table in ("translations", "clusters", "pairs_near_threshold"):
        assert got.tables[table].equals(expected.tables[table]), table
    assert got.report["dedupe"]["semantic_duplicates"] > 0
    # The workers shared one cache: the rerun embeds nothing.
    assert again.report["dedupe"]["embeddings_computed"] == 0
    assert again.report["dedupe"]["embeddings_cached"] == got.report["dedupe"]["embeddings_computed"]
