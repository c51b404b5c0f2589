"""Embed modes of the refusal detector: an EmbeddingGemma-300M reply embedding with a logistic head,
stacked with the fastText model.

- `model+embed`: the fastText model decides; rows whose calibrated score is in
  [uncertain_low, uncertain_high] get the stacked score instead (only those are embedded, so the
  clear cases keep model mode's speed).
- `embed`: every reply gets the stacked score.

The stack: a logistic head on the reply's embedding (head and tail within 128 tokens, prompt
`Classification`, normalized) gives P(class); a second logistic model on the log-probabilities of
fastText and of the head gives the final P(class); refusal_score is the isotonic-calibrated
1 - P(answered). The head artefact (`refusal-embed-head.json`: weights, calibration, data manifest)
is shipped next to the fastText model, pinned by sha256, and rebuilt by
`curate refusal train --embed-head` (curate/refusal/train_embed.py). EmbeddingGemma itself is not
shipped: scripts/fetch-embeddinggemma.py assembles it (setup does).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.errors import ConfigError
from curate.identity import stamp
from curate.refusal.config import CLASSES, KINDS, RefusalConfig
from curate.refusal.model import ARTEFACT_DIR, classify_model, load_detector, prepare_texts, sha256_file
from curate.text.embeddings import GEMMA_ALIAS, embeddinggemma_path, load_model, resolve_model

EMBED_HEAD_NAME = "refusal-embed-head"
SHIPPED_EMBED_HEAD = ARTEFACT_DIR / f"{EMBED_HEAD_NAME}.json"
# sha256 of the shipped head; `curate refusal train --embed-head` rebuilds it (docs/refusal.md).
SHIPPED_EMBED_HEAD_SHA256 = "0000000000000000000000000000000000000000000000000000000000000000"
EMBED_BUILD_HINT = "build it with `curate refusal train --embed-head` (docs/refusal.md, 'Embed modes')"
EMBEDDING_MODEL = "google/embeddinggemma-300m"
FETCH_HINT = "assemble it with `python3 scripts/fetch-embeddinggemma.py` (scripts/setup.sh does)"

MAX_SEQ_LENGTH = 128
PROMPT_NAME = "Classification"
# Content tokens kept from a long reply: head and tail (the prompt and special tokens take the rest).
HEAD_TOKENS = 88
TAIL_TOKENS = 30
CLIP = 1e-6  # log-probabilities of the stacker's inputs are clipped here


def window_key(model_key: str) -> str:
    """Identity of the embeddings: the weights and the window (for the embedding cache)."""
    return f"{model_key}@seq{MAX_SEQ_LENGTH}:h{HEAD_TOKENS}t{TAIL_TOKENS}"


def resolve_embedder():
    """EmbeddingGemma's local folder, or a ConfigError naming the model and how to assemble it."""
    path = embeddinggemma_path()
    if not (path / "modules.json").is_file():
        raise ConfigError(f"refusal modes 'embed' and 'model+embed' need EmbeddingGemma-300M ({EMBEDDING_MODEL}), "
                          f"not assembled at {path}; {FETCH_HINT}, or set [stages.refusal] mode = \"model\"")
    return resolve_model(GEMMA_ALIAS, hint=FETCH_HINT, setting="[stages.refusal] embed modes")


def load_embedder():
    """(sentence-transformers model, embedding key) for the embed modes."""
    resolved = resolve_embedder()
    try:
        model = load_model(str(resolved.path), max_seq_length=MAX_SEQ_LENGTH)
    except ConfigError:
        raise
    except Exception as exc:  # an incomplete or corrupt folder: reassembling is the fix
        raise ConfigError(f"EmbeddingGemma-300M at {resolved.path} could not be loaded ({type(exc).__name__}: {exc}); "
                          f"{FETCH_HINT}") from exc
    return model, window_key(resolved.key)


