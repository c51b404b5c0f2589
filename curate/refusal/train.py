"""Train the refusal detector deterministically: fastText, one thread, fixed seed, fixed row order.

`train_detector` writes `<name>.ftz` and `<name>.json` (the card: parameters, window, calibration,
sha256, data manifest, out-of-fold figures). The probability of "refusal or evasion" is
1 - P(answered) from fastText, mapped through an isotonic calibration fit on out-of-fold
predictions, folds grouped by model (a new model's replies are what the detector meets in use).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.refusal.config import CLASSES, KINDS
from curate.refusal.data import check_training_frame, sha256_bytes
from curate.refusal.model import ARTEFACT_NAME, TrainedDetector, card_path, prepare_texts, sha256_file


class TrainParams(BaseModel):
    """Everything that decides the artefact's bytes (with the data)."""

    model_config = ConfigDict(extra="forbid")

    head_chars: int = Field(default=1000, ge=100, description="Replies longer than head+tail are classified from head and tail.")
    tail_chars: int = Field(default=300, ge=0)
    epoch: int = 10
    lr: float = 0.5
    dim: int = 32
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int = 50_000
    seed: int = 1
    quantize_cutoff: int = Field(default=100_000, description="Rows kept when quantizing (words plus n-gram buckets).")
    calibration_folds: int = Field(default=5, ge=2, description="Model-grouped folds for the out-of-fold calibration.")


def _training_lines(df: pl.DataFrame, params: TrainParams) -> list[str]:
    prepared = prepare_texts(df["text"], params.head_chars, params.tail_chars)
    lines = [f"__label__{label} {text}" for label, text in zip(df["label"], prepared, strict=True) if text]
    # A fixed, seeded order: SGD sees models and labels interleaved, and the bytes of the file
    # (so the model) depend only on the data and the seed.
    order = np.random.default_rng(params.seed).permutation(len(lines))
    return [lines[i] for i in order]


def fit(df: pl.DataFrame, params: TrainParams, workdir: Path, name: str = ARTEFACT_NAME) -> Path:
    """Train and quantize one fastText model on `df`; returns the .ftz path."""
    # fasttext is imported here so that loading this module for the rules or judge modes stays light.
    import fasttext

    workdir.mkdir(parents=True, exist_ok=True)
    train_file = workdir / f"{name}.train.txt"
    train_file.write_text("\n".join(_training_lines(df, params)) + "\n", encoding="utf-8")
    lr = params.lr
    while True:
        try:
            model = fasttext.train_supervised(
                str(train_file), epoch=params.epoch, lr=lr, dim=params.dim, wordNgrams=params.word_ngrams,
                minCount=params.min_count, bucket=params.bucket, seed=params.seed, thread=1, verbose=0, loss="softmax",
            )
            break
        except RuntimeError as exc:
            # fastText's SGD occasionally diverges ("Encountered NaN") for one data/lr pair; halving
            # the rate is deterministic, so a rebuild still gives the same bytes.
            if "NaN" not in str(exc) or lr < 0.01:
                raise
            lr /= 2
    model.quantize(input=str(train_file), qnorm=True, retrain=False, cutoff=params.quantize_cutoff, dsub=2, thread=1, verbose=0)
    out = workdir / f"{name}.ftz"
    model.save_model(str(out))
    train_file.unlink()
    return out


def class_probabilities(model_path: Path, df: pl.DataFrame, params: TrainParams) -> np.ndarray:
    import fasttext

    detector = TrainedDetector(path=model_path, sha256="", card={"window": {"head_chars": params.head_chars, "tail_chars": params.tail_chars}},
                               model=fasttext.load_model(str(model_path)))
    probs = detector.raw_probabilities(prepare_texts(df["text"], params.head_chars, params.tail_chars).to_list())
    return probs


def group_folds(groups: pl.Series, k: int, seed: int) -> np.ndarray:
    """Fold number per row; every group (model or question) falls in exactly one fold."""
    names = sorted(set(groups.to_list()))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[j]: i % k for i, j in enumerate(order)}
    return np.array([fold_of[g] for g in groups.to_list()])


