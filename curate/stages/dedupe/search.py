"""Near-duplicate search over normalized embeddings without an n x n matrix.

Small sets are compared block by block against themselves. Large sets are split into k-means
cells first (as in SemDeDup): each row is stored in its nearest cell and compared against the
rows of its `probe` nearest cells, so a duplicate pair that straddles a cell border is still
found. Work per cell is a dense matrix product (BLAS), which on a CPU beats per-query ANN
scans at the high similarity thresholds dedupe uses.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

# faiss's OpenMP threads spin after each parallel region by default; on a 2-core machine shared
# with the search threads (or other jobs) that spinning doubled the k-means plan's CPU time
# (300k rows: 12.8 CPU-s spinning, 5.0 passive; docs/benchmarks.md). Read when faiss is first
# imported, so set before kmeans_cells imports it; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

QUERY_BLOCK = 2048
# Cells: about 1.5 sqrt(n). At 1M real-derived 768-d rows, 2 sqrt(n) gave recall 0.9895 of planted
# copies at 43.7 CPU-s, 1.5 sqrt(n) 0.9902 at 47.7 CPU-s (docs/benchmarks.md).
CELLS_PER_SQRT_N = 1.5
CELL_BATCH = 16  # cells per thread-pool task
# Cells are searched by this many threads, each with single-threaded BLAS: measured at 300k rows
# of 768-d vectors, 6.1 CPU-s against 28.8 for one thread with 2-thread BLAS on ~500-row blocks
# (docs/benchmarks.md).
SEARCH_THREADS = 2
# Cells up to this many rows compare their own rows in one symmetric product (4096^2 floats = 64 MB).
HOME_BLOCK_MAX = 4096
PAIRS_SCHEMA = {"a": pl.Int64, "b": pl.Int64, "similarity": pl.Float32}


def _top_k_per_query(q: np.ndarray, d: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    if q.size == 0 or np.bincount(q).max() <= k:
        return q, d, s
    order = np.lexsort((-s, q))
    q, d, s = q[order], d[order], s[order]
    first = np.searchsorted(q, q)  # q is sorted: position where each query's run starts
    keep = (np.arange(q.size) - first) < k
    return q[keep], d[keep], s[keep]


Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def block_pairs(
    embeddings: np.ndarray,
    groups: np.ndarray,
    query_rows: np.ndarray,
    db_rows: np.ndarray,
    *,
    min_similarity: float,
    k: int,
    db: np.ndarray | None = None,
) -> Pairs:
    """Pairs (a < b, positions into `embeddings`, similarity) with cosine >= min_similarity between
    the query rows and the db rows, at most k per query row; rows of one group never pair.
    May hold a pair twice; `pairs_frame` removes repeats. `db`: the db rows already as float32."""
    found_a, found_b, found_s = [], [], []
    if db is None:
        db = np.ascontiguousarray(embeddings[db_rows], dtype=np.float32)
    db_groups = groups[db_rows]
    # Bound one similarity block to ~QUERY_BLOCK x 16k floats whatever the cell size.
    step = max(64, min(QUERY_BLOCK, (QUERY_BLOCK * 16_384) // max(1, len(db_rows))))
    for start in range(0, len(query_rows), step):
        rows = query_rows[start : start + step]
        sims = embeddings[rows].astype(np.float32, copy=False) @ db.T
        qi, di = np.nonzero(sims >= min_similarity)
        if qi.size == 0:
            continue
        keep = groups[rows[qi]] != db_groups[di]  # also drops each row's match with itself
        qi, di = qi[keep], di[keep]
        qi, di, s = _top_k_per_query(qi, di, sims[qi, di], k)
        a, b = rows[qi], db_rows[di]
        found_a.append(np.minimum(a, b))
        found_b.append(np.maximum(a, b))
        found_s.append(s.astype(np.float32))
    if not found_a:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)


def cell_pairs(
    embeddings: np.ndarray,
    groups: np.ndarray,
    home_rows: np.ndarray,
    visiting_rows: np.ndarray,
    *,
    min_similarity: float,
    k: int,
) -> Pairs:
    """Pairs of one k-means cell: its own rows among themselves, and the rows whose other probed
    cells include this one (`visiting_rows`) against its rows; at most k per query row.

    The own-rows product is symmetric, so it is one `db @ db.T`, which numpy hands to BLAS syrk
    (half the multiply-adds of a general product); a cell too big for one block falls back to
    bounded blocks."""
    if home_rows.size > HOME_BLOCK_MAX:
        rows = np.concatenate([home_rows, visiting_rows])
        return block_pairs(embeddings, groups, rows, home_rows, min_similarity=min_similarity, k=k)
    db = np.ascontiguousarray(embeddings[home_rows], dtype=np.float32)
    sims = db @ db.T
    i, j = np.nonzero(sims >= min_similarity)
    upper = i < j
    i, j = i[upper], j[upper]
    keep = groups[home_rows[i]] != groups[home_rows[j]]
    i, j = i[keep], j[keep]
    s = sims[i, j]
    # Each pair counts as a neighbour of both of its rows, as when every row queries its cell.
    q, d, s = _top_k_per_query(np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([s, s]), k)
    a, b = home_rows[q], home_rows[d]
    own = (np.minimum(a, b), np.maximum(a, b), s.astype(np.float32))
    if visiting_rows.size == 0:
        return own
    visiting = block_pairs(embeddings, groups, visiting_rows, home_rows, min_similarity=min_similarity, k=k, db=db)
    return tuple(np.concatenate([x, y]) for x, y in zip(own, visiting))  # type: ignore[return-value]


def pairs_frame(parts: list[Pairs]) -> pl.DataFrame:
    parts = [p for p in parts if p[0].size]
    if not parts:
        return pl.DataFrame(schema=PAIRS_SCHEMA)
    a, b, s = (np.concatenate([p[i] for p in parts]) for i in range(3))
    frame = pl.DataFrame({"a": a, "b": b, "similarity": s}, schema=PAIRS_SCHEMA)
    return frame.unique(["a", "b"], keep="first").sort(["a", "b"])


def kmeans_cells(
    embeddings: np.ndarray, n_cells: int, *, probe: int = 2, seed: int = 0, max_train: int = 32,
    reduce_dim: int | None = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids and each row's `probe` nearest cells (n x probe, nearest first).

    Cells are found in a PCA-reduced space (`reduce_dim`): they only route rows to the exact,
    full-dimension comparison, and assigning a million rows to thousands of centroids at full
    dimension would cost more than the comparisons themselves.
    """
    import faiss

    n, dim = embeddings.shape
    n_cells = max(1, min(n_cells, n))
    rng = np.random.default_rng(seed)
    sample_size = min(n, max(n_cells * max_train, 10_000))
    sample = embeddings[np.sort(rng.choice(n, sample_size, replace=False))] if sample_size < n else embeddings
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    project = lambda v: v  # noqa: E731
    if reduce_dim and dim > reduce_dim:
        pca = faiss.PCAMatrix(dim, reduce_dim)
        pca.train(sample)
        project = pca.apply
    reduced = project(sample)
    kmeans = faiss.Kmeans(reduced.shape[1], n_cells, niter=8, seed=seed, max_points_per_centroid=max_train,
                          min_points_per_centroid=8, verbose=False)
    kmeans.train(reduced)
    index = faiss.IndexFlatL2(reduced.shape[1])
    index.add(kmeans.centroids)
    cells = np.empty((n, min(probe, n_cells)), dtype=np.int64)
    for start in range(0, n, 200_000):  # project in blocks: no reduced copy of everything at once
        block = project(np.ascontiguousarray(embeddings[start : start + 200_000], dtype=np.float32))
        cells[start : start + len(block)] = index.search(block, cells.shape[1])[1]
    return kmeans.centroids, cells


