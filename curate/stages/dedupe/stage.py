"""The dedupe stage: exact duplicates after normalization, then semantic near-duplicates.

Rules (see docs/dedupe.md):
- Rows are matched within a language unless `cross_language` is set.
- Rows of one group (translations of one question: same `question_id`) are never matched
  with each other, and a cluster never drops a translation of its kept question.
- Clusters are stars: in keep order (first, longest or best-scored), a row not yet taken
  becomes a kept representative and takes every untaken row at or above the threshold to it.
- A rerun keeps what it kept: rows the last run kept (`kept_before`) come first in keep order,
  so a row new to this run (a translation that failed last time) cannot displace one whose
  answers and reviews already exist.

Partition-level functions (for fanning out on Dask/Prefect): `prepare_rows` once, then per key
of `partition_keys`: `partition_rows` -> `dedupe_partition`; finally `assemble`.
`dedupe_frame` runs the same steps in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.config import EndpointConfig
from curate.errors import InputError
from curate.stages.dedupe.calibration import language_settings
from curate.stages.dedupe.cluster import ROW, PartitionResult, cluster_partition
from curate.stages.dedupe.config import DedupeConfig
from curate.stages.dedupe.embed import ProgressFactory, ResolvedModel, model_info, resolve_model
from curate.stages.dedupe.fanout import clean_texts, embed_chunk, map_in_process
from curate.stages.dedupe.normalize import normalized_text_expr
from curate.stages.dedupe.semantic import semantic_partitions, verification_counts, verifications_table
from curate.stages.dedupe.verify import VERIFICATIONS_SCHEMA, PairVerifier
from curate.tables import DEDUPE_CLUSTERS, TRANSLATIONS
from curate.workspace import StageOutput

UNKNOWN_LANGUAGE = "und"
CROSS_LANGUAGE_PARTITION = "*"
INTERNAL_COLUMNS = (ROW, "_id", "_lang", "_group", "_norm", "_rank", "_exact_rep", "_partition")


# Runs a job function (embed_chunk, search_cells_job, dedupe_partition) once per job (its keyword
# arguments) and returns the results in job order: in process, or as Prefect tasks / Dask futures.
PartitionMap = Callable[[Callable[..., Any], list[dict[str, Any]]], list[Any]]


def _require(df: pl.DataFrame, col: str | None, source: str, what: str) -> None:
    if col is not None and col not in df.columns:
        raise InputError(source, f"missing {what} column (have: {', '.join(df.columns) or 'none'})", field=col)


def prepare_rows(
    df: pl.DataFrame,
    config: DedupeConfig,
    *,
    text_col: str = "text",
    language_col: str | None = "language",
    group_col: str | None = "question_id",
    id_col: str | None = None,
    source: str = "input",
    kept_before: Collection[str] | None = None,
) -> pl.DataFrame:
    """Validate, normalize and exact-dedupe. Returns the input plus internal columns:
    _row, _id, _lang, _group, _norm, _rank (keep priority, 0 = keep first), _exact_rep, _partition.
    Rows whose id is in `kept_before` rank before all others; the keep policy orders each part."""
    _require(df, text_col, source, "text")
    _require(df, language_col, source, "language")
    _require(df, group_col, source, "group")
    _require(df, id_col, source, "id")
    if config.keep == "best":
        _require(df, config.score_col, source, "score (keep='best')")
    clash = [c for c in INTERNAL_COLUMNS if c in df.columns]
    if clash:
        raise InputError(source, "column name is reserved for dedupe's own use; rename it", field=clash[0])
    if df.schema[text_col] not in (pl.String, pl.Null):
        raise InputError(source, f"expected text, got {df.schema[text_col]}", field=text_col)
    if id_col is not None and df[id_col].null_count():
        row = int(df.with_row_index("_r").filter(pl.col(id_col).is_null())["_r"][0]) + 1
        raise InputError(source, "id is missing", line=row, field=id_col)

    rows = df.with_row_index(ROW).with_columns(
        (pl.col(id_col).cast(pl.String) if id_col else pl.format("row-{}", pl.col(ROW))).alias("_id"),
        (pl.col(language_col).cast(pl.String).fill_null(UNKNOWN_LANGUAGE) if language_col
         else pl.lit(UNKNOWN_LANGUAGE)).alias("_lang"),
        normalized_text_expr(text_col).alias("_norm"),
    )
    rows = rows.with_columns(
        (pl.col(group_col).cast(pl.String) if group_col else pl.col("_id")).fill_null(pl.col("_id")).alias("_group")
    )
    if config.keep == "first":
        priority = rows.select(ROW)
    elif config.keep == "longest":
        priority = rows.sort([pl.col(text_col).str.len_chars().fill_null(0), ROW], descending=[True, False]).select(ROW)
    else:
        priority = rows.sort([pl.col(config.score_col), ROW], descending=[True, False], nulls_last=True).select(ROW)
    order = priority[ROW].to_numpy()
    if kept_before:
        was_kept = rows["_id"].is_in(list(kept_before)).to_numpy()[order]
        order = np.concatenate([order[was_kept], order[~was_kept]])
    rank = np.empty(rows.height, dtype=np.int64)
    rank[order] = np.arange(rows.height)
    rows = rows.with_columns(pl.Series("_rank", rank))

    exact_key = ["_norm"] if config.cross_language else ["_lang", "_norm"]
    rows = rows.with_columns(
        pl.when(pl.col("_norm").is_null())
        .then(pl.col(ROW))
        .otherwise(pl.col(ROW).sort_by("_rank").first().over(exact_key))
        .alias("_exact_rep"),
        (pl.lit(CROSS_LANGUAGE_PARTITION) if config.cross_language else pl.col("_lang")).alias("_partition"),
    )
    return rows


def partition_keys(prepared: pl.DataFrame) -> list[str]:
    """Partitions that can be searched independently (languages, or one for cross-language)."""
    return sorted(prepared["_partition"].unique().to_list())


def semantic_languages(config: DedupeConfig, resolved: ResolvedModel) -> list[str] | None:
    """Languages semantic search may compare (None: all). An English-only model's similarities
    between, say, two Chinese questions are noise, so those rows get exact dedupe only."""
    if config.semantic_languages is not None:
        return config.semantic_languages
    return list(resolved.languages) if resolved.languages else None


def partition_rows(
    prepared: pl.DataFrame, key: str, *, text_col: str = "text", languages: list[str] | None = None
) -> pl.DataFrame:
    """The rows of one partition that take part in semantic search (exact representatives, in
    `languages` or of unknown language when that is given)."""
    selected = (pl.col("_partition") == key) & pl.col("_norm").is_not_null() & (pl.col(ROW) == pl.col("_exact_rep"))
    if languages is not None:
        selected &= pl.col("_lang").is_in([*languages, UNKNOWN_LANGUAGE])
    return prepared.filter(selected).select(ROW, "_group", "_rank", "_lang", pl.col(text_col).alias("_text"))


def embed_rows(
    rows: pl.DataFrame,
    config: DedupeConfig,
    resolved: ResolvedModel,
    *,
    cache_dir: Path | None = None,
    progress: ProgressFactory | None = None,
    key: str = "",
) -> tuple[np.ndarray, dict[str, Any]]:
    chunk = embed_chunk(clean_texts(rows["_text"]), config, resolved, key=key, start=0, cache_dir=cache_dir,
                        progress=progress)
    return chunk.embeddings, {k: v for k, v in chunk.stats.items() if k != "worker"}


def dedupe_partition(
    rows: pl.DataFrame,
    config: DedupeConfig,
    resolved: ResolvedModel,
    *,
    key: str = "",
    cache_dir: Path | None = None,
    progress: ProgressFactory | None = None,
) -> PartitionResult:
    """Embed (cache first) and cluster one partition (in one process; dedupe_frame spreads a
    partition over workers instead). Without a configured threshold, the model's calibrated one
    for the partition's languages applies."""
    if config.threshold is None:
        languages = rows["_lang"].unique().to_list() if "_lang" in rows.columns else [UNKNOWN_LANGUAGE]
        settings = language_settings(languages, resolved.name, threshold=None, verify=False, verify_above=None)
        config = config.model_copy(update={"threshold": max(s.threshold for s in settings.values())})
    embeddings, embed_stats = embed_rows(rows, config, resolved, cache_dir=cache_dir, progress=progress, key=key)
    result = cluster_partition(rows, embeddings, config, key=key)
    result.stats |= embed_stats
    return result


