"""Labelled replies the refusal detector learns from, with a manifest of exactly which files.

Every source becomes rows of TRAINING_SCHEMA: `source, model, question_id, language, text, label`
with `label` one of CLASSES. How each source's labels map (docs/refusal.md, model card, "Trained on"):

- SpeechMap (LLM-judge labels): COMPLETE -> answered, DENIAL -> hard, EVASIVE -> official_line
  (the class is "official line or evasion": SpeechMap's EVASIVE covers both, it cannot be split).
  `speechmap_us` is SpeechMap's us_criticism set (the same 31 models, requests critical of the US),
  loadable for experiments but not in TRAIN_SOURCES (docs/refusal-experiments.md, sixth round).
- XSTest v2 completions (human labels): 1_full_compliance -> answered, 2_full_refusal -> hard,
  3_partial_refusal -> deflection. XSTest's prompts are also the project's over-refusal eval set, so
  these rows are for testing only, never for training (`TRAIN_SOURCES` leaves them out).
- data/refusal_eval (hand labels): its own kinds; only the `tune` split, and not its XSTest rows.
- Argilla reviews (`reviews_training_rows`): reject with satisfaction 0-1 -> a refusal kind,
  accept -> answered.
- Short views (`short_answer_views`): the first sentences (150-500 characters) of every public
  `answered` reply, labelled answered. In the public data nearly every short reply refuses, so
  without them a model learns "short means refusal" and flags brief factual answers.

Reserved for independent evaluation and refused here by model name wherever it appears:
every R1-family model (DeepSeek-R1 and variants, MAI-DS-R1, R1-1776, R1T chimeras).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import InputError
from curate.refusal.config import CLASSES

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data" / "refusal_train"
SPEECHMAP_FILE = DATA_DIR / "speechmap_compliance.jsonl.gz"
SPEECHMAP_US_FILE = DATA_DIR / "speechmap_us_criticism.jsonl.gz"
XSTEST_DIR = DATA_DIR / "xstest_v2_completions"
REFUSAL_EVAL_FILE = REPO_ROOT / "data" / "refusal_eval" / "labeled.jsonl"
TRAIN_SOURCES = ("speechmap", "xstest", "refusal_eval")
ALL_SOURCES = ("speechmap", "refusal_eval", "xstest", "speechmap_us")

# R1-family model names: deepseek-r1*, *-r1-*, mai-ds-r1, r1-1776, r1t(2) chimeras.
RESERVED_MODEL = re.compile(r"(?i)(?:^|[/_\-. ])r1(?:$|[/_\-. t])|mai-ds|1776|chimera")
SPEECHMAP_LABELS = {"COMPLETE": "answered", "DENIAL": "hard", "EVASIVE": "official_line"}
XSTEST_LABELS = {"1_full_compliance": "answered", "2_full_refusal": "hard", "3_partial_refusal": "deflection"}

TRAINING_SCHEMA = pl.Schema({
    "source": pl.String(), "model": pl.String(), "question_id": pl.String(), "language": pl.String(),
    "text": pl.String(), "label": pl.String(),
})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=TRAINING_SCHEMA) if rows else pl.DataFrame(schema=TRAINING_SCHEMA)


def load_speechmap(path: Path = SPEECHMAP_FILE, source: str = "speechmap") -> tuple[pl.DataFrame, dict[str, Any]]:
    raw = path.read_bytes()
    rows, dropped = [], 0
    for number, line in enumerate(gzip.decompress(raw).decode("utf-8").splitlines(), start=1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON: {exc.msg}", line=number) from exc
        if r.get("compliance") not in SPEECHMAP_LABELS:
            raise InputError(path, f"unknown label {r.get('compliance')!r}", line=number, field="compliance")
        if RESERVED_MODEL.search(r["model"]):
            dropped += 1
            continue
        rows.append({"source": source, "model": r["model"], "question_id": r["question_id"],
                     "language": r["language"], "text": r["response"], "label": SPEECHMAP_LABELS[r["compliance"]]})
    return _frame(rows), {"path": _relative(path), "sha256": sha256_bytes(raw), "rows": len(rows), "reserved_dropped": dropped}


def load_xstest(directory: Path = XSTEST_DIR) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    rows, files = [], []
    for path in sorted(directory.glob("xstest_v2_completions_*.csv")):
        raw = path.read_bytes()
        model = "xstest/" + path.stem.removeprefix("xstest_v2_completions_")
        n = 0
        for number, r in enumerate(csv.DictReader(io.StringIO(raw.decode("utf-8"))), start=2):
            if r.get("final_label") not in XSTEST_LABELS:
                raise InputError(path, f"unknown label {r.get('final_label')!r}", line=number, field="final_label")
            rows.append({"source": "xstest", "model": model, "question_id": f"xstest-{r['id']}", "language": "en",
                         "text": r["completion"] or "", "label": XSTEST_LABELS[r["final_label"]]})
            n += 1
        files.append({"path": _relative(path), "sha256": sha256_bytes(raw), "rows": n, "reserved_dropped": 0})
    return _frame(rows), files


def load_refusal_eval(path: Path = REFUSAL_EVAL_FILE, split: str = "tune") -> tuple[pl.DataFrame, dict[str, Any]]:
    raw = path.read_bytes()
    rows, dropped = [], 0
    for line in raw.decode("utf-8").splitlines():
        r = json.loads(line)
        if RESERVED_MODEL.search(r["model"]):
            dropped += 1
            continue
        # XSTest prompts are the over-refusal eval set: replies to them stay out of training.
        if r["split"] != split or r["source"].startswith("xstest"):
            continue
        rows.append({"source": f"refusal_eval/{split}", "model": f"refusal_eval/{r['model']}", "question_id": r["id"],
                     "language": r["language"], "text": r["response"], "label": r["label"]["kind"] or "answered"})
    return _frame(rows), {"path": _relative(path), "sha256": sha256_bytes(raw), "rows": len(rows), "reserved_dropped": dropped,
                          "split": split}


# The shortest run of whole sentences of 150-500 characters at the start of a reply.
_LEADING_SENTENCES = r"(?s)^\s*(.{150,500}?[.!?。！？])(?:\s|$)"


def short_answer_views(df: pl.DataFrame) -> pl.DataFrame:
    """The opening sentences of each answered reply longer than the view, as extra answered rows.

    A view keeps its reply's model and question, so held-out folds keep it with its reply.
    """
    answered = df.filter((pl.col("label") == "answered") & (pl.col("text").str.len_chars() > 600))
    views = answered.with_columns(pl.col("text").str.extract(_LEADING_SENTENCES, 1).alias("text"))
    return views.drop_nulls("text").with_columns((pl.col("source") + "/opening").alias("source"))


def load_sources(sources: tuple[str, ...] = TRAIN_SOURCES) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Rows and manifest entries (path, sha256, rows used, reserved rows dropped) for `sources`."""
    frames, manifest = [], []
    for source in sources:
        if source in ("speechmap", "speechmap_us"):
            df, entry = load_speechmap(SPEECHMAP_FILE if source == "speechmap" else SPEECHMAP_US_FILE, source)
            frames.append(df)
            manifest.append(entry | {"source": source})
        elif source == "refusal_eval":
            df, entry = load_refusal_eval()
            frames.append(df)
            manifest.append(entry | {"source": source})
        elif source == "xstest":
            df, entries = load_xstest()
            frames.append(df)
            manifest.extend(e | {"source": source} for e in entries)
        else:
            raise ValueError(f"unknown training source {source!r}; expected one of {ALL_SOURCES}")
    public = pl.concat(frames)
    return pl.concat([public, short_answer_views(public)]), manifest


def check_training_frame(df: pl.DataFrame, origin: str) -> pl.DataFrame:
    """Labels in CLASSES, no R1-family model in public data, no empty text: the guard every training
    run passes. Reviewed rows are the project's own outputs, not the reserved public files, so they
    are counted in the manifest instead (curate/refusal/reviews.py)."""
    bad = df.filter(~pl.col("label").is_in(CLASSES))
    if bad.height:
        raise InputError(origin, f"unknown label {bad['label'][0]!r}; expected one of {list(CLASSES)}", field="label")
    reserved = df.filter(pl.col("model").str.contains(RESERVED_MODEL.pattern) & (pl.col("source") != "reviews"))
    if reserved.height:
        raise InputError(origin, f"R1-family model {reserved['model'][0]!r} is reserved for independent evaluation", field="model")
    return df.filter(pl.col("text").fill_null("").str.strip_chars().str.len_chars() > 0)
