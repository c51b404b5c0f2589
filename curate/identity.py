"""What a file or folder is, by content: for stage fingerprints and for loader caches.

A fingerprint hashes the bytes of small files (templates, rules, stoplists). A large file or a
model folder is identified by its file names, sizes and modification times plus the bytes of its
small config files: hashing gigabytes of weights on every run would cost more than the stage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from curate.errors import ConfigError

SMALL_FILE = 16 << 20  # bytes; larger files are identified by size and mtime
_CONFIG_SUFFIXES = {".json", ".toml", ".txt", ".j2", ".yaml", ".yml", ".model"}


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"


def path_identity(path: str | Path) -> str:
    """A hash that changes when the file's or folder's contents change."""
    path = Path(path).expanduser()
    if path.is_file():
        return _file_hash(path) if path.stat().st_size <= SMALL_FILE else hashlib.sha256(_stat_key(path).encode()).hexdigest()
    if not path.is_dir():
        raise ConfigError(f"{path}: file not found")
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        small = p.stat().st_size <= SMALL_FILE and (p.suffix in _CONFIG_SUFFIXES or p.stat().st_size <= 1 << 20)
        h.update((_file_hash(p) if small else _stat_key(p)).encode())
    return h.hexdigest()


def stamp(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, mtime_ns, size): a cache key that changes when the file is edited."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size