def assemble(
    prepared: pl.DataFrame,
    results: list[PartitionResult],
    config: DedupeConfig,
    *,
    text_col: str = "text",
    id_col: str | None = None,
    report: dict[str, Any] | None = None,
) -> StageOutput:
    """Merge exact and semantic clusters into the three output tables."""
    # A rerun over dedupe output replaces its old cluster columns.
    input_cols = [c for c in prepared.columns if c not in (*INTERNAL_COLUMNS, "cluster_id", "is_representative")]
    members = (
        pl.concat([r.members for r in results]) if results
        else pl.DataFrame(schema={ROW: pl.UInt32, "_rep_row": pl.UInt32, "similarity": pl.Float32, "_verified": pl.Boolean})
    )
    members = members.with_columns(pl.col(ROW).cast(pl.UInt32), pl.col("_rep_row").cast(pl.UInt32))
    rows = prepared.join(members.rename({ROW: "_exact_rep"}), on="_exact_rep", how="left").with_columns(
        pl.col("_rep_row").fill_null(pl.col("_exact_rep")),
    )
    rep = rows.select(pl.col(ROW).alias("_rep_row"), pl.col("_id").alias("_rep_id"),
                      pl.col("_group").alias("_rep_group"), pl.col("_lang").alias("_rep_lang"))
    rows = rows.join(rep, on="_rep_row", how="left").sort(ROW)
    is_rep = pl.col(ROW) == pl.col("_rep_row")
    rows = rows.with_columns(
        pl.col("_rep_id").alias("cluster_id"),
        is_rep.alias("is_representative"),
        # A translation of the kept question is never a duplicate of it.
        (is_rep | ((pl.col("_group") == pl.col("_rep_group")) & (pl.col("_lang") != pl.col("_rep_lang")))).alias("kept"),
        pl.when(is_rep).then(None)
        .when(pl.col(ROW) != pl.col("_exact_rep")).then(pl.lit("exact"))
        .when(pl.col("_verified").fill_null(False)).then(pl.lit("semantic_verified"))
        .otherwise(pl.lit("semantic")).alias("duplicate_reason"),
        pl.when(is_rep).then(1.0).otherwise(pl.col("similarity").fill_null(1.0)).cast(pl.Float32)
        .alias("similarity_to_representative"),
    ).with_columns(pl.len().over("cluster_id").alias("cluster_size"))

    kept = rows.filter(pl.col("kept")).select(*input_cols, "cluster_id", "is_representative")
    id_out = id_col or "row_id"
    clusters = rows.select(
        pl.col("_id").alias(id_out), pl.col("_group").alias("group"), pl.col("_lang").alias("language"),
        pl.col(text_col).alias("text"), "cluster_id", "cluster_size", "is_representative", "kept",
        "duplicate_reason", "similarity_to_representative",
    )
    near = near_threshold_pairs(rows, results, config, text_col=text_col)
    stats = {
        "rows_in": prepared.height,
        "rows_kept": kept.height,
        "exact_duplicates": int(rows.filter(pl.col("duplicate_reason") == "exact").height),
        "semantic_duplicates": int(rows.filter(pl.col("duplicate_reason").str.starts_with("semantic")).height),
        "verified_duplicates": int(rows.filter(pl.col("duplicate_reason") == "semantic_verified").height),
        # Empty or whitespace-only after normalization: never merged, with each other or anything.
        "empty_texts": int(rows["_norm"].null_count()),
        "empty_text_ids": rows.filter(pl.col("_norm").is_null())["_id"].head(20).to_list(),
        "translations_kept_with_representative": int(rows.filter(pl.col("kept") & ~pl.col("is_representative")).height),
        "clusters_with_duplicates": int(rows.filter(pl.col("cluster_size") > 1)["cluster_id"].n_unique()),
        "threshold": config.threshold,  # null: per language, see "languages"
        "partitions": {r.key: r.stats for r in results},
    }
    for name in ("embeddings_computed", "embeddings_cached"):
        stats[name] = sum(r.stats.get(name, 0) for r in results)
    return StageOutput(
        tables={"translations": kept, "clusters": clusters, "pairs_near_threshold": near},
        report={"dedupe": stats | (report or {})},
    )


