"""Work units that spread one language over many workers: embedding chunks and search cells.

The dedupe stage hands lists of jobs (keyword-argument dicts) to a `map_jobs(fn, jobs)` callable:
one after another in this process by default, Prefect tasks on Dask when fanned out
(curate.orchestrate, `dask_map` below). Each job names its partition in `key`.

- `embed_chunk`: embeds up to `embed_chunk_rows` texts of one partition; every worker reads and
  writes the one shared embedding cache, so a rerun or a retried chunk embeds nothing twice.
- `search_cells_job`: the exact comparison for a range of k-means cells of one large partition.
  The partition's embeddings and cell plan go to a scratch folder once (.npy files memory-mapped
  by each worker) instead of being shipped with every job.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.stages.dedupe.cache import EmbeddingCache
from curate.stages.dedupe.config import DedupeConfig
from curate.stages.dedupe.device import load_for_config
from curate.stages.dedupe.embed import ProgressFactory, ResolvedModel, embed_texts
from curate.stages.dedupe.search import CellPlan, Pairs, near_pairs, pairs_frame, plan_cells, search_cells

MapJobs = Callable[[Callable[..., Any], list[dict[str, Any]]], list[Any]]


def map_in_process(fn: Callable[..., Any], jobs: list[dict[str, Any]]) -> list[Any]:
    return [fn(**job) for job in jobs]


def _apply(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return fn(**kwargs)


def dask_map(client: Any) -> MapJobs:
    """Run jobs on a dask.distributed Client (results in job order)."""

    def run(fn: Callable[..., Any], jobs: list[dict[str, Any]]) -> list[Any]:
        # Passed as one dict: client.submit keeps keywords such as `key` for itself.
        futures = [client.submit(_apply, fn, job, pure=False) for job in jobs]
        return client.gather(futures)

    return run


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def clean_texts(texts: pl.Series) -> list[str]:
    # Whitespace is collapsed so that formatting-only changes hit the cache.
    return texts.str.normalize("NFKC").str.replace_all(r"\s+", " ").str.strip_chars().to_list()


@dataclass
class EmbeddedChunk:
    key: str
    start: int
    embeddings: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


def embed_chunk(
    texts: list[str], config: DedupeConfig, resolved: ResolvedModel, *, key: str, start: int,
    cache_dir: Path | None = None, progress: ProgressFactory | None = None,
) -> EmbeddedChunk:
    """Embed one chunk of one partition (cache first). Runs on a worker."""
    model, prompt_name = load_for_config(config, resolved)
    cache = EmbeddingCache(cache_dir, resolved.key) if cache_dir is not None else None
    embeddings, stats = embed_texts(
        texts, model, model_key=resolved.key, cache=cache, batch_size=config.batch_size, prompt_name=prompt_name,
        progress=progress, description=f"embedding {key}".strip(),
    )
    return EmbeddedChunk(key, start, embeddings, {
        "embeddings_computed": stats.computed, "embeddings_cached": stats.cached,
        "embed_seconds": round(stats.seconds, 3), "worker": worker_name()})


def embed_jobs(
    partitions: dict[str, list[str]], config: DedupeConfig, resolved: ResolvedModel, *,
    cache_dir: Path | None, progress: ProgressFactory | None = None,
) -> list[dict[str, Any]]:
    """One job per `embed_chunk_rows` texts of each partition (a progress bar only in process)."""
    jobs = []
    for key, texts in partitions.items():
        for start in range(0, len(texts), config.embed_chunk_rows):
            jobs.append({"texts": texts[start : start + config.embed_chunk_rows], "config": config,
                         "resolved": resolved, "key": key, "start": start, "cache_dir": cache_dir,
                         "progress": progress})
    return jobs


def gather_embeddings(
    chunks: list[EmbeddedChunk], *, half_above_rows: int | None = None,
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Per partition: embeddings in row order, and summed stats (with the workers that took part).
    Partitions above `half_above_rows` are kept as float16: 1M rows of a 768-d model take 1.5 GB
    instead of 3, and the search compares them in float32 blocks (similarities move by ~1e-3)."""
    by_key: dict[str, list[EmbeddedChunk]] = {}
    for chunk in chunks:
        by_key.setdefault(chunk.key, []).append(chunk)
    out = {}
    for key, parts in by_key.items():
        parts.sort(key=lambda c: c.start)
        stats = {name: sum(p.stats[name] for p in parts)
                 for name in ("embeddings_computed", "embeddings_cached", "embed_seconds")}
        stats["embed_seconds"] = round(stats["embed_seconds"], 3)
        stats |= {"embed_chunks": len(parts), "embed_workers": sorted({p.stats["worker"] for p in parts})}
        rows = sum(len(p.embeddings) for p in parts)
        dtype = np.float16 if half_above_rows is not None and rows > half_above_rows else np.float32
        out[key] = (np.concatenate([p.embeddings for p in parts]).astype(dtype, copy=False), stats)
    return out


