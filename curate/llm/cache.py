"""Persistent request cache: one SQLite file (WAL) shared by every stage and run of a workspace.

Each finished call is committed on its own as soon as it finishes, so a run killed at any point
(kill -9 included) loses at most the calls still in flight; a rerun finds every completed one here.
Several processes may share the file (SQLite serializes writers; readers never block).

Only the request (model, messages, params, candidate index) enters the key: never the endpoint's
address or key, and never the stage, so a call made by one stage is reused by another.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CACHE_FILE = "llm-cache.sqlite"
# Bump when the stored result's meaning changes; old entries are then simply not found.
KEY_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    stage TEXT,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    stage TEXT,
    error TEXT,
    attempts INTEGER,
    created_at REAL NOT NULL
);
"""


def request_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any], candidate_index: int) -> str:
    """Hash of everything that determines a call's result distribution."""
    payload = json.dumps(
        {"v": KEY_VERSION, "model": model, "messages": messages, "params": params, "candidate_index": candidate_index},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class LLMCache:
    """Completed calls keyed by `request_key`. Thread-safe; one connection per instance."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (the WAL is in the OS page cache); only a
        # power cut can drop the last commits, and those calls are then simply made again.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to another process (Dask/Prefect workers): only the path travels; the copy opens its own connection.
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    @classmethod
    def for_workspace(cls, root: str | Path) -> LLMCache:
        """The default cache of a workspace: `<root>/cache/llm-cache.sqlite`."""
        return cls(Path(root) / "cache" / CACHE_FILE)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(f"SELECT key, result FROM calls WHERE key IN ({marks})", chunk)
                found.update({key: json.loads(result) for key, result in rows})
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, model: str, stage: str | None, result: dict[str, Any]) -> None:
        """Store one completed call (committed before returning)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    stage,
                    result.get("status", "ok"),
                    json.dumps(result, ensure_ascii=False),
                    result.get("prompt_tokens"),
                    result.get("completion_tokens"),
                    time.time(),
                ),
            )

    def record_error(self, key: str, model: str, stage: str | None, error: str, attempts: int) -> None:
        """Failed calls are not cached (a rerun tries them again) but are kept for the usage view."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO errors VALUES (?, ?, ?, ?, ?, ?)", (key, model, stage, error, attempts, time.time())
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            entries, first, last = self._conn.execute("SELECT count(*), min(created_at), max(created_at) FROM calls").fetchone()
            errors = self._conn.execute("SELECT count(*) FROM errors").fetchone()[0]
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": entries, "errors_logged": errors, "bytes": size,
                "oldest": first, "newest": last}

    def usage_by_stage(self) -> list[dict[str, Any]]:
        """Calls, tokens and errors per (stage, model): the stage that first made each call pays for it."""
        with self._lock:
            calls = self._conn.execute(
                "SELECT coalesce(stage, ''), model, count(*), coalesce(sum(prompt_tokens), 0), "
                "coalesce(sum(completion_tokens), 0) FROM calls GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            errors = dict(
                ((s, m), n)
                for s, m, n in self._conn.execute("SELECT coalesce(stage, ''), model, count(*) FROM errors GROUP BY 1, 2")
            )
        rows = [
            {"stage": s, "model": m, "calls": n, "prompt_tokens": p, "completion_tokens": c, "errors": errors.pop((s, m), 0)}
            for s, m, n, p, c in calls
        ]
        rows += [
            {"stage": s, "model": m, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": n}
            for (s, m), n in errors.items()
        ]
        return rows

    def clear(self, stage: str | None = None) -> int:
        """Delete cached calls (of one stage, or all); returns how many."""
        with self._lock:
            if stage is None:
                n = self._conn.execute("DELETE FROM calls").rowcount
                self._conn.execute("DELETE FROM errors")
            else:
                n = self._conn.execute("DELETE FROM calls WHERE stage = ?", (stage,)).rowcount
                self._conn.execute("DELETE FROM errors WHERE stage = ?", (stage,))
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
