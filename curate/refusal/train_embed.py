"""Train the embed modes' head deterministically (`curate refusal train --embed-head`).

Rows: the real SpeechMap replies of the training data plus a seeded sample of their opening views
(short answered texts; without them a head trained on essays calls short answers refusals). Steps:

1. fastText's out-of-fold P(class) for every row: the shipped recipe (TrainParams), 5 folds grouped
   by model, each fit in a fresh process (curate/refusal/train.py), so the stacker learns how far to
   trust fastText on replies it has not seen.
2. EmbeddingGemma embeddings of every row through an on-disk cache keyed by model, window and text:
   an interrupted run resumes where it stopped.
3. The head: multinomial logistic regression on the embeddings (C fixed beforehand, not searched);
   its inner out-of-fold P(class) (3 folds grouped by model) feed
4. the stacker: logistic regression on the log-probabilities of fastText and the head;
5. an isotonic map of the stack's 1 - P(answered) on the real replies (the stacker's inputs are
   out-of-fold, so its own in-sample scores are close to held-out ones).

Weights are rounded to 6 decimals and written as JSON with the data manifest; the same data,
embeddings and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.errors import CurateError
from curate.refusal.config import CLASSES
from curate.refusal.data import check_training_frame, sha256_bytes
from curate.refusal.reasoning import final_answers
from curate.refusal.embed import EMBED_HEAD_NAME, EMBEDDING_MODEL, HEAD_TOKENS, MAX_SEQ_LENGTH, PROMPT_NAME, TAIL_TOKENS, load_embedder, stack_inputs, window_texts
from curate.refusal.train import TrainParams, group_folds, held_out_predictions, isotonic, reliability_table


class EmbedHeadParams(BaseModel):
    """Everything that decides the head's bytes (with the data and the embeddings)."""

    model_config = ConfigDict(extra="forbid")

    head_c: float = Field(default=10.0, gt=0, description="Inverse L2 strength of the head (unit-norm 768-d inputs).")
    stack_c: float = Field(default=1.0, gt=0, description="Inverse L2 strength of the stacker.")
    views: int = Field(default=-1, ge=-1, description="Opening views in training (seeded sample); -1: all.")
    seed: int = 1
    inner_folds: int = Field(default=3, ge=2)
    fasttext_folds: int = Field(default=5, ge=2)
    max_iter: int = 2000


def view_order(texts: list[str], seed: int) -> np.ndarray:
    """A seeded order of opening views that depends only on their texts (not on the frame's row
    order), so scripts/refusal_embed_cache.py --views embeds them in the order training takes them."""
    keys = [hashlib.sha256(f"{seed}\x1f{t}".encode("utf-8")).digest() for t in texts]
    return np.array(sorted(range(len(texts)), key=keys.__getitem__), dtype=np.int64)


def head_rows(df: pl.DataFrame, params: EmbedHeadParams) -> pl.DataFrame:
    """The head's training rows, cut to the final answer as the detector reads replies: every real
    SpeechMap reply, and the first `views` SpeechMap opening views in `view_order` (all with -1)."""
    df = df.with_row_index("_row").with_columns(final_answers(df["text"]).alias("text"))
    df = df.filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars().str.len_chars() > 0))
    views = df.filter(pl.col("source") == "speechmap/opening")
    order = view_order(views["text"].to_list(), params.seed)
    take = views["_row"].gather(order if params.views < 0 else order[: params.views])
    return df.filter((pl.col("source") == "speechmap") | pl.col("_row").is_in(take.implode()))


def _logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    # scikit-learn is heavy; only training needs it (inference uses the stored weights with numpy).
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=max_iter).fit(x, y)


def _probs(model, x: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), len(CLASSES)))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _layer(model) -> dict[str, Any]:
    return {"classes": [CLASSES[c] for c in model.classes_],
            "coef": np.round(model.coef_, 6).tolist(), "intercept": np.round(model.intercept_, 6).tolist()}


def embed_rows(texts: list[str], cache_dir: Path | None, progress=None, chunk: int = 256) -> tuple[np.ndarray, str]:
    """Embeddings of the rows' windows, read from / added to the cache in chunks (resumable)."""
    # The dedupe stage's cache is the project's one embedding cache (keyed by model, prompt, text).
    from curate.stages.dedupe.cache import EmbeddingCache
    from curate.stages.dedupe.embed import embed_texts

    model, key = load_embedder()
    windows = window_texts(texts, model.tokenizer)
    cache = EmbeddingCache(cache_dir, key) if cache_dir else None
    parts = []
    for start in range(0, len(windows), chunk):
        emb, _ = embed_texts(windows[start : start + chunk], model, model_key=key, cache=cache, batch_size=16, prompt_name=PROMPT_NAME)
        parts.append(emb)
        if progress:
            progress(min(start + chunk, len(windows)), len(windows))
    return (np.vstack(parts) if parts else np.zeros((0, 768), np.float32)), key