@dataclass(frozen=True)
class CellPlan:
    """Which rows each k-means cell holds (`order[bounds[c]:bounds[c+1]]`) and which rows of other
    cells also probe it (`probe_rows[probe_order[probe_bounds[c]:probe_bounds[c+1]]]`): the unit
    of search work."""

    n_cells: int
    order: np.ndarray
    bounds: np.ndarray
    probe_rows: np.ndarray
    probe_order: np.ndarray
    probe_bounds: np.ndarray


def plan_cells(embeddings: np.ndarray, *, partition_rows: int, probe: int = 2, seed: int = 0) -> CellPlan:
    n = embeddings.shape[0]
    # About CELLS_PER_SQRT_N sqrt(n) cells balances the (reduced-dimension) assignment against the per-cell products.
    n_cells = max(math.ceil(n / partition_rows), round(CELLS_PER_SQRT_N * math.sqrt(n)))
    _, cells = kmeans_cells(embeddings, n_cells, probe=probe, seed=seed)
    home = cells[:, 0]
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(n_cells + 1))
    probe_cells = cells[:, 1:].reshape(-1)  # each row's other probed cells (its home cell is in `order`)
    probe_rows = np.repeat(np.arange(n), cells.shape[1] - 1)
    probe_order = np.argsort(probe_cells, kind="stable")
    probe_bounds = np.searchsorted(probe_cells[probe_order], np.arange(n_cells + 1))
    return CellPlan(n_cells, order, bounds, probe_rows, probe_order, probe_bounds)


