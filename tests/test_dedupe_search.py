"""The k-means cell search finds what an exhaustive comparison finds, when every cell is probed,
on both of its paths (one symmetric product per cell, and bounded blocks for an oversized cell)."""

from __future__ import annotations

import numpy as np
import pytest

from curate.stages.dedupe import near_pairs
from curate.stages.dedupe import search as search_module


def _clustered(n: int, dim: int, topics: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim))
    x = centres[rng.integers(0, topics, n)] + 0.45 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exhaustive(x: np.ndarray, groups: np.ndarray, min_similarity: float) -> set[tuple[int, int]]:
    sims = x @ x.T
    a, b = np.nonzero(np.triu(sims >= min_similarity, 1))
    keep = groups[a] != groups[b]
    return set(zip(a[keep].tolist(), b[keep].tolist(), strict=True))


@pytest.mark.parametrize("home_block_max", [4096, 7])  # one symmetric product per cell; oversized-cell blocks
def test_cells_probed_everywhere_find_exactly_the_exhaustive_pairs(home_block_max: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "HOME_BLOCK_MAX", home_block_max)
    x = _clustered(900, 32, 12)
    groups = np.arange(900) // 3  # triples of rows are one question's translations: never paired
    truth = _exhaustive(x, groups, 0.8)
    assert 200 < len(truth)  # enough pairs, inside cells and across them
    n_cells = round(2 * np.sqrt(900))  # more than the plan makes: every cell is probed
    pairs = near_pairs(x, groups, min_similarity=0.8, k=10_000, partition_rows=100, probe=n_cells)
    found = set(zip(pairs["a"].to_list(), pairs["b"].to_list(), strict=True))
    assert found == truth
    exact = np.einsum("ij,ij->i", x[pairs["a"].to_numpy()], x[pairs["b"].to_numpy()])
    assert np.allclose(pairs["similarity"].to_numpy(), exact, atol=1e-5)
