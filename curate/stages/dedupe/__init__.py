"""Exact and semantic de-duplication (see docs/dedupe.md).

    from curate.stages.dedupe import DedupeConfig, dedupe_frame
    out = dedupe_frame(df, DedupeConfig(), text_col="text", language_col="language",
                       group_col="question_id", id_col="translation_id", cache_dir=Path(".cache/embeddings"))
    out.tables["translations"], out.tables["clusters"], out.tables["pairs_near_threshold"]

Partition-level API for fanning out (Prefect tasks on Dask): prepare_rows -> partition_keys ->
partition_rows -> dedupe_partition (or embed_rows + cluster_partition) -> assemble. Inside one
language: curate.stages.dedupe.fanout (embedding chunks, search cells) on any map_jobs (dask_map(client)).
"""

from curate.stages.declaration import Previous, Stage, reads
from curate.stages.dedupe.cache import EmbeddingCache
from curate.prompts import PROMPTS_DIR
from curate.stages.dedupe.calibration import TABLE as CALIBRATION_TABLE
from curate.stages.dedupe.calibration import Calibration, calibration_fingerprint, calibration_for, language_settings
from curate.stages.dedupe.config import DedupeConfig, KeepPolicy
from curate.stages.dedupe.embed import (
    DEFAULT_HUB_MODEL,
    ResolvedModel,
    bundled_minilm_path,
    embed_texts,
    embeddinggemma_path,
    load_model,
    resolve_model,
)
from curate.stages.dedupe.fanout import dask_map, map_in_process
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
from curate.stages.dedupe.verify import TEMPLATE as VERIFY_TEMPLATE
from curate.stages.dedupe.verify import PairVerifier, parse_verdict, verify_pairs
from curate.tables import DEDUPE_CLUSTERS, DEDUPE_NEAR_PAIRS, DEDUPE_VERIFICATIONS, DEDUPED_TRANSLATIONS, TRANSLATIONS

# 2: per-model calibrated thresholds, verification band, verifications table.
STAGE_VERSION = "2"

__all__ = [
    "DEFAULT_HUB_MODEL", "STAGE", "STAGE_VERSION", "Calibration", "DedupeConfig", "EmbeddingCache", "KeepPolicy",
    "PairVerifier", "PartitionResult", "ResolvedModel", "assemble", "block_pairs", "bundled_minilm_path",
    "calibration_for", "cluster_partition", "dask_map", "dedupe_frame", "language_settings", "map_in_process",
    "parse_verdict", "verify_pairs",
    "dedupe_partition", "dedupe_stage", "embed_rows", "embed_texts", "embeddinggemma_path", "kmeans_cells",
    "load_model", "near_pairs", "normalize_texts", "normalized_text_expr", "partition_keys", "partition_rows",
    "prepare_rows", "resolve_model", "semantic_languages",
]


def stage_version(config: DedupeConfig) -> str:
    """The stage version plus the resolved model and its calibration entry, so `auto` resolving
    differently, or a new calibration table, reruns the stage."""
    if not config.semantic:
        return f"{STAGE_VERSION}+exact"
    resolved = resolve_model(config.model)
    return f"{STAGE_VERSION}+{resolved.key}+cal-{calibration_fingerprint(resolved.name)}"


STAGE = Stage(
    name="dedupe", run=dedupe_stage, config=DedupeConfig,
    summary="Remove exact and semantic duplicates from translate/translations (rows with status ok).",
    reads={"translations": reads(TRANSLATIONS)},
    writes=(DEDUPED_TRANSLATIONS, DEDUPE_CLUSTERS, DEDUPE_NEAR_PAIRS, DEDUPE_VERIFICATIONS),
    # The verification band's judge defaults to [llm], only when verify is on (after command-line
    # overrides), so [llm] changes do not rerun a dedupe that never calls it.
    settings=lambda cfg, config: config.model_copy(update={"verifier": config.verifier or cfg.llm})
    if config.semantic and config.verify else config,
    uses_llm=lambda config: config.semantic and config.verify,
    depends_on=lambda config: ([resolve_model(config.model).path, CALIBRATION_TABLE]
                               + ([PROMPTS_DIR / VERIFY_TEMPLATE] if config.verify else [])) if config.semantic else [],
    version_of=stage_version,
    # A rerun keeps the rows it kept (their answers and reviews exist) over rows new to it, when the
    # policy that chose them is unchanged. A new threshold, model or language setting changes which
    # rows are duplicates, not which one a user wants kept, so the kept rows still win there; a new
    # `keep` or `score_col` is a request to choose differently, so every cluster is chosen afresh.
    previous=Previous(DEDUPE_CLUSTERS, same=("keep", "score_col")),
)
