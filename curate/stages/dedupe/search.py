"""Near-duplicate search over normalized embeddings without an n x n matrix.

Small sets are compared block by block against themselves. Large sets are split into k-means
cells first (as in SemDeDup): each row is stored in its nearest cell and compared against the
rows of its `probe` nearest cells, so a duplicate pair that straddles a cell border is still
found. Work per cell is a dense matrix product (BLAS), which on a CPU beats per-query ANN
scans at the high similarity thresholds dedupe uses.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

QUERY_BLOCK = 2048
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
) -> Pairs:
    """Pairs (a < b, positions into `embeddings`, similarity) with cosine >= min_similarity between
    the query rows and the db rows, at most k per query row; rows of one group never pair.
    May hold a pair twice; `pairs_frame` removes repeats."""
    found_a, found_b, found_s = [], [], []
    db = np.ascontiguousarray(embeddings[db_rows])
    db_groups = groups[db_rows]
    # Bound one similarity block to ~QUERY_BLOCK x 16k floats whatever the cell size.
    step = max(64, min(QUERY_BLOCK, (QUERY_BLOCK * 16_384) // max(1, len(db_rows))))
    for start in range(0, len(query_rows), step):
        rows = query_rows[start : start + step]
        sims = embeddings[rows] @ db.T
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


def near_pairs(
    embeddings: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    min_similarity: float,
    k: int = 10,
    partition_rows: int = 20_000,
    probe: int = 2,
    seed: int = 0,
) -> pl.DataFrame:
    """All pairs (a < b) of rows with cosine >= min_similarity, up to k neighbours per row.

    `embeddings` must be L2-normalized float32. `groups` (int codes) marks rows that must never
    pair (translations of one question); default: every row its own group.
    """
    n = embeddings.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if n < 2:
        return pl.DataFrame(schema=PAIRS_SCHEMA)
    everything = np.arange(n)
    if n <= partition_rows:
        return pairs_frame([block_pairs(embeddings, groups, everything, everything, min_similarity=min_similarity, k=k)])
    # About 2 sqrt(n) cells balances the (reduced-dimension) assignment against the per-cell products.
    n_cells = max(math.ceil(n / partition_rows), round(2 * math.sqrt(n)))
    _, cells = kmeans_cells(embeddings, n_cells, probe=probe, seed=seed)
    home = cells[:, 0]
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(n_cells + 1))
    probe_cells = cells.reshape(-1)
    probe_rows = np.repeat(everything, cells.shape[1])
    probe_order = np.argsort(probe_cells, kind="stable")
    probe_bounds = np.searchsorted(probe_cells[probe_order], np.arange(n_cells + 1))
    found = []
    for cell in range(n_cells):
        db_rows = order[bounds[cell] : bounds[cell + 1]]
        query_rows = probe_rows[probe_order[probe_bounds[cell] : probe_bounds[cell + 1]]]
        if db_rows.size == 0 or query_rows.size == 0:
            continue
        found.append(block_pairs(embeddings, groups, query_rows, db_rows, min_similarity=min_similarity, k=k))
    return pairs_frame(found)