def near_threshold_pairs(
    rows: pl.DataFrame, results: list[PartitionResult], config: DedupeConfig, *, text_col: str = "text"
) -> pl.DataFrame:
    """Example pairs closest to the threshold on either side, to help tune it."""
    schema = {"a_id": pl.String, "b_id": pl.String, "a_language": pl.String, "b_language": pl.String,
              "a_text": pl.String, "b_text": pl.String, "similarity": pl.Float32, "merged": pl.Boolean,
              "distance_to_threshold": pl.Float32}
    pairs = [r.pairs for r in results if r.pairs.height]
    if not pairs or config.report_pairs == 0:
        return pl.DataFrame(schema=schema)
    side = rows.select(pl.col(ROW).cast(pl.Int64), "_id", "_lang", pl.col(text_col).alias("_text"))
    # Each partition's pairs carry the threshold that applied to them (per language).
    pairs = [p if "threshold" in p.columns else p.with_columns(pl.lit(config.threshold, pl.Float32).alias("threshold"))
             for p in pairs]
    near = (
        pl.concat(pairs, how="diagonal_relaxed")
        .filter((pl.col("similarity") - pl.col("threshold")).abs() <= config.near_margin)
        .with_columns((pl.col("similarity") - pl.col("threshold")).abs().cast(pl.Float32).alias("distance_to_threshold"))
        .sort(["distance_to_threshold", "a", "b"])
        .head(config.report_pairs)
    )
    near = near.join(side.rename({ROW: "a", "_id": "a_id", "_lang": "a_language", "_text": "a_text"}), on="a")
    near = near.join(side.rename({ROW: "b", "_id": "b_id", "_lang": "b_language", "_text": "b_text"}), on="b")
    return near.with_columns((pl.col("similarity") >= pl.col("threshold")).alias("merged")).sort(
        ["distance_to_threshold", "a", "b"]
    ).select(list(schema))


