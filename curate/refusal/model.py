"""Model mode of the refusal detector: a trained fastText classifier with a calibrated probability.

The artefact is two files side by side: `<name>.ftz` (a quantized fastText supervised model over
the four classes answered / hard / deflection / official_line) and `<name>.json` (its card: the
text window, the calibration map, the sha256 of the .ftz, the training data manifest and the
held-out figures). The shipped pair lives in curate/refusal/artefact/ and is rebuilt bit for bit by
`curate refusal train` (see docs/refusal.md).

Replies longer than the window are classified from their head and tail: refusals and official
lines show at the start, and a long answer that ends in a refusal shows at the end.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curate.errors import ConfigError
from curate.identity import stamp
from curate.refusal.config import CLASSES, KINDS, RefusalConfig

ARTEFACT_DIR = Path(__file__).parent / "artefact"
ARTEFACT_NAME = "refusal-detector"
SHIPPED_MODEL = ARTEFACT_DIR / f"{ARTEFACT_NAME}.ftz"
# sha256 of the shipped .ftz; `curate refusal train` must reproduce it (tests/test_refusal_train.py).
SHIPPED_SHA256 = "e163dd9ffd6d1f79e40251c8f48d49f4b4962a3a9ccaf3033542cb84e59589a9"
BUILD_HINT = "build it with `curate refusal train` (docs/refusal.md, 'Model card')"

# Han, kana and Hangul are split into single characters (with word bigrams that gives character
# bigrams, the usual unit for CJK text classification); punctuation becomes its own token.
_SPLIT = r"([\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]|[^\w\s])"


def prepare_texts(texts: pl.Series, head_chars: int, tail_chars: int) -> pl.Series:
    """The model's input: head and tail of each reply, lower-cased and tokenised, one line each."""
    text = pl.col("t").fill_null("").str.strip_chars()
    if tail_chars:
        windowed = pl.when(text.str.len_chars() > head_chars + tail_chars).then(
            pl.concat_str([text.str.slice(0, head_chars), pl.lit(" "), text.str.slice(-tail_chars, tail_chars)])
        ).otherwise(text)
    else:
        windowed = text.str.slice(0, head_chars)
    tokens = windowed.str.to_lowercase().str.replace_all(_SPLIT, " $1 ").str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.DataFrame({"t": texts}, schema={"t": pl.String}).select(tokens)["t"]


@dataclass(frozen=True)
class TrainedDetector:
    """A loaded artefact: the fastText model plus its card."""

    path: Path
    sha256: str
    card: dict[str, Any]
    model: Any  # fasttext.FastText._FastText

    @property
    def version(self) -> str:
        return f"{self.card['name']}@{self.sha256[:12]}"

    @property
    def head_chars(self) -> int:
        return int(self.card["window"]["head_chars"])

    @property
    def tail_chars(self) -> int:
        return int(self.card["window"]["tail_chars"])

    def raw_probabilities(self, prepared: list[str]) -> np.ndarray:
        """Per-class probabilities (rows x CLASSES) straight from fastText."""
        out = np.zeros((len(prepared), len(CLASSES)), dtype=np.float64)
        if not prepared:
            return out
        labels, probs = self.model.predict(prepared, k=len(CLASSES), threshold=0.0)
        column = {f"__label__{c}": i for i, c in enumerate(CLASSES)}
        for row, (labs, ps) in enumerate(zip(labels, probs, strict=True)):
            for lab, p in zip(labs, ps, strict=True):
                out[row, column[lab]] = p
        return out

    def calibrate(self, raw_refusal: np.ndarray) -> np.ndarray:
        cal = self.card["calibration"]
        return np.interp(raw_refusal, cal["x"], cal["y"])


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def load_detector(model_path: str | None = None) -> TrainedDetector:
    """The shipped detector, or a trained one by path; a missing or altered file is a clear error."""
    path = Path(model_path) if model_path else SHIPPED_MODEL
    for needed in (path, card_path(path)):
        if not needed.is_file():
            raise ConfigError(f"{needed}: refusal detector artefact not found; {BUILD_HINT}, or set "
                              f"[stages.refusal] mode = \"rules\"")
    # Keyed by modification time and size too: a retrained artefact is reread (`curate serve`).
    return _load_detector(path, model_path is None, *stamp(path)[1:], *stamp(card_path(path))[1:])


@functools.lru_cache(maxsize=4)
def _load_detector(path: Path, shipped: bool, *_stamps: int) -> TrainedDetector:
    # fasttext is imported here, not at module top, so the rules and judge modes never load it.
    import fasttext

    card_file = card_path(path)
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{card_file}:{exc.lineno}: model card is not valid JSON: {exc.msg}") from exc
    digest = sha256_file(path)
    expected = SHIPPED_SHA256 if shipped else card.get("sha256")
    if digest != expected:
        raise ConfigError(f"{path}: sha256 {digest} does not match the pinned {expected}; {BUILD_HINT}")
    return TrainedDetector(path=path, sha256=digest, card=card, model=fasttext.load_model(str(path)))


def classify_model(df: pl.DataFrame, config: RefusalConfig, response_col: str = "response") -> pl.DataFrame:
    """Verdict columns from the trained detector; refusal_score is the calibrated P(refusal or evasion)."""
    detector = load_detector(config.model_path)
    text = df[response_col]
    empty = text.fill_null("").str.strip_chars().str.len_chars() == 0
    prepared = prepare_texts(text.filter(~empty), detector.head_chars, detector.tail_chars).to_list()
    probs = detector.raw_probabilities(prepared)
    score = detector.calibrate(1.0 - probs[:, 0])
    kind_index = probs[:, 1:].argmax(axis=1) if len(prepared) else np.zeros(0, dtype=int)
    refused = score >= config.threshold
    judged = pl.DataFrame({
        "refused": refused,
        "refusal_kind": [KINDS[k] if r else None for k, r in zip(kind_index, refused, strict=True)],
        "refusal_score": np.round(score, 4),
    }, schema={"refused": pl.Boolean, "refusal_kind": pl.String, "refusal_score": pl.Float64})
    index = pl.Series("_i", range(df.height))
    judged = judged.with_columns(index.filter(~empty))
    full = pl.DataFrame({"_i": index}).join(judged, on="_i", how="left").sort("_i").drop("_i")
    return pl.concat([df, full.with_columns(
        pl.lit("model").alias("detector"), pl.lit(None, dtype=pl.String).alias("judge_error"),
    )], how="horizontal")
