"""The on-disk embedding cache: shards of vectors keyed by sha256(model key, prompt, text).

One folder per model; each write adds a shard pair `<stem>.emb.npy` (float32, one normalized
row per text) and `<stem>.keys.npy` (32-byte keys as uint8 rows). The keys file is written
last, so a shard without one is ignored: a crashed run never leaves a half-read shard. Shards
never change once written, so several processes (Dask workers) add to one cache at once.

Reads stay cheap as the cache grows:
- each process keeps an index of the shards it has read (key -> shard, row) and on a lookup
  reads only key files it has not seen, instead of every key file every time;
- when a folder holds more than `compact_above` small shards, the writer that notices merges
  them into shards of up to `shard_rows` rows (one writer at a time, under a lock file). A reader
  whose shard was merged away meanwhile reloads its index and retries.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from curate.workspace import atomic_write_bytes

KEY_BYTES = 32
LOCK_STALE_S = 600


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _key_frame(path: Path, stem: str) -> pl.DataFrame:
    rows = np.load(path)
    blob = rows.tobytes()
    keys = [blob[i : i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]
    return pl.DataFrame({"key": keys, "stem": stem}, schema={"key": pl.Binary, "stem": pl.String}).with_row_index("offset")


class _Index:
    """Key -> (shard stem, row) over the shards one process has read."""

    def __init__(self) -> None:
        self.parts: dict[str, pl.DataFrame] = {}
        self.frame: pl.DataFrame | None = None

    def sync(self, directory: Path, stems: list[str]) -> None:
        """Read key files of new shards, forget shards that are gone."""
        changed = False
        for stem in [s for s in self.parts if s not in set(stems)]:
            del self.parts[stem]
            changed = True
        for stem in stems:
            if stem not in self.parts:
                try:
                    self.parts[stem] = _key_frame(directory / f"{stem}.keys.npy", stem)
                except FileNotFoundError:  # merged away between listing and reading
                    continue
                changed = True
        if changed or self.frame is None:
            self.frame = (pl.concat([self.parts[s] for s in sorted(self.parts)]).unique("key", keep="first")
                          if self.parts else None)

    def add(self, stem: str, frame: pl.DataFrame) -> None:
        self.parts[stem] = frame
        self.frame = frame if self.frame is None else pl.concat([self.frame, frame]).unique("key", keep="first")


class EmbeddingCache:
    """Embeddings on disk, keyed by sha256(model key + prompt + text)."""

    # One index per folder per process: Dask workers and repeated stage runs reuse it.
    _indexes: ClassVar[dict[Path, _Index]] = {}

    def __init__(self, root: str | Path, model_key: str, *, compact_above: int = 32, shard_rows: int = 100_000):
        self.dir = Path(root) / hashlib.sha256(model_key.encode()).hexdigest()[:16]
        self.compact_above = compact_above
        self.shard_rows = shard_rows

    def _stems(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[: -len(".keys.npy")] for p in self.dir.glob("*.keys.npy"))

    def _index(self) -> _Index:
        index = self._indexes.setdefault(self.dir.resolve(), _Index())
        index.sync(self.dir, self._stems())
        return index

    def shard_count(self) -> int:
        return len(self._stems())

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, embeddings of the found keys in order) for `keys`."""
        for attempt in range(3):
            try:
                return self._lookup(keys)
            except FileNotFoundError:  # a compaction removed a shard this index still named
                self._indexes.pop(self.dir.resolve(), None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        found = np.zeros(len(keys), dtype=bool)
        if not keys:
            return found, None
        index = self._index()
        if index.frame is None:
            return found, None
        wanted = pl.DataFrame({"key": keys}, schema={"key": pl.Binary}).with_row_index("pos")
        hits = wanted.join(index.frame, on="key", how="inner").sort("pos")
        if hits.is_empty():
            return found, None
        out: np.ndarray | None = None
        for (stem,), part in hits.with_row_index("out").group_by(["stem"]):
            emb = np.load(self.dir / f"{stem}.emb.npy", mmap_mode="r")
            if out is None:
                out = np.empty((hits.height, emb.shape[1]), dtype=np.float32)
            out[part["out"].to_numpy()] = emb[part["offset"].to_numpy()]
        found[hits["pos"].to_numpy()] = True
        return found, out

    def add(self, keys: list[bytes], embeddings: np.ndarray) -> None:
        if not keys:
            return
        stem = self._write_shard(keys, np.ascontiguousarray(embeddings, dtype=np.float32))
        index = self._indexes.get(self.dir.resolve())
        if index is not None:
            index.add(stem, pl.DataFrame({"key": keys, "stem": stem}, schema={"key": pl.Binary, "stem": pl.String})
                      .with_row_index("offset"))
        if self.shard_count() > self.compact_above:
            self.compact()

    def _write_shard(self, keys: list[bytes], embeddings: np.ndarray) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        atomic_write_bytes(self.dir / f"{stem}.emb.npy", _npy_bytes(embeddings))
        # uint8 rows, not an "S32" array: numpy strips trailing NUL bytes from "S" strings.
        key_rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        atomic_write_bytes(self.dir / f"{stem}.keys.npy", _npy_bytes(key_rows))
        return stem

    def compact(self) -> int:
        """Merge shards smaller than `shard_rows` into as few as fit; returns shards removed.
        Skipped (0) while another process holds the lock."""
        lock = self.dir / ".compact.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > LOCK_STALE_S:  # its writer died
                    lock.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return 0
        os.close(fd)
        try:
            return self._merge_small_shards()
        finally:
            lock.unlink(missing_ok=True)

    def _merge_small_shards(self) -> int:
        small = []
        for stem in self._stems():
            rows = np.load(self.dir / f"{stem}.keys.npy", mmap_mode="r").shape[0]
            if rows < self.shard_rows:
                small.append((stem, rows))
        if len(small) < 2:
            return 0
        batches, batch, size = [], [], 0
        for stem, rows in small:
            if batch and size + rows > self.shard_rows:
                batches.append(batch)
                batch, size = [], 0
            batch.append(stem)
            size += rows
        batches.append(batch)
        removed = 0
        seen: set[bytes] = set()
        for stems in (b for b in batches if len(b) > 1):
            keys, embs = [], []
            for stem in stems:
                part = _key_frame(self.dir / f"{stem}.keys.npy", stem)["key"].to_list()
                emb = np.load(self.dir / f"{stem}.emb.npy")
                keep = [i for i, k in enumerate(part) if k not in seen]
                seen.update(part[i] for i in keep)
                keys += [part[i] for i in keep]
                embs.append(emb[keep])
            self._write_shard(keys, np.concatenate(embs))
            for stem in stems:  # keys first: a shard without its keys file is never read
                (self.dir / f"{stem}.keys.npy").unlink(missing_ok=True)
                (self.dir / f"{stem}.emb.npy").unlink(missing_ok=True)
            removed += len(stems)
        return removed


__all__ = ["EmbeddingCache"]
