"""Exact and semantic de-duplication (see docs/dedupe.md).

    from curate.stages.dedupe import DedupeConfig, dedupe_frame
    out = dedupe_frame(df, DedupeConfig(threshold=0.88), text_col="text", language_col="language",
                       group_col="question_id", id_col="translation_id", cache_dir=Path(".cache/embeddings"))
    out.tables["translations"], out.tables["clusters"], out.tables["pairs_near_threshold"]

Partition-level API for fanning out (Prefect tasks on Dask): prepare_rows -> partition_keys ->
partition_rows -> dedupe_partition (or embed_rows + cluster_partition) -> assemble.
"""

from curate.stages.declaration import Stage, reads
from curate.stages.dedupe.config import DedupeConfig, KeepPolicy
from curate.stages.dedupe.embed import (
    DEFAULT_HUB_MODEL,
    EmbeddingCache,
    ResolvedModel,
    bundled_minilm_path,
    embed_texts,
    embeddinggemma_path,
    load_model,
    resolve_model,
)
from curate.stages.dedupe.normalize import normalize_texts, normalized_text_expr
from curate.stages.dedupe.search import block_pairs, kmeans_cells, near_pairs
from curate.stages.dedupe.stage import (
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
from curate.tables import DEDUPE_CLUSTERS, DEDUPE_NEAR_PAIRS, DEDUPED_TRANSLATIONS, TRANSLATIONS

STAGE_VERSION = "1"

__all__ = [
    "DEFAULT_HUB_MODEL", "STAGE", "STAGE_VERSION", "DedupeConfig", "EmbeddingCache", "KeepPolicy", "PartitionResult",
    "ResolvedModel", "assemble", "block_pairs", "bundled_minilm_path", "cluster_partition", "dedupe_frame",
    "dedupe_partition", "dedupe_stage", "embed_rows", "embed_texts", "embeddinggemma_path", "kmeans_cells",
    "load_model", "near_pairs", "normalize_texts", "normalized_text_expr", "partition_keys", "partition_rows",
    "prepare_rows", "resolve_model", "semantic_languages",
]


def stage_version(config: DedupeConfig) -> str:
    """The stage version plus the resolved model, so `auto` resolving differently reruns the stage."""
    return f"{STAGE_VERSION}+{resolve_model(config.model).key}" if config.semantic else f"{STAGE_VERSION}+exact"


STAGE = Stage(
    name="dedupe", run=dedupe_stage, config=DedupeConfig,
    summary="Remove exact and semantic duplicates from translate/translations (rows with status ok).",
    reads={"translations": reads(TRANSLATIONS)}, writes=(DEDUPED_TRANSLATIONS, DEDUPE_CLUSTERS, DEDUPE_NEAR_PAIRS),
    depends_on=lambda config: [resolve_model(config.model).path] if config.semantic else [],
    version_of=stage_version,
)