def window_texts(texts: Sequence[str], tokenizer, head: int = HEAD_TOKENS, tail: int = TAIL_TOKENS) -> list[str]:
    """Each text, or its first `head` and last `tail` tokens when it is longer than both."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = []
    for text, toks in zip(texts, ids, strict=True):
        out.append(text if len(toks) <= head + tail else tokenizer.decode(toks[:head]) + " … " + tokenizer.decode(toks[-tail:]))
    return out


def encode_replies(texts: Sequence[str], model, batch_size: int = 16) -> np.ndarray:
    """Normalized embeddings of the replies' windows (no cache: the detector's inference path)."""
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    return model.encode(window_texts(texts, model.tokenizer), batch_size=batch_size, prompt_name=PROMPT_NAME,
                        normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _linear(layer: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """P(class) over CLASSES of a stored multinomial logistic layer (classes it never saw get 0)."""
    probs = _softmax(x @ np.asarray(layer["coef"]).T + np.asarray(layer["intercept"]))
    out = np.zeros((len(x), len(CLASSES)))
    out[:, [CLASSES.index(c) for c in layer["classes"]]] = probs
    return out


def stack_inputs(fast_probs: np.ndarray, head_probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.hstack([fast_probs, head_probs]), CLIP, 1.0))


@dataclass(frozen=True)
class EmbedHead:
    """A loaded head artefact: the head and stacker weights and the stack's calibration."""

    path: Path
    sha256: str
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return f"{self.card['name']}@{self.sha256[:12]}"

    def head_probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return _linear(self.card["head"], embeddings)

    def stack_probabilities(self, fast_probs: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return _linear(self.card["stack"], stack_inputs(fast_probs, self.head_probabilities(embeddings)))

    def calibrate(self, raw_refusal: np.ndarray) -> np.ndarray:
        cal = self.card["calibration"]
        return np.interp(raw_refusal, cal["x"], cal["y"])


def load_embed_head(path: str | None = None) -> EmbedHead:
    """The shipped head, or a trained one by path; a missing or altered file is a clear error."""
    head_path = Path(path) if path else SHIPPED_EMBED_HEAD
    if not head_path.is_file():
        raise ConfigError(f"{head_path}: refusal embed head not found; {EMBED_BUILD_HINT}, or set "
                          f"[stages.refusal] mode = \"model\"")
    return _load_embed_head(head_path, path is None, *stamp(head_path)[1:])


@functools.lru_cache(maxsize=4)
def _load_embed_head(path: Path, shipped: bool, *_stamps: int) -> EmbedHead:
    digest = sha256_file(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: embed head is not valid JSON: {exc.msg}") from exc
    if shipped and digest != SHIPPED_EMBED_HEAD_SHA256:
        raise ConfigError(f"{path}: sha256 {digest} does not match the pinned {SHIPPED_EMBED_HEAD_SHA256}; {EMBED_BUILD_HINT}")
    for key in ("name", "head", "stack", "calibration", "embedding"):
        if key not in card:
            raise ConfigError(f"{path}: embed head has no '{key}'; {EMBED_BUILD_HINT}")
    return EmbedHead(path=path, sha256=digest, card=card)


def stacked_probabilities(texts: Sequence[str], fast_probs: np.ndarray, head: EmbedHead) -> np.ndarray:
    """The stack's P(class) for these replies (final answers, non-empty), given fastText's P(class)."""
    if not texts:
        return np.zeros((0, len(CLASSES)))
    model, key = load_embedder()
    if key != head.card["embedding"]["key"]:
        raise ConfigError(f"{head.path}: trained on embeddings {head.card['embedding']['key']}, but the EmbeddingGemma "
                          f"found gives {key}; reassemble it ({FETCH_HINT}) or retrain the head ({EMBED_BUILD_HINT})")
    return head.stack_probabilities(fast_probs, encode_replies(texts, model))


def classify_embed(df: pl.DataFrame, config: RefusalConfig, response_col: str = "response") -> pl.DataFrame:
    """Verdict columns in the embed modes: model mode's, with the stacked score for every reply
    (`embed`) or for those whose model score is in the uncertain band (`model+embed`)."""
    resolve_embedder()  # a missing EmbeddingGemma is an error even when no row needs it this time
    first = classify_model(df, config, response_col)
    score = first["refusal_score"]
    pick = score.is_not_null() if config.mode == "embed" else score.is_between(config.uncertain_low, config.uncertain_high)
    rows = np.flatnonzero(pick.fill_null(False).to_numpy())
    head = load_embed_head(config.embed_head_path)
    detector = load_detector(config.model_path)
    if head.card["fasttext_sha256"] != detector.sha256:
        raise ConfigError(f"{head.path}: stacked on the fastText detector {head.card['fasttext_sha256'][:12]}, not on "
                          f"{detector.path} ({detector.sha256[:12]}); {EMBED_BUILD_HINT}")
    if not len(rows):
        return first
    texts = first[response_col].gather(rows).to_list()
    fast = detector.raw_probabilities(prepare_texts(pl.Series(texts, dtype=pl.String), detector.head_chars, detector.tail_chars).to_list())
    probs = stacked_probabilities(texts, fast, head)
    stacked = head.calibrate(1.0 - probs[:, 0])
    refused, kinds = first["refused"].to_list(), first["refusal_kind"].to_list()
    scores, used = score.to_list(), first["detector"].to_list()
    for i, row in enumerate(rows):
        refused[row] = bool(stacked[i] >= config.threshold)
        kinds[row] = KINDS[int(probs[i, 1:].argmax())] if refused[row] else None
        scores[row] = round(float(stacked[i]), 4)
        used[row] = "embed"
    return first.with_columns(pl.Series("refused", refused, dtype=pl.Boolean), pl.Series("refusal_kind", kinds, dtype=pl.String),
                              pl.Series("refusal_score", scores, dtype=pl.Float64), pl.Series("detector", used, dtype=pl.String))