def held_out_predictions(df: pl.DataFrame, params: TrainParams, folds: np.ndarray, workdir: Path) -> np.ndarray:
    """Per-class probabilities for every row from a model that never saw its fold."""
    out = np.zeros((df.height, len(CLASSES)))
    for fold in sorted(set(folds.tolist())):
        test = folds == fold
        path = fit(df.filter(pl.Series(~test)), params, workdir / f"fold{fold}")
        out[test] = class_probabilities(path, df.filter(pl.Series(test)), params)
    return out


def isotonic(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators fit of y (0/1) on x; returns the knots (block mean x, block mean y).

    Applied with np.interp, so the map is monotone, piecewise linear and deterministic.
    """
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order].astype(float)
    blocks: list[list[float]] = []  # [sum_x, sum_y, n]
    for xi, yi in zip(xs, ys, strict=True):
        blocks.append([xi, yi, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            sx, sy, n = blocks.pop()
            blocks[-1][0] += sx
            blocks[-1][1] += sy
            blocks[-1][2] += n
    knots_x = [round(b[0] / b[2], 6) for b in blocks]
    knots_y = [round(b[1] / b[2], 6) for b in blocks]
    # Anchor the ends so scores outside the seen range stay in [0, 1] and monotone.
    return [0.0, *knots_x, 1.0], [knots_y[0], *knots_y, knots_y[-1]]


def reliability_table(score: np.ndarray, truth: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    rows = []
    edges = np.linspace(0, 1, bins + 1)
    for i in range(bins):
        inside = (score >= edges[i]) & ((score < edges[i + 1]) if i < bins - 1 else (score <= 1))
        if inside.any():
            rows.append({"bin": f"{edges[i]:.1f}-{edges[i + 1]:.1f}", "n": int(inside.sum()),
                         "mean_predicted": round(float(score[inside].mean()), 3), "observed_rate": round(float(truth[inside].mean()), 3)})
    return rows


def train_detector(
    df: pl.DataFrame, manifest: list[dict[str, Any]], out_dir: Path, params: TrainParams | None = None,
    name: str = ARTEFACT_NAME,
) -> dict[str, Any]:
    """Train, calibrate and write `<out_dir>/<name>.ftz` + `.json` atomically; returns the card."""
    params = params or TrainParams()
    df = check_training_frame(df, "training data")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".train-") as tmp:
        work = Path(tmp)
        folds = group_folds(df["model"], params.calibration_folds, params.seed)
        probs = held_out_predictions(df, params, folds, work / "cv")
        raw = 1.0 - probs[:, 0]
        truth = (df["label"] != "answered").to_numpy()
        cal_x, cal_y = isotonic(raw, truth)
        calibrated = np.interp(raw, cal_x, cal_y)
        model_file = fit(df, params, work / "final", name)
        card = {
            "name": name,
            "classes": list(CLASSES),
            "kinds": list(KINDS),
            "sha256": sha256_file(model_file),
            "size_bytes": model_file.stat().st_size,
            "params": params.model_dump(),
            "window": {"head_chars": params.head_chars, "tail_chars": params.tail_chars},
            "calibration": {"method": "isotonic on out-of-fold P(refusal or evasion), folds grouped by model",
                            "x": cal_x, "y": cal_y},
            "data": {"files": manifest, "rows": df.height,
                     "rows_by_source_label": {f"{s}/{lab}": n for s, lab, n in
                                              df.group_by("source", "label").len().sort("source", "label").iter_rows()},
                     "rows_sha256": sha256_bytes("\n".join(_training_lines(df, params)).encode("utf-8"))},
            "out_of_fold": {
                "accuracy_at_0.5": round(float(((calibrated >= 0.5) == truth).mean()), 4),
                "reliability": reliability_table(calibrated, truth),
            },
        }
        card_tmp = work / "final" / f"{name}.json"
        card_tmp.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        # The card goes last: a reader never finds a card that names a model file not yet there.
        os.replace(model_file, out_dir / f"{name}.ftz")
        os.replace(card_tmp, card_path(out_dir / f"{name}.ftz"))
    return card
