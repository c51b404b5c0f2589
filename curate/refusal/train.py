"""Train the refusal detector deterministically: fastText, one thread, fixed seed, fixed row order.

`train_detector` writes `<name>.ftz` and `<name>.json` (the card: parameters, window, calibration,
sha256, data manifest, out-of-fold figures). The probability of "refusal or evasion" is
1 - P(answered) from fastText, mapped through an isotonic calibration fit on out-of-fold
predictions, folds grouped by model (a new model's replies are what the detector meets in use).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.errors import CurateError
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


# fastText (fasttext-numpy2 0.10.4) is deterministic only in a fresh process: a second training in
# the same process gave other bytes, or stopped with "Encountered NaN", in 4 of 8 runs (measured,
# docs/refusal.md). So every training runs in its own interpreter that imports nothing but fasttext,
# with a fixed hash seed.
_FIT_WORKER = """
import json, sys
import fasttext
train_file, out_file, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = fasttext.train_supervised(train_file, thread=1, verbose=0, loss="softmax", **args["train"])
model.quantize(input=train_file, qnorm=True, retrain=False, dsub=2, thread=1, verbose=0, **args["quantize"])
model.save_model(out_file)
"""


def fit(df: pl.DataFrame, params: TrainParams, workdir: Path, name: str = ARTEFACT_NAME) -> Path:
    """Train and quantize one fastText model on `df` (in a fresh process); returns the .ftz path."""
    workdir.mkdir(parents=True, exist_ok=True)
    train_file = workdir / f"{name}.train.txt"
    train_file.write_text("\n".join(_training_lines(df, params)) + "\n", encoding="utf-8")
    out = workdir / f"{name}.ftz"
    args = {"train": {"epoch": params.epoch, "lr": params.lr, "dim": params.dim, "wordNgrams": params.word_ngrams,
                      "minCount": params.min_count, "bucket": params.bucket, "seed": params.seed},
            "quantize": {"cutoff": params.quantize_cutoff}}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-c", _FIT_WORKER, str(train_file), str(out), json.dumps(args)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise CurateError(f"fastText training failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    train_file.unlink()
    return out


def fit_all(jobs: list[tuple[pl.DataFrame, Path, str]], params: TrainParams, workers: int | None = None) -> list[Path]:
    """`fit` each (frame, workdir, name), up to `workers` at once (default: one per CPU); paths in job order.

    Every fit is single-threaded in its own process with its own seed and files, so running several
    side by side gives the same bytes as running them one after another (the rebuild test checks it);
    only the wall time changes.
    """
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    if workers == 1:
        return [fit(frame, params, workdir, name) for frame, workdir, name in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refusal-fit") as pool:
        futures = [pool.submit(fit, frame, params, workdir, name) for frame, workdir, name in jobs]
        return [future.result() for future in futures]


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


def held_out_predictions(df: pl.DataFrame, params: TrainParams, folds: np.ndarray, fold_models: list[Path]) -> np.ndarray:
    """Per-class probabilities for every row from a model that never saw its fold.

    `fold_models[i]` is the model fit without fold i (see `fold_jobs`).
    """
    out = np.zeros((df.height, len(CLASSES)))
    for fold, path in zip(sorted(set(folds.tolist())), fold_models, strict=True):
        test = folds == fold
        out[test] = class_probabilities(path, df.filter(pl.Series(test)), params)
    return out


def fold_jobs(df: pl.DataFrame, folds: np.ndarray, workdir: Path,
              fold_ids: list[int] | None = None) -> list[tuple[pl.DataFrame, Path, str]]:
    """One `fit_all` job per fold (every fold, or those in `fold_ids`): the rows outside it."""
    ids = sorted(set(folds.tolist())) if fold_ids is None else fold_ids
    return [(df.filter(pl.Series(folds != fold)), workdir / f"fold{fold}", ARTEFACT_NAME) for fold in ids]


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


def build_card(
    df: pl.DataFrame, manifest: list[dict[str, Any]], params: TrainParams, name: str, model_file: Path, raw: np.ndarray,
) -> dict[str, Any]:
    """The model card; calibration and figures use real replies only (opening views train, never score)."""
    truth = (df["label"] != "answered").to_numpy()
    real = ~df["source"].str.ends_with("/opening").to_numpy()
    cal_x, cal_y = isotonic(raw[real], truth[real])
    calibrated = np.interp(raw[real], cal_x, cal_y)
    return {
        "name": name,
        "classes": list(CLASSES),
        "kinds": list(KINDS),
        "sha256": sha256_file(model_file),
        "size_bytes": model_file.stat().st_size,
        "params": params.model_dump(),
        "window": {"head_chars": params.head_chars, "tail_chars": params.tail_chars},
        "calibration": {"method": "isotonic on out-of-fold P(refusal or evasion) of real replies, folds grouped by model",
                        "x": cal_x, "y": cal_y},
        "data": {"files": manifest, "rows": df.height,
                 "rows_by_source_label": {f"{s}/{lab}": n for s, lab, n in
                                          df.group_by("source", "label").len().sort("source", "label").iter_rows()},
                 "rows_sha256": sha256_bytes("\n".join(_training_lines(df, params)).encode("utf-8"))},
        "out_of_fold": {
            "replies": int(real.sum()),
            "accuracy_at_0.5": round(float(((calibrated >= 0.5) == truth[real]).mean()), 4),
            "reliability": reliability_table(calibrated, truth[real]),
        },
    }


def train_detector(
    df: pl.DataFrame, manifest: list[dict[str, Any]], out_dir: Path, params: TrainParams | None = None,
    name: str = ARTEFACT_NAME, held_out_out: Path | None = None, workers: int | None = None,
) -> dict[str, Any]:
    """Train, calibrate and write `<out_dir>/<name>.ftz` + `.json` atomically; returns the card.

    `workers` fits run at once (default: one per CPU); the bytes do not depend on it.

    The calibration's out-of-fold predictions are held out by model (folds grouped by model); with
    `held_out_out` they are also written as Parquet (for `curate refusal report`).
    """
    params = params or TrainParams()
    df = check_training_frame(df, "training data")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".train-") as tmp:
        work = Path(tmp)
        folds = group_folds(df["model"], params.calibration_folds, params.seed)
        # The fold models and the final one are independent fits: run them side by side.
        *fold_models, model_file = fit_all([*fold_jobs(df, folds, work / "cv"), (df, work / "final", name)],
                                          params, workers)
        probs = held_out_predictions(df, params, folds, fold_models)
        raw = 1.0 - probs[:, 0]
        card = build_card(df, manifest, params, name, model_file, raw)
        if held_out_out is not None:
            calibrated = np.interp(raw, card["calibration"]["x"], card["calibration"]["y"])
            df.with_columns(
                pl.Series("fold", folds), pl.Series("p_raw", raw), pl.Series("p_refusal", calibrated),
                pl.Series("pred_kind", [KINDS[k] for k in probs[:, 1:].argmax(axis=1)], dtype=pl.String),
                pl.Series("pred_refused", calibrated >= 0.5), (pl.col("label") != "answered").alias("gold_refused"),
            ).write_parquet(held_out_out)
        card_tmp = work / "final" / f"{name}.json"
        card_tmp.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        # The card goes last: a reader never finds a card that names a model file not yet there.
        os.replace(model_file, out_dir / f"{name}.ftz")
        os.replace(card_tmp, card_path(out_dir / f"{name}.ftz"))
    return card