def search_cells(
    embeddings: np.ndarray, groups: np.ndarray, plan: CellPlan, cells: range, *, min_similarity: float, k: int,
) -> list[Pairs]:
    """cell_pairs over the given cells of `plan` (one fan-out task's share)."""
    found = []
    for cell in cells:
        home_rows = plan.order[plan.bounds[cell] : plan.bounds[cell + 1]]
        visiting_rows = plan.probe_rows[plan.probe_order[plan.probe_bounds[cell] : plan.probe_bounds[cell + 1]]]
        if home_rows.size == 0:
            continue
        found.append(cell_pairs(embeddings, groups, np.asarray(home_rows), np.asarray(visiting_rows),
                                min_similarity=min_similarity, k=k))
    return found


def search_all_cells(
    embeddings: np.ndarray, groups: np.ndarray, plan: CellPlan, *, min_similarity: float, k: int, threads: int = 1,
) -> list[Pairs]:
    """search_cells over every cell; with threads > 1, cells go in small batches to a thread pool
    whose threads each run single-threaded BLAS (numpy releases the GIL in the products)."""
    if threads <= 1:
        return search_cells(embeddings, groups, plan, range(plan.n_cells), min_similarity=min_similarity, k=k)
    from threadpoolctl import threadpool_limits

    batches = [range(first, min(plan.n_cells, first + CELL_BATCH)) for first in range(0, plan.n_cells, CELL_BATCH)]
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda cells: search_cells(embeddings, groups, plan, cells, min_similarity=min_similarity,
                                                    k=k), batches)
        return [pairs for part in parts for pairs in part]


def near_pairs(
    embeddings: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    min_similarity: float,
    k: int = 10,
    partition_rows: int = 20_000,
    probe: int = 2,
    seed: int = 0,
    threads: int = SEARCH_THREADS,
) -> pl.DataFrame:
    """All pairs (a < b) of rows with cosine >= min_similarity, up to k neighbours per row.

    `embeddings` must be L2-normalized (float32, or float16 to halve memory: compared in float32
    blocks). `groups` (int codes) marks rows that must never pair (translations of one question);
    default: every row its own group.
    """
    n = embeddings.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if n < 2:
        return pl.DataFrame(schema=PAIRS_SCHEMA)
    if n <= partition_rows:
        everything = np.arange(n)
        return pairs_frame([block_pairs(embeddings, groups, everything, everything, min_similarity=min_similarity, k=k)])
    plan = plan_cells(embeddings, partition_rows=partition_rows, probe=probe, seed=seed)
    return pairs_frame(search_all_cells(embeddings, groups, plan, min_similarity=min_similarity, k=k, threads=threads))
