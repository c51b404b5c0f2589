"""Clustering one partition: near pairs (plus pairs the judge verified) -> star clusters.

Clusters are stars, not chains: in keep order, a row not yet taken becomes a kept
representative and takes every untaken row at or above the threshold to it (docs/dedupe.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from curate.stages.dedupe.config import DedupeConfig
from curate.stages.dedupe.search import near_pairs

ROW = "_row"  # input position; every internal column starts with an underscore


@dataclass
class PartitionResult:
    """What `dedupe_partition` returns: small frames keyed by input position."""

    key: str
    members: pl.DataFrame  # _row, _rep_row, similarity (cosine to the representative)
    pairs: pl.DataFrame  # a, b (input positions), similarity; pairs >= threshold - near_margin
    stats: dict[str, Any] = field(default_factory=dict)


def star_clusters(n: int, a: np.ndarray, b: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Representative position of each of n rows, given edges (a, b) at or above the threshold.

    Greedy in keep order: the best-ranked unassigned row becomes a representative and takes its
    unassigned neighbours. Every dropped row is thus itself similar to a kept row; connected
    components would instead chain A~B~C and drop C for A even when A and C differ.
    """
    rep = np.arange(n)
    if a.size == 0:
        return rep
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    order = np.lexsort((rank[dst], src))  # neighbours of each row, best-ranked first
    src, dst = src[order], dst[order]
    starts = np.searchsorted(src, np.arange(n + 1))
    assigned = np.zeros(n, dtype=bool)
    involved = np.unique(src)
    for row in involved[np.argsort(rank[involved], kind="stable")]:
        if assigned[row]:
            continue
        assigned[row] = True
        neighbours = dst[starts[row] : starts[row + 1]]
        neighbours = neighbours[~assigned[neighbours]]
        rep[neighbours] = row
        assigned[neighbours] = True
    return rep


def group_codes(rows: pl.DataFrame) -> np.ndarray:
    return rows["_group"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)


def search_floor(config: DedupeConfig, verify_above: float | None = None) -> float:
    """Lowest similarity the search keeps: the report margin, or the verification band."""
    floor = config.threshold - config.near_margin
    return max(min(floor, verify_above) if verify_above is not None else floor, 1e-6)


def cluster_partition(
    rows: pl.DataFrame, embeddings: np.ndarray, config: DedupeConfig, *, key: str = "",
    pairs: pl.DataFrame | None = None, verified: pl.DataFrame | None = None,
) -> PartitionResult:
    """Near-duplicate search (unless `pairs` were found already) and clustering over one
    partition's embedded rows; `verified` (a, b positions the judge called the same question)
    merge below the threshold too."""
    started = time.perf_counter()
    n = rows.height
    if pairs is None:
        pairs = near_pairs(
            embeddings, group_codes(rows), min_similarity=search_floor(config), k=config.k_neighbors,
            partition_rows=config.split_above_rows, probe=config.kmeans_probe, seed=config.seed,
        )
    edges = pairs.filter(pl.col("similarity") >= config.threshold).select("a", "b")
    if verified is not None and verified.height:
        edges = pl.concat([edges, verified.select(pl.col("a").cast(pl.Int64), pl.col("b").cast(pl.Int64))])
    rep_pos = star_clusters(n, edges["a"].to_numpy(), edges["b"].to_numpy(), rows["_rank"].to_numpy())
    similarity = np.einsum("ij,ij->i", embeddings, embeddings[rep_pos], dtype=np.float32).clip(-1, 1).astype(np.float32)
    similarity[rep_pos == np.arange(n)] = 1.0
    global_row = rows[ROW].to_numpy()
    members = pl.DataFrame({ROW: global_row, "_rep_row": global_row[rep_pos], "similarity": similarity,
                            "_verified": similarity < config.threshold})
    global_pairs = pairs.with_columns(
        pl.Series("a", global_row[pairs["a"].to_numpy()]), pl.Series("b", global_row[pairs["b"].to_numpy()]),
        pl.lit(config.threshold, pl.Float32).alias("threshold"),
    )
    return PartitionResult(key, members, global_pairs,
                           {"rows": n, "pairs_found": pairs.height, "search_seconds": round(time.perf_counter() - started, 3)})