def _save_plan(folder: Path, embeddings: np.ndarray, groups: np.ndarray, plan: CellPlan) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
    np.save(folder / "groups.npy", groups)
    for name in ("order", "bounds", "probe_rows", "probe_order", "probe_bounds"):
        np.save(folder / f"{name}.npy", getattr(plan, name))


def search_cells_job(folder: str, first: int, last: int, min_similarity: float, k: int, key: str = "") -> dict:
    """Compare the rows of cells first..last-1 of the plan saved in `folder`. Runs on a worker."""
    path = Path(folder)
    started = time.perf_counter()
    embeddings = np.load(path / "embeddings.npy", mmap_mode="r")
    groups = np.load(path / "groups.npy")
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r")
              for name in ("order", "bounds", "probe_rows", "probe_order", "probe_bounds")}
    plan = CellPlan(n_cells=len(arrays["bounds"]) - 1, **arrays)
    found = search_cells(embeddings, groups, plan, range(first, last), min_similarity=min_similarity, k=k)
    a, b, s = (np.concatenate([f[i] for f in found]) if found else np.empty(0) for i in range(3))
    return {"key": key, "pairs": (a.astype(np.int64), b.astype(np.int64), s.astype(np.float32)),
            "seconds": time.perf_counter() - started, "worker": worker_name()}


def search_partitions(
    embedded: dict[str, tuple[np.ndarray, np.ndarray]], config: DedupeConfig, *, min_similarity: dict[str, float],
    map_jobs: MapJobs, scratch_dir: Path | None,
) -> dict[str, tuple[pl.DataFrame, dict[str, Any]]]:
    """Near pairs per partition ({key: (embeddings, group codes)}). Partitions above
    split_above_rows are cut into cell ranges, fanned out when `map_jobs` runs elsewhere and a
    scratch folder is given; otherwise searched here."""
    out: dict[str, tuple[pl.DataFrame, dict[str, Any]]] = {}
    jobs: list[dict[str, Any]] = []
    folders: list[Path] = []
    for key, (embeddings, groups) in embedded.items():
        started = time.perf_counter()
        n = embeddings.shape[0]
        fan_out = scratch_dir is not None and map_jobs is not map_in_process and n > config.split_above_rows
        if not fan_out:
            pairs = near_pairs(embeddings, groups, min_similarity=min_similarity[key], k=config.k_neighbors,
                               partition_rows=config.split_above_rows, probe=config.kmeans_probe, seed=config.seed)
            out[key] = (pairs, {"search_seconds": round(time.perf_counter() - started, 3), "search_jobs": 1})
            continue
        plan = plan_cells(embeddings, partition_rows=config.split_above_rows, probe=config.kmeans_probe, seed=config.seed)
        folder = Path(scratch_dir) / f"search-{uuid.uuid4().hex[:12]}"
        _save_plan(folder, embeddings, groups, plan)
        folders.append(folder)
        step = max(1, -(-plan.n_cells // config.search_jobs_per_partition))
        for first in range(0, plan.n_cells, step):
            jobs.append({"folder": str(folder), "first": first, "last": min(plan.n_cells, first + step),
                         "min_similarity": min_similarity[key], "k": config.k_neighbors, "key": key})
        out[key] = (pl.DataFrame(), {"plan_seconds": round(time.perf_counter() - started, 3)})
    try:
        results = map_jobs(search_cells_job, jobs) if jobs else []
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    by_key: dict[str, list[dict]] = {}
    for result in results:
        by_key.setdefault(result["key"], []).append(result)
    for key, parts in by_key.items():
        found: list[Pairs] = [p["pairs"] for p in parts]
        stats = out[key][1] | {"search_seconds": round(out[key][1]["plan_seconds"] + max(p["seconds"] for p in parts), 3),
                               "search_jobs": len(parts), "search_workers": sorted({p["worker"] for p in parts})}
        out[key] = (pairs_frame(found), stats)
    return out


__all__ = ["EmbeddedChunk", "MapJobs", "clean_texts", "dask_map", "embed_chunk", "embed_jobs", "gather_embeddings",
           "map_in_process", "search_cells_job", "search_partitions", "worker_name"]