def dedupe_frame(
    df: pl.DataFrame,
    config: DedupeConfig,
    *,
    text_col: str = "text",
    language_col: str | None = "language",
    group_col: str | None = "question_id",
    id_col: str | None = None,
    cache_dir: Path | None = None,
    progress: ProgressFactory | None = None,
    source: str = "input",
    map_partitions: PartitionMap = map_in_process,
    verifier: PairVerifier | None = None,
    kept_before: Collection[str] | None = None,
) -> StageOutput:
    """Exact then semantic dedupe of `df`; embedding chunks and search cells run through
    `map_partitions` (by default one after another in this process; curate.orchestrate passes one
    that fans them out as tasks). With `verifier` and config.verify, pairs in the verification
    band go to the LLM judge. Rows whose id is in `kept_before` (kept by the last run) win
    their cluster over every other row; the keep policy decides among each kind.

    Returns tables `translations` (kept rows: input columns + cluster_id, is_representative),
    `clusters` (every row with its cluster, reason and similarity to the kept representative)
    `pairs_near_threshold` (example pairs within near_margin of the threshold) and
    `verifications` (the judge's verdict on each band pair; error rows for failed calls).
    """
    started = time.perf_counter()
    prepared = prepare_rows(df, config, text_col=text_col, language_col=language_col, group_col=group_col,
                            id_col=id_col, source=source, kept_before=kept_before)
    results: list[PartitionResult] = []
    info: dict[str, Any] = {"semantic": config.semantic}
    verifications = pl.DataFrame(schema=VERIFICATIONS_SCHEMA)
    if config.semantic:
        resolved = resolve_model(config.model)
        info |= model_info(resolved)
        languages = semantic_languages(config, resolved)
        if languages is not None:
            skipped = prepared.filter(~pl.col("_lang").is_in([*languages, UNKNOWN_LANGUAGE]))["_lang"].value_counts()
            info["exact_only_languages"] = dict(skipped.sort("_lang").iter_rows())
        present = sorted(prepared["_lang"].unique().to_list())
        settings = language_settings(present, resolved.name, threshold=config.threshold,
                                     verify=config.verify and verifier is not None, verify_above=config.verify_above)
        info["languages"] = {
            lang: settings[lang].as_report() | {"semantic": languages is None or lang in [*languages, UNKNOWN_LANGUAGE]}
            for lang in present
        }
        rows_by_key = {key: rows for key in partition_keys(prepared)
                       if (rows := partition_rows(prepared, key, text_col=text_col, languages=languages)).height}
        results, verifications = semantic_partitions(
            rows_by_key, config, resolved, settings, cache_dir=cache_dir, progress=progress,
            map_partitions=map_partitions, verifier=verifier, scratch_dir=cache_dir,
        )
    output = assemble(prepared, results, config, text_col=text_col, id_col=id_col, report=info)
    output.tables["verifications"] = verifications_table(verifications, prepared)
    output.report["dedupe"] |= verification_counts(verifications)
    output.report["dedupe"]["seconds"] = round(time.perf_counter() - started, 3)
    return output


