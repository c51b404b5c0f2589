"""The `preference` export: DPO-style prompt / chosen / rejected pairs beside the SFT release.

Pairs come from the judge stage's `judge/preferences` table (best-of-K winner against its clearly
worse siblings and the refusals the answer filters dropped). Exported against a release, only
pairs whose chosen answer is in that release are kept, and the chosen text is the released one
(with the reviewers' correction when there is one), so the preference set never prefers an answer
people rejected. The folder is what `datasets.load_dataset(folder)` reads: Parquet shards per
language under data/ and a README.md whose YAML header names the configs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from curate.errors import CurateError
from curate.release.config import ReleaseConfig
from curate.release.export import (
    _fresh_destination,
    _publish,
    _size_category,
    check_draft,
    training_rows,
    write_language_shards,
)
from curate.release.store import ReleaseStore
from curate.tables import PREFERENCES
from curate.workspace import Workspace

PREFERENCE_FORMAT = "preference"
REQUIRED = ("pair_id", "language", "prompt", "chosen_candidate_id", "chosen", "rejected")
METADATA = ("pair_id", "language", "topic", "question_id", "chosen_candidate_id", "rejected_candidate_id",
            "rejected_source", "chosen_score", "rejected_score")


def _with_reasoning(text: str, reasoning: str, think_open: str, think_close: str) -> pl.Expr:
    has = pl.col(reasoning).is_not_null() & (pl.col(reasoning).str.strip_chars() != "")
    return pl.when(has).then(pl.concat_str(pl.lit(think_open), pl.col(reasoning), pl.lit(think_close), pl.col(text))).otherwise(pl.col(text))


def preference_rows(
    pairs: pl.DataFrame, release_rows: pl.DataFrame | None = None, *, think_open: str = "<think>\n",
    think_close: str = "\n</think>\n\n",
) -> pl.DataFrame:
    """prompt, chosen, rejected (reasoning inside think tags, as the `messages` format writes it) plus metadata."""
    missing = [c for c in REQUIRED if c not in pairs.columns]
    if missing:
        raise CurateError(f"judge/preferences lacks column(s) {missing}; rerun `curate judge`")
    for col in ("chosen_reasoning", "rejected_reasoning", *METADATA):
        if col not in pairs.columns:
            pairs = pairs.with_columns(pl.lit(None, pl.String).alias(col))
    if release_rows is not None:
        released = release_rows.filter(pl.col("candidate_id").is_not_null()).select(
            pl.col("candidate_id").alias("chosen_candidate_id"), pl.col("answer").alias("_released"))
        pairs = pairs.join(released, on="chosen_candidate_id", how="inner").with_columns(chosen=pl.col("_released"))
    return pairs.select(
        "prompt",
        _with_reasoning("chosen", "chosen_reasoning", think_open, think_close).alias("chosen"),
        _with_reasoning("rejected", "rejected_reasoning", think_open, think_close).alias("rejected"),
        *METADATA,
    ).sort("pair_id")


def _card(rows: pl.DataFrame, languages: list[str], source: dict[str, Any]) -> str:
    header = {
        "pretty_name": "curate blocked-topic preferences",
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "multilingual"],
        "language": languages,
        "size_categories": [_size_category(rows.height)],
        "configs": [{"config_name": "all", "data_files": [{"split": "train", "path": "data/*/*.parquet"}], "default": True}],
    }
    by_source = {str(k): int(v) for k, v in rows.group_by("rejected_source").len().sort("rejected_source").iter_rows()}
    return (
        f"---\n{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---\n\n# Preference pairs\n\n"
        f"{rows.height} DPO-style pairs (`prompt`, `chosen`, `rejected`) in {len(languages)} language(s). "
        "The chosen answer is the judge's best of K candidates for its question and language"
        f"{' and is in release ' + str(source['release']) if source.get('release') is not None else ''}; "
        "the rejected answer is a clearly worse candidate (`rejected_source = judged`) or a refusal the answer "
        f"filters dropped (`filtered:refusal`). Rejected answers by source: {by_source}.\n\n"
        "Scores are LLM-judge scores (see `chosen_score`, `rejected_score`); the judges and rubric versions are in "
        "preference_manifest.json.\n"
    )


def export_preference(pairs: pl.DataFrame, dest: Path, *, config: ReleaseConfig | None = None,
                      release_rows: pl.DataFrame | None = None, source: dict[str, Any] | None = None) -> Path:
    """Write `dest` (which must be new or empty) atomically; returns it."""
    config = config or ReleaseConfig()
    dest = Path(dest)
    _fresh_destination(dest)
    rows = preference_rows(pairs, release_rows, think_open=config.think_open, think_close=config.think_close)
    if rows.is_empty():
        raise CurateError("no preference pairs to export (none whose chosen answer is in the release)"
                          if release_rows is not None else "no preference pairs to export; run `curate judge` first")
    languages = sorted(rows["language"].unique().to_list())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        write_language_shards(rows, tmp, config.shard_rows)
        meta = {"format": PREFERENCE_FORMAT, "rows": rows.height, "languages": languages, **(source or {})}
        (tmp / "README.md").write_text(_card(rows, languages, meta), encoding="utf-8")
        (tmp / "preference_manifest.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n",
                                                      encoding="utf-8")
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def export_release_preferences(ws: Workspace, store: ReleaseStore, ref: str | int, dest: Path,
                               config: ReleaseConfig | None = None, *, allow_draft: bool = False,
                               include_test: bool = False) -> Path:
    """`export_preference` of the workspace's judge/preferences against release `ref`: the same draft
    guard and the same held-out test split as the SFT export (curate.release.export)."""
    version = store.resolve(ref)
    check_draft(store, version, allow_draft)
    release_rows, _ = training_rows(store, version, include_test)
    manifest = ws.manifest(PREFERENCES.stage) or {}
    report = manifest.get("report", {})
    source = {"release": version, "judges": report.get("judges"), "rubrics": report.get("rubrics"),
              "judge_run_id": manifest.get("run_id")}
    return export_preference(ws.read(PREFERENCES), dest, config=config, release_rows=release_rows,
                             source=source)
