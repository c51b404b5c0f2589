"""Write a release out: `checkout` to a plain folder, `export_hf` to a Hugging Face dataset folder
(Parquet shards per language + README.md dataset card), and `push_to_hub`."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from curate.errors import CurateError
from curate.release.config import CardConfig, ReleaseConfig
from curate.release.formats import check_format, format_rows
from curate.release.shards import stream_language_shards
from curate.release.store import ReleaseStore

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FILE_FORMATS = ("parquet", "jsonl")


def _fresh_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CurateError(f"{dest}: already exists and is not empty; choose a new folder")


def check_draft(store: ReleaseStore, version: int, allow_draft: bool) -> None:
    """A draft holds rows no reviewer accepted yet; writing one out has to be asked for."""
    if store.is_draft(version) and not allow_draft:
        raise CurateError(
            f"release {version} is a draft (rows still pending review); export it only on purpose, "
            "with --allow-draft (allow_draft=True), and do not train on it"
        )


def training_rows(store: ReleaseStore, version: int, include_test: bool) -> tuple[pl.DataFrame, int]:
    """The release's rows without its `test` split (held out for evaluation) unless asked; and how
    many test rows were left out."""
    rows = store.read(version)
    if include_test or "split" not in rows.columns:
        return rows, 0
    kept = rows.filter(pl.col("split") != "test")
    return kept, rows.height - kept.height


def _publish(tmp: Path, dest: Path) -> None:
    """Move a fully written temporary folder into place, so a failure leaves nothing half-written."""
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)


def checkout(
    store: ReleaseStore,
    ref: str | int,
    dest: Path,
    fmt: str,
    file_format: str = "parquet",
    config: ReleaseConfig | None = None,
    *,
    allow_draft: bool = False,
    include_test: bool = False,
) -> Path:
    """Write release `ref` to `dest` as one data file plus its manifest (a draft only with `allow_draft`;
    the `test` split only with `include_test`)."""
    check_format(fmt)
    if file_format not in FILE_FORMATS:
        raise CurateError(f"unknown file format '{file_format}' (use one of: {', '.join(FILE_FORMATS)})")
    config = config or ReleaseConfig()
    version = store.resolve(ref)
    check_draft(store, version, allow_draft)
    dest = Path(dest)
    _fresh_destination(dest)
    kept, left_out = training_rows(store, version, include_test)
    rows = format_rows(kept, fmt, think_open=config.think_open, think_close=config.think_close)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if file_format == "parquet":
            rows.write_parquet(tmp / "data.parquet", compression="zstd")
        else:
            rows.write_ndjson(tmp / "data.jsonl")
        manifest = store.manifest(version) | {"checkout": {
            "format": fmt, "file_format": file_format, "rows": rows.height, "test_rows_left_out": left_out}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return label
    return "n>10M"


def _config_name(language: str) -> str:
    return language if language not in ("all", "default") else f"lang_{language}"


def _yaml_header(manifest: dict[str, Any], card: CardConfig, languages: list[str]) -> str:
    configs = [{"config_name": "all", "data_files": [{"split": "train", "path": "data/*/*.parquet"}], "default": True}]
    configs += [
        {"config_name": _config_name(lang), "data_files": [{"split": "train", "path": f"data/{lang}/*.parquet"}]}
        for lang in languages
    ]
    header = {
        "pretty_name": card.pretty_name,
        "license": card.license,
        "language": languages,
        "task_categories": card.task_categories,
        "tags": card.tags,
        "size_categories": [_size_category(manifest["rows"])],
        "configs": configs,
    }
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True)


def render_card(
    manifest: dict[str, Any],
    card: CardConfig,
    fmt: str,
    languages: list[str],
    think_open: str = "<think>",
    repo_hint: str = "path/to/this/folder",
    exported: dict[str, Any] | None = None,
) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    topics = list(manifest["by_topic"].items())
    m = {
        "policy": None,
        "review_campaigns": [],
        "answers_corrected": 0,
        "models": {},
        "flow_run_ids": [],
        "mixes": [],
        "config_hash": None,
        "draft": False,
        "pending_rows": 0,
        "unreviewed_rows": 0,
        "review_split": None,
        "judges": [],
        "rubrics": {},
        "by_split": {},
        "config": {},
    } | manifest
    return env.get_template("dataset_card.md.j2").render(
        yaml_header=_yaml_header(manifest, card, languages),
        card=card,
        m=m,
        fmt=fmt,
        think_tag=think_open.strip() + "…" + think_open.strip().replace("<", "</"),
        languages=languages,
        top_topics=topics[:30],
        more_topics=max(0, len(topics) - 30),
        repo_hint=repo_hint,
        exported=exported or {"rows": manifest["rows"], "test_rows_left_out": 0, "include_test": True},
    )


def write_language_shards(rows: pl.DataFrame, folder: Path, shard_rows: int) -> list[str]:
    """data/<language>/train-*-of-*.parquet under `folder`, the layout the card's configs name."""
    languages = sorted(rows["language"].unique().to_list())
    for lang in languages:
        part = rows.filter(pl.col("language") == lang)
        shards = max(1, math.ceil(part.height / shard_rows))
        (folder / "data" / lang).mkdir(parents=True)
        for i in range(shards):
            shard = part.slice(i * shard_rows, shard_rows)
            shard.write_parquet(folder / "data" / lang / f"train-{i:05d}-of-{shards:05d}.parquet", compression="zstd")
    return languages


def export_hf(
    store: ReleaseStore,
    ref: str | int,
    dest: Path,
    fmt: str,
    config: ReleaseConfig | None = None,
    repo_hint: str | None = None,
    *,
    allow_draft: bool = False,
    include_test: bool = False,
) -> Path:
    """A folder `datasets.load_dataset(dest)` reads: data/<lang>/train-*.parquet + README.md card.

    A draft release is refused unless `allow_draft`; its card then says it is a draft. The
    release's `test` split (held out for evaluation) is left out unless `include_test`; the card
    says which."""
    check_format(fmt)
    config = config or ReleaseConfig()
    version = store.resolve(ref)
    check_draft(store, version, allow_draft)
    dest = Path(dest)
    _fresh_destination(dest)
    manifest = store.manifest(version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        # Batch by batch (curate.release.shards): a full-size release does not fit in memory at once.
        languages, written, left_out = stream_language_shards(
            store, version, tmp, config.shard_rows, include_test,
            lambda batch: format_rows(batch, fmt, think_open=config.think_open, think_close=config.think_close),
        )
        card = render_card(manifest, config.card, fmt, languages, config.think_open, repo_hint or dest.name,
                           exported={"rows": written, "test_rows_left_out": left_out, "include_test": include_test})
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / "release_manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def push_to_hub(folder: Path, repo_id: str, *, token_env: str = "HF_TOKEN", private: bool = True) -> str:
    """Upload an exported folder as a dataset repo. The token is read from the environment and
    handed straight to huggingface_hub; it is never logged or written."""
    token = os.environ.get(token_env)
    if not token:
        raise CurateError(f"push_to_hub needs a Hugging Face token in the environment variable {token_env}")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")
    return str(getattr(commit, "commit_url", commit))
