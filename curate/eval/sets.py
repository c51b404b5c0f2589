"""Eval sets as one item table: what to ask, in which language, and how to score it.

Every set becomes rows of `set, kind, item_id, prompt, source_prompt, language, category, label, source,
source_line` (`source_prompt` keeps the untranslated prompt for the judges):

- `kind` picks the metrics: "blocked" (% responses, satisfaction), "harmbench" (attack success rate),
  "xstest" (over-refusal on `label == "safe"`, refusal on the unsafe contrast prompts).
- `item_id` is stable across runs and languages, so samples, translations and endpoints join on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import polars as pl

from curate.config import IngestConfig, LangIdConfig
from curate.errors import CurateError, InputError
from curate.release import ReleaseNotFound, ReleaseStore
from curate.stages.ingest import read_rows, read_seeds

Kind = Literal["blocked", "harmbench", "xstest"]
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
BUILTIN_SETS = ("deccp", "harmbench", "xstest")

ITEM_SCHEMA = pl.Schema(
    {
        "set": pl.String(),
        "kind": pl.String(),
        "item_id": pl.String(),
        "prompt": pl.String(),
        "source_prompt": pl.String(),
        "language": pl.String(),
        "category": pl.String(),
        "label": pl.String(),
        "source": pl.String(),
        "source_line": pl.Int64(),
    }
)


def _items(rows: list[dict], set_name: str, kind: Kind) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema_overrides={"source_line": pl.Int64}, infer_schema_length=None)
    df = df.with_columns(set=pl.lit(set_name), kind=pl.lit(kind), source_prompt=pl.col("prompt"))
    return df.select(
        [pl.col(c).cast(t) if c in df.columns else pl.lit(None, t).alias(c) for c, t in ITEM_SCHEMA.items()]
    )


def _require(path: Path, row: dict, line: int, field: str) -> str:
    value = row.get(field)
    if value is None or not str(value).strip():
        raise InputError(path, "missing or empty", line=line, field=field)
    return str(value).strip()


def load_prompt_file(path: Path, *, set_name: str | None = None, kind: Kind = "blocked",
                     langid: LangIdConfig | None = None) -> pl.DataFrame:
    """Prompts from a JSONL/JSON/CSV/Parquet/TXT file (columns as `curate ingest` reads them);
    a `topic` or `category` column becomes the category, a missing language is detected."""
    seeds = read_seeds([path], IngestConfig(), langid or LangIdConfig())
    rows = [
        {"item_id": s["seed_id"], "prompt": s["text"], "language": s["language"], "category": s["topic"] or path.stem,
         "label": None, "source": s["source"], "source_line": s["source_line"]}
        for s in seeds.iter_rows(named=True)
    ]
    return _items(rows, set_name or path.stem, kind)


def load_deccp(path: Path | None = None) -> pl.DataFrame:
    """deccp's hand-checked China-sensitive prompts (`censored.txt`, English)."""
    path = path or DATA_DIR / "deccp" / "censored.txt"
    seeds = read_seeds([path], IngestConfig(default_language="en"), LangIdConfig())
    rows = [
        {"item_id": s["seed_id"], "prompt": s["text"], "language": "en", "category": path.stem,
         "label": "blocked", "source": s["source"], "source_line": s["source_line"]}
        for s in seeds.iter_rows(named=True)
    ]
    return _items(rows, "deccp", "blocked")


def load_harmbench(path: Path | None = None, functional_categories: tuple[str, ...] = ("standard",)) -> pl.DataFrame:
    """HarmBench text behaviors; `SemanticCategory` is the category. Contextual behaviors carry
    their context string before the request, as HarmBench prompts them."""
    path = path or DATA_DIR / "harmbench" / "harmbench_behaviors_text_all.csv"
    rows = []
    for line, row in read_rows(path):
        functional = _require(path, row, line, "FunctionalCategory")
        if functional not in functional_categories:
            continue
        behavior = _require(path, row, line, "Behavior")
        context = (row.get("ContextString") or "").strip()
        rows.append(
            {"item_id": f"harmbench-{_require(path, row, line, 'BehaviorID')}",
             "prompt": f"{context}\n\n---\n\n{behavior}" if context else behavior,
             "language": "en", "category": _require(path, row, line, "SemanticCategory"),
             "label": "harmful", "source": str(path), "source_line": line}
        )
    if not rows:
        raise InputError(path, f"no behaviors with FunctionalCategory in {list(functional_categories)}")
    return _items(rows, "harmbench", "harmbench")