def _kept_last_time(previous: pl.LazyFrame) -> list[str]:
    """The translation ids the last run's clusters kept (only those two columns are read)."""
    start_afresh = "delete the dedupe stage's folder to start afresh"
    try:
        columns = set(previous.collect_schema().names())
        if not {"translation_id", "kept"} <= columns:
            raise InputError(str(DEDUPE_CLUSTERS), f"the last run's clusters lack translation_id or kept; {start_afresh}",
                             field="kept")
        kept = previous.filter(pl.col("kept")).select(pl.col("translation_id").cast(pl.String)).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:  # the file was damaged since the last run wrote it
        raise InputError(str(DEDUPE_CLUSTERS), f"the last run's clusters cannot be read ({exc}); {start_afresh}") from exc
    return kept["translation_id"].to_list()


def dedupe_stage(
    translations: pl.DataFrame,
    config: DedupeConfig,
    *,
    cache_dir: Path | None = None,
    progress: ProgressFactory | None = None,
    map_partitions: PartitionMap = map_in_process,
    cache: Any = None,
    previous: pl.LazyFrame | pl.DataFrame | None = None,
) -> StageOutput:
    """Workspace stage: dedupe the `ok` rows of translate/translations. `cache` (the workspace's
    LLM cache) serves the verification band's judge when `verify` is on. `previous` is the last
    run's dedupe/clusters (the runner passes it, as a lazy scan, while `keep` and `score_col` are
    unchanged): the rows it kept, where still present, stay kept over rows new to this run. Only its
    `translation_id` and `kept` columns are read."""
    if "status" in translations.columns:
        translations = translations.filter(pl.col("status") == "ok")
    kept_before = None
    if previous is not None:
        kept_before = _kept_last_time(previous.lazy())
    verifier = (PairVerifier(config.verifier or EndpointConfig(), cache)
                if config.semantic and config.verify else None)
    output = dedupe_frame(
        translations, config, text_col="text", language_col="language", group_col="question_id",
        id_col="translation_id", cache_dir=cache_dir, progress=progress, source=str(TRANSLATIONS),
        map_partitions=map_partitions, verifier=verifier, kept_before=kept_before,
    )
    if kept_before is not None:
        ids = translations["translation_id"].cast(pl.String)
        output.report["dedupe"]["kept_by_last_run"] = int(ids.is_in(kept_before).sum())
    if map_partitions is not map_in_process:
        output.report["dedupe"]["fanned_out_partitions"] = len(output.report["dedupe"]["partitions"])
    return output
