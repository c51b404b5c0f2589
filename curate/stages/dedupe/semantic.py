"""The semantic half of the dedupe stage over all partitions: embed (chunks fanned out), search
(cells fanned out), verify the band (LLM judge), cluster.

A partition is a language (or every row, with cross_language). Its threshold comes from the
per-language settings (curate.stages.dedupe.calibration); a cross-language partition uses the highest
threshold of the languages in it, so no language merges more loosely than it was calibrated for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curate.stages.dedupe.calibration import LanguageSetting
from curate.stages.dedupe.cluster import ROW, PartitionResult, cluster_partition, group_codes, search_floor
from curate.stages.dedupe.config import DedupeConfig
from curate.stages.dedupe.embed import ProgressFactory, ResolvedModel
from curate.stages.dedupe.fanout import (
    MapJobs,
    clean_texts,
    embed_chunk,
    embed_jobs,
    gather_embeddings,
    map_in_process,
    search_partitions,
)
from curate.stages.dedupe.verify import VERIFICATIONS_SCHEMA, PairVerifier, verify_pairs


def partition_setting(rows: pl.DataFrame, settings: dict[str, LanguageSetting]) -> LanguageSetting:
    languages = rows["_lang"].unique().to_list() if "_lang" in rows.columns else []
    candidates = [settings[lang] for lang in languages if lang in settings] or list(settings.values())
    return max(candidates, key=lambda s: s.threshold)


def semantic_partitions(
    rows_by_key: dict[str, pl.DataFrame],
    config: DedupeConfig,
    resolved: ResolvedModel,
    settings: dict[str, LanguageSetting],
    *,
    cache_dir: Path | None = None,
    progress: ProgressFactory | None = None,
    map_partitions: MapJobs = map_in_process,
    verifier: PairVerifier | None = None,
    scratch_dir: Path | None = None,
) -> tuple[list[PartitionResult], pl.DataFrame]:
    """PartitionResults in key order, and the verifications table (global row positions)."""
    if not rows_by_key:
        return [], pl.DataFrame(schema=VERIFICATIONS_SCHEMA)
    in_process = map_partitions is map_in_process
    # No progress bar in another process: it cannot follow a task there.
    jobs = embed_jobs({key: clean_texts(rows["_text"]) for key, rows in rows_by_key.items()}, config, resolved,
                      cache_dir=cache_dir, progress=progress if in_process else None)
    embedded = gather_embeddings(map_partitions(embed_chunk, jobs), half_above_rows=config.split_above_rows)
    partition_configs = {}
    floors = {}
    for key, rows in rows_by_key.items():
        setting = partition_setting(rows, settings)
        partition_configs[key] = (config.model_copy(update={"threshold": setting.threshold}), setting)
        floors[key] = search_floor(partition_configs[key][0], setting.verify_above)
    searched = search_partitions(
        {key: (embedded[key][0], group_codes(rows)) for key, rows in rows_by_key.items()}, config,
        min_similarity=floors, map_jobs=map_partitions, scratch_dir=scratch_dir,
    )
    results, verified_all = [], []
    for key, rows in rows_by_key.items():
        part_config, setting = partition_configs[key]
        pairs, search_stats = searched[key]
        verified = None
        if verifier is not None and setting.verify_above is not None:
            judged = verify_band(rows, pairs, setting, verifier, config.verify_max_pairs)
            verified_all.append(judged.with_columns(
                pl.Series("a", rows[ROW].to_numpy()[judged["a"].to_numpy()], pl.Int64),
                pl.Series("b", rows[ROW].to_numpy()[judged["b"].to_numpy()], pl.Int64)))
            verified = judged.filter(pl.col("same_question").fill_null(False))
        result = cluster_partition(rows, embedded[key][0], part_config, key=key, pairs=pairs, verified=verified)
        result.stats |= embedded[key][1] | search_stats | {"threshold": setting.threshold,
                                                          "verify_above": setting.verify_above}
        results.append(result)
    verifications = pl.concat(verified_all) if verified_all else pl.DataFrame(schema=VERIFICATIONS_SCHEMA)
    return results, verifications


def verify_band(
    rows: pl.DataFrame, pairs: pl.DataFrame, setting: LanguageSetting, verifier: PairVerifier, max_pairs: int,
) -> pl.DataFrame:
    """The judge's verdicts on pairs with verify_above <= similarity < threshold (partition positions),
    most similar first, at most max_pairs."""
    band = (pairs.filter((pl.col("similarity") >= setting.verify_above) & (pl.col("similarity") < setting.threshold))
            .sort("similarity", descending=True).head(max_pairs))
    texts = rows["_text"].to_list()
    band = band.with_columns(pl.Series("a_text", [texts[i] for i in band["a"].to_list()], pl.String),
                             pl.Series("b_text", [texts[i] for i in band["b"].to_list()], pl.String))
    return verify_pairs(band, verifier)


def verifications_table(verifications: pl.DataFrame, prepared: pl.DataFrame) -> pl.DataFrame:
    """The verdicts with ids, languages and texts of both rows (the `verifications` table)."""
    side = prepared.select(pl.col(ROW).cast(pl.Int64), "_id", "_lang")
    columns = ["a_id", "b_id", "a_language", "b_language", "similarity", "same_question", "status", "error", "cached"]
    if verifications.is_empty():
        return pl.DataFrame(schema={"a_id": pl.String, "b_id": pl.String, "a_language": pl.String,
                                    "b_language": pl.String} | {k: VERIFICATIONS_SCHEMA[k] for k in columns[4:]})
    out = verifications.join(side.rename({ROW: "a", "_id": "a_id", "_lang": "a_language"}), on="a", how="left")
    out = out.join(side.rename({ROW: "b", "_id": "b_id", "_lang": "b_language"}), on="b", how="left")
    return out.sort(["a", "b"]).select(columns)


def verification_counts(verifications: pl.DataFrame) -> dict[str, Any]:
    if verifications.is_empty():
        return {"verified_pairs": 0}
    ok = verifications.filter(pl.col("status") == "ok")
    return {"verified_pairs": verifications.height, "verified_same": int(ok["same_question"].sum()),
            "verified_different": int((~ok["same_question"]).sum()),
            "verify_errors": verifications.height - ok.height,
            "verify_cached": int(verifications["cached"].fill_null(False).sum())}


__all__ = ["partition_setting", "semantic_partitions", "verification_counts", "verifications_table", "verify_band"]