def fasttext_out_of_fold(df: pl.DataFrame, params: TrainParams, folds: int, cache_dir: Path | None = None) -> np.ndarray:
    """fastText's P(class) for every row of `df` from models that never saw the row's model (folds
    grouped by model). Kept in `cache_dir` under a key of the data and recipe: the fits take minutes."""
    key = sha256_bytes(json.dumps([params.model_dump(), folds, df.select("source", "model", "question_id", "language", "text", "label").rows()],
                                  ensure_ascii=False).encode("utf-8"))
    cached = cache_dir / f"fasttext-oof-{key[:24]}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    with tempfile.TemporaryDirectory(prefix="refusal-embed-") as tmp:
        probs = held_out_predictions(df, params, group_folds(df["model"], folds, params.seed), Path(tmp))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.tmp.npy")
        np.save(partial, probs)
        os.replace(partial, cached)
    return probs


def train_embed_head(
    df: pl.DataFrame, manifest: list[dict[str, Any]], out_file: Path, *, fasttext_sha256: str,
    params: EmbedHeadParams | None = None, cache_dir: Path | None = None, progress=None,
    fasttext_params: TrainParams | None = None,
) -> dict[str, Any]:
    """Train head and stacker on `df` (the fastText detector's training frame) and write `out_file`
    atomically; returns the card. `fasttext_sha256` names the detector the stack sits on, and
    `fasttext_params` its recipe (default: the shipped one)."""
    params = params or EmbedHeadParams()
    ft_params = fasttext_params or TrainParams()
    df = check_training_frame(df, "training data")
    rows = head_rows(df, params)
    if rows.filter(pl.col("source") == "speechmap").height == 0:
        raise CurateError("no SpeechMap replies in the training data: the embed head trains on them")
    y = np.array([CLASSES.index(label) for label in rows["label"]])
    fast = fasttext_out_of_fold(df, ft_params, params.fasttext_folds, cache_dir)[rows["_row"].to_numpy()]
    emb, key = embed_rows(rows["text"].to_list(), cache_dir, progress)
    inner = group_folds(rows["model"], params.inner_folds, params.seed + 4)
    inner_oof = np.zeros((len(y), len(CLASSES)))
    for k in range(params.inner_folds):
        train, test = inner != k, inner == k
        inner_oof[test] = _probs(_logreg(emb[train], y[train], params.head_c, params.max_iter), emb[test])
    head = _logreg(emb, y, params.head_c, params.max_iter)
    z = stack_inputs(fast, inner_oof)
    stacker = _logreg(z, y, params.stack_c, params.max_iter)
    raw = 1.0 - _probs(stacker, z)[:, 0]
    real = (rows["source"] == "speechmap").to_numpy()
    truth = y != 0
    cal_x, cal_y = isotonic(raw[real], truth[real])
    calibrated = np.interp(raw[real], cal_x, cal_y)
    card = {
        "name": EMBED_HEAD_NAME,
        "classes": list(CLASSES),
        "embedding": {"model": EMBEDDING_MODEL, "key": key, "max_seq_length": MAX_SEQ_LENGTH, "prompt_name": PROMPT_NAME,
                      "head_tokens": HEAD_TOKENS, "tail_tokens": TAIL_TOKENS},
        "fasttext_sha256": fasttext_sha256,
        "params": params.model_dump(),
        "fasttext_params": ft_params.model_dump(),
        "head": _layer(head),
        "stack": _layer(stacker),
        "calibration": {"method": "isotonic on the stack's 1 - P(answered) of the real replies (stacker inputs out-of-fold)",
                        "x": cal_x, "y": cal_y},
        "data": {"files": manifest, "rows": rows.height,
                 "rows_by_source_label": {f"{s}/{lab}": n for s, lab, n in
                                          rows.group_by("source", "label").len().sort("source", "label").iter_rows()},
                 "rows_sha256": sha256_bytes("\n".join(f"{lab}\t{t}" for lab, t in zip(rows["label"], rows["text"], strict=True)).encode())},
        "in_sample": {"replies": int(real.sum()), "accuracy_at_0.5": round(float(((calibrated >= 0.5) == truth[real]).mean()), 4),
                      "reliability": reliability_table(calibrated, truth[real])},
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = out_file.with_name(f".{out_file.name}.tmp")
    tmp_file.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp_file, out_file)
    return card
