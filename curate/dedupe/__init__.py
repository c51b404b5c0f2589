"""Exact and semantic de-duplication (see docs/dedupe.md).

    from curate.dedupe import DedupeConfig, dedupe_frame
    out = dedupe_frame(df, DedupeConfig(), text_col="text", language_col="language",
                       group_col="question_id", id_col="translation_id", cache_dir=Path(".cache/embeddings"))
    out.tables["translations"], out.tables["clusters"], out.tables["pairs_near_threshold"]

Partition-level API for fanning out (Prefect tasks on Dask): prepare_rows -> partition_keys ->
partition_rows -> dedupe_partition (or embed_rows + cluster_partition) -> assemble. Inside one
language: curate.dedupe.fanout (embedding chunks, search cells) on any map_jobs (dask_map(client)).
"""

from curate.dedupe.cache import EmbeddingCache
from curate.dedupe.calibration import Calibration, calibration_for, language_settings
from curate.dedupe.config import DedupeConfig, KeepPolicy
from curate.dedupe.embed import (
    DEFAULT_HUB_MODEL,
    ResolvedModel,
    bundled_minilm_path,
    embed_texts,
    embeddinggemma_path,
    load_model,
    resolve_model,
)
from curate.dedupe.fanout import dask_map, map_in_process
from curate.dedupe.normalize import normalize_texts, normalized_text_expr
from curate.dedupe.search import block_pairs, kmeans_cells, near_pairs
from curate.dedupe.stage import (
    PartitionResult,
    assemble,
    cluster_partition,
    dedupe_frame,
    dedupe_partition,
    dedupe_stage,
    embed_rows,
    partition_keys,
    partition_rows,
    prepare_rows,
    semantic_languages,
)
from curate.dedupe.verify import PairVerifier, parse_verdict, verify_pairs

# 2: per-model calibrated thresholds, verification band, verifications table.
STAGE_VERSION = "2"

__all__ = [
    "DEFAULT_HUB_MODEL", "STAGE_VERSION", "Calibration", "DedupeConfig", "EmbeddingCache", "KeepPolicy",
    "PairVerifier", "PartitionResult", "ResolvedModel", "assemble", "block_pairs", "bundled_minilm_path",
    "calibration_for", "cluster_partition", "dask_map", "dedupe_frame", "language_settings", "map_in_process",
    "parse_verdict", "verify_pairs",
    "dedupe_partition", "dedupe_stage", "embed_rows", "embed_texts", "embeddinggemma_path", "kmeans_cells",
    "load_model", "near_pairs", "normalize_texts", "normalized_text_expr", "partition_keys", "partition_rows",
    "prepare_rows", "resolve_model", "semantic_languages",
]