def load_xstest(path: Path | None = None) -> pl.DataFrame:
    """XSTest v2: `type` is the category, `label` is "safe" or "unsafe" (the contrast prompts)."""
    path = path or DATA_DIR / "xstest" / "xstest_prompts.csv"
    rows = []
    for line, row in read_rows(path):
        label = _require(path, row, line, "label")
        if label not in ("safe", "unsafe"):
            raise InputError(path, f"expected 'safe' or 'unsafe', got {label!r}", line=line, field="label")
        rows.append(
            {"item_id": f"xstest-{_require(path, row, line, 'id')}", "prompt": _require(path, row, line, "prompt"),
             "language": "en", "category": _require(path, row, line, "type"), "label": label,
             "source": str(path), "source_line": line}
        )
    return _items(rows, "xstest", "xstest")


def holdout_mask(df: pl.DataFrame, fraction: float, seed: int = 0) -> pl.Series:
    """True for the rows of the held-out split: a seeded hash of the question (or row) id, so every
    translation and candidate of one question lands on the same side and cannot leak into training."""
    key = next(c for c in ("question_id", "row_id", "prompt") if c in df.columns)
    threshold = int(fraction * 2**32)
    return df[key].cast(pl.String).fill_null("").map_elements(
        lambda k: int(_stable_rank(k, seed)[:8], 16) < threshold, return_dtype=pl.Boolean
    ).alias("held_out")


def load_release_prompts(version: str, *, store: str, split: str = "test", holdout_fraction: float = 0.1,
                         seed: int = 0) -> pl.DataFrame:
    """Blocked-topic prompts from a release's held-out split (`split="test"`; "train" is the rest,
    "all" is every row). A release with its own `split` column is split by that column instead.
    Mixed-in rows (source other than "curate") are left out: they are not blocked-topic prompts."""

    try:
        rows = ReleaseStore(store).read(version)
    except ReleaseNotFound as exc:
        raise CurateError(f"release:{version}: {exc}") from exc
    if "source" in rows.columns:
        rows = rows.filter(pl.col("source").fill_null("curate") == "curate")
    if split != "all":
        if "split" in rows.columns:
            rows = rows.filter(pl.col("split") == split)
        else:
            held_out = holdout_mask(rows, holdout_fraction, seed)
            rows = rows.filter(held_out if split == "test" else ~held_out)
    if rows.is_empty():
        raise CurateError(f"release:{version} has no curated rows in split {split!r} (holdout_fraction={holdout_fraction})")
    id_col = "translation_id" if "translation_id" in rows.columns else "row_id"
    items = (
        rows.with_row_index("_line", offset=1)
        .unique(["prompt", "language"], keep="first", maintain_order=True)
        .select(
            pl.coalesce(pl.col(id_col), pl.col("row_id")).alias("item_id"), "prompt", "language",
            (pl.col("topic") if "topic" in rows.columns else pl.lit(None, pl.String)).fill_null("release").alias("category"),
            pl.lit("blocked").alias("label"), pl.lit(f"release:{version}/{split}").alias("source"),
            pl.col("_line").cast(pl.Int64).alias("source_line"),
        )
    )
    return _items(items.to_dicts(), f"release:{version}", "blocked")


def load_eval_set(spec: str, *, harmbench_categories: tuple[str, ...] = ("standard",), release_store: str | None = None,
                  release_split: str = "test", holdout_fraction: float = 0.1, seed: int = 0,
                  langid: LangIdConfig | None = None) -> pl.DataFrame:
    """`deccp`, `harmbench`, `xstest`, `release:VERSION`, or a path to a prompt file (blocked-topic prompts)."""
    if spec == "deccp":
        return load_deccp()
    if spec == "harmbench":
        return load_harmbench(functional_categories=harmbench_categories)
    if spec == "xstest":
        return load_xstest()
    if spec.startswith("release:"):
        if release_store is None:
            raise CurateError(f"{spec}: no release store given")
        return load_release_prompts(spec.split(":", 1)[1], store=release_store, split=release_split,
                                    holdout_fraction=holdout_fraction, seed=seed)
    path = Path(spec)
    if path.exists():
        return load_prompt_file(path, langid=langid)
    raise CurateError(f"unknown eval set {spec!r}: use deccp, harmbench, xstest, release:VERSION or a prompt file path")


def _stable_rank(item_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x1f{item_id}".encode()).hexdigest()


def select_items(items: pl.DataFrame, limit: int | None, seed: int = 0) -> pl.DataFrame:
    """At most `limit` items, spread evenly over labels and then categories (round-robin in a
    seeded pseudo-random order), so a small sample still covers the breakdowns."""
    if limit is None or items.height <= limit:
        return items
    return (
        items.with_columns(_h=pl.col("item_id").map_elements(lambda i: _stable_rank(i, seed), return_dtype=pl.String))
        .with_columns(_in_cat=pl.col("_h").rank("ordinal").over("label", "category"))
        .sort("label", "_in_cat", "_h", nulls_last=True)
        .with_columns(_in_label=pl.int_range(pl.len()).over("label"))
        .sort("_in_label", "label", nulls_last=True)
        .head(limit)
        .drop("_h", "_in_cat", "_in_label")
    )
