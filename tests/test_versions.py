"""The versioned release store: addressing, tags, immutability checks, crash recovery."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curate.errors import CurateError
from curate.records import ReleaseRow, conform
from curate.release import ReleaseNotFound, ReleaseStore, content_hash


def _rows(n: int, answer: str = "a") -> pl.DataFrame:
    return conform(
        pl.DataFrame(
            {
                "row_id": [f"row-{i:03d}" for i in range(n)],
                "prompt": [f"p{i}" for i in range(n)],
                "language": ["en" if i % 2 else "zh" for i in range(n)],
                "topic": ["t"] * n,
                "reasoning": ["r"] * n,
                "answer": [answer] * n,
                "seed_ids": [["s1", "s2"]] * n,
            }
        ),
        ReleaseRow,
    )


def _commit(store: ReleaseStore, rows: pl.DataFrame, **meta):
    return store.commit(rows, {"config_hash": "cfg", **meta})


def test_addressing_tags_and_parent(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "s")
    v1 = _commit(store, _rows(3))
    v2 = _commit(store, _rows(4), notes="second")
    assert (v1.version, v2.version) == (1, 2) and store.versions() == [1, 2]
    assert store.manifest(2)["parent"] == {"version": 1, "content_hash": v1.manifest["content_hash"]}
    assert store.resolve("v1") == 1 and store.resolve("latest") == 2
    assert store.resolve(v1.manifest["content_hash"][:10]) == 1
    assert content_hash(_rows(3).reverse()) == v1.manifest["content_hash"]  # row order does not matter

    store.tag("published", 1)
    store.tag("published", 2)  # tags move ...
    assert store.resolve("published") == 2
    assert store.tags()["published"]["history"][0]["version"] == 1
    assert store.read(1).equals(_rows(3).sort("row_id"))  # ... and never change what a release holds
    assert all(r.ok for r in store.verify_all())

    same = _commit(store, _rows(4))
    assert not same.created and same.version == 2
    with pytest.raises(ReleaseNotFound, match="no release 9"):
        store.read(9)
    with pytest.raises(CurateError, match="unique row_id"):
        _commit(store, pl.concat([_rows(2), _rows(2)]))


def test_verify_names_missing_files_and_manifest_tampering(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "s")
    _commit(store, _rows(3))
    _commit(store, _rows(3, answer="b"))
    store.tag("candidate", 2)

    manifest_path = tmp_path / "s" / "manifests" / "000002.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps(manifest | {"content_hash": "0" * 64}))
    problems = store.verify(2).problems
    assert any("manifest field 'content_hash' is \"000000000000" in p for p in problems)
    assert any(p.startswith("tag candidate:") for p in problems)
    manifest_path.write_text(json.dumps(manifest))

    data = tmp_path / "s" / "rows" / store.manifest(1)["files"][0]["path"]
    data.unlink()
    report = store.verify(1)
    assert not report.ok and f"data file {data.name} is missing" in report.problems[0]
    assert store.verify(2).ok


def test_crash_between_commit_and_manifest_is_completed(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "s")
    _commit(store, _rows(2))
    second = _commit(store, _rows(3))
    (tmp_path / "s" / "manifests" / "000002.json").unlink()  # as if the process died after the Delta commit
    assert store.versions() == [1]
    third = _commit(store, _rows(5))
    assert store.versions() == [1, 2, 3] and third.version == 3
    assert store.manifest(2)["content_hash"] == second.manifest["content_hash"]
    assert third.manifest["parent"]["version"] == 2 and store.verify(2).ok


def test_secrets_never_reach_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_KEY", "sk-very-secret-value-123")
    store = ReleaseStore(tmp_path / "s")
    _commit(store, _rows(1), notes="leaked sk-very-secret-value-123 by mistake")
    text = "".join(p.read_text() for p in (tmp_path / "s").rglob("*.json"))
    assert "sk-very-secret-value-123" not in text and "***" in text


def test_store_uri_forms(tmp_path: Path) -> None:
    _commit(ReleaseStore(f"file://{tmp_path / 's'}"), _rows(1))
    assert ReleaseStore(tmp_path / "s").versions() == [1]
    with pytest.raises(ReleaseNotFound, match="no releases yet"):
        ReleaseStore(tmp_path / "empty").manifest("latest")
