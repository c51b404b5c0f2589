"""Held-out figures for the refusal detector: leave-one-model-out and by-question folds.

The same questions repeat across models and the same model's style repeats across questions, so
rows are never split at random: a fold holds out whole models (`model`) or whole questions
(`question`). Scores go through the shipped detector's calibration map (a monotone map of one number,
fit on model-grouped out-of-fold predictions of all rows; docs/refusal.md says so next to the figures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from curate.refusal.config import CLASSES, KINDS
from curate.refusal.train import TrainParams, class_probabilities, fit_all, fold_jobs, group_folds, reliability_table

Split = Literal["model", "question", "language"]


def fold_assignment(df: pl.DataFrame, split: Split, folds: int, seed: int) -> np.ndarray:
    """model: whole models per fold (folds=0: one model per fold, leave-one-model-out);
    question: whole questions per fold; language: one language per fold (train on the others)."""
    if split == "question":
        return group_folds(df["source"] + "/" + df["question_id"], folds, seed)
    column = "model" if split == "model" else "language"
    if split == "model" and folds > 0:
        return group_folds(df[column], folds, seed)
    names = sorted(set(df[column].to_list()))
    index = {m: i for i, m in enumerate(names)}
    return np.array([index[m] for m in df[column].to_list()])


def cross_validate(
    df: pl.DataFrame, params: TrainParams, split: Split, workdir: Path, *, folds: int = 5,
    test_mask: np.ndarray | None = None, calibration: tuple[list[float], list[float]] | None = None, progress=None,
    workers: int | None = None,
) -> pl.DataFrame:
    """`df` plus fold, p_raw, p_refusal (calibrated), pred_refused, pred_kind for every row in `test_mask`.

    Rows outside `test_mask` (default: all) are only ever training data.
    """
    assignment = fold_assignment(df, split, folds, params.seed)
    test_mask = np.ones(df.height, dtype=bool) if test_mask is None else test_mask
    raw = np.full(df.height, np.nan)
    calibrated = np.full(df.height, np.nan)
    kind = np.full(df.height, -1)
    fold_ids = sorted(set(assignment[test_mask].tolist()))
    # Independent single-threaded fits: side by side, same bytes as one after another.
    paths = fit_all(fold_jobs(df, assignment, workdir, fold_ids), params, workers)
    for fold, path in zip(fold_ids, paths, strict=True):
        test = (assignment == fold) & test_mask
        probs = class_probabilities(path, df.filter(pl.Series(test)), params)
        raw[test] = 1.0 - probs[:, 0]
        kind[test] = probs[:, 1:].argmax(axis=1)
        calibrated[test] = np.interp(raw[test], *calibration) if calibration else raw[test]
        if progress:
            progress(fold)
    out = df.with_columns(
        pl.Series("fold", assignment), pl.Series("p_raw", raw), pl.Series("p_refusal", calibrated),
        pl.Series("pred_kind", [KINDS[k] if k >= 0 else None for k in kind], dtype=pl.String),
    ).filter(pl.Series(test_mask))
    return out.with_columns((pl.col("p_refusal") >= 0.5).alias("pred_refused"),
                            (pl.col("label") != "answered").alias("gold_refused"))


def summarize(pred: pl.DataFrame, by: str) -> list[dict[str, Any]]:
    """Accuracy, precision, recall per value of `by` (or overall with by="all")."""
    frame = pred.with_columns(pl.lit("all").alias("all")) if by == "all" else pred
    rows = []
    for key, part in sorted(frame.group_by(by), key=lambda kv: str(kv[0][0])):
        gold, guess = part["gold_refused"], part["pred_refused"]
        tp = int((gold & guess).sum())
        fp = int((~gold & guess).sum())
        fn = int((gold & ~guess).sum())
        rows.append({by: key[0], "n": part.height, "refusals": int(gold.sum()),
                     "accuracy": round(float((gold == guess).mean()), 4),
                     "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                     "recall": round(tp / (tp + fn), 4) if tp + fn else None})
    return rows


def report(pred: pl.DataFrame) -> dict[str, Any]:
    truth = pred["gold_refused"].to_numpy()
    score = pred["p_refusal"].to_numpy()
    refused = pred.filter(pl.col("gold_refused") & pl.col("pred_refused"))
    return {
        "overall": summarize(pred, "all"),
        "by_language": summarize(pred, "language"),
        "by_label": summarize(pred, "label"),
        "by_source": summarize(pred, "source"),
        "by_model": summarize(pred, "model"),
        "kind_agreement": round(float((refused["label"] == refused["pred_kind"]).mean()), 4) if refused.height else None,
        "reliability": reliability_table(score, truth),
        "classes": list(CLASSES),
    }
