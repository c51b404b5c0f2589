"""`verify` checks the whole manifest against the body held in the Delta commit, and every release
stays readable and verifiable after Delta writes a checkpoint and cleans up its log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from curate.release import ReleaseStore
from tests.test_versions import _rows

TAMPERED = {
    "config_hash": "0000",
    "parent": {"version": 7, "content_hash": "beef"},
    "models": {"answers": "some-other-model"},
    "review_campaigns": ["invented"],
    "by_language": {"en": 999},
    "notes": "rewritten history",
    "created_at": "2020-01-01T00:00:00+00:00",
}


def _store_with_two_releases(tmp_path: Path) -> ReleaseStore:
    store = ReleaseStore(tmp_path / "s")
    store.commit(_rows(3), {"config_hash": "cfg", "models": {"answers": "m"}, "review_campaigns": ["c"], "notes": "one"})
    store.commit(_rows(4), {"config_hash": "cfg", "models": {"answers": "m"}, "review_campaigns": ["c"], "notes": "two"})
    assert all(r.ok for r in store.verify_all())
    return store


@pytest.mark.parametrize("key", sorted(TAMPERED))
def test_verify_names_any_changed_manifest_field(tmp_path: Path, key: str) -> None:
    store = _store_with_two_releases(tmp_path)
    path = tmp_path / "s" / "manifests" / "000002.json"
    manifest = json.loads(path.read_text())
    manifest[key] = TAMPERED[key]
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    report = store.verify(2)
    assert not report.ok and any(f"'{key}'" in p for p in report.problems), report.problems
    assert store.verify(1).ok


def test_an_added_manifest_field_is_named_too(tmp_path: Path) -> None:
    store = _store_with_two_releases(tmp_path)
    path = tmp_path / "s" / "manifests" / "000001.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"reviewed_by": "nobody"}))
    assert any("'reviewed_by'" in p for p in store.verify(1).problems)


def test_releases_stay_verifiable_across_a_checkpoint_and_log_cleanup(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "s")
    for n in range(3, 7):
        store.commit(_rows(n), {"config_hash": f"cfg{n}"})
    log = tmp_path / "s" / "rows" / "_delta_log"
    # Make every commit look a year old, so any retention shorter than that would expire it.
    year_ago = time.time() - 366 * 86400
    for entry in log.glob("*.json"):
        os.utime(entry, (year_ago, year_ago))
    table = DeltaTable(str(tmp_path / "s" / "rows"))
    assert table.metadata().configuration.get("delta.logRetentionDuration")
    table.create_checkpoint()
    table.cleanup_metadata()
    assert sorted(p.name for p in log.glob("0*.json"))[0] == f"{0:020d}.json", "old commits were deleted"
    store.commit(_rows(9), {"config_hash": "after-checkpoint"})
    reports = ReleaseStore(tmp_path / "s").verify_all()
    assert [r.version for r in reports] == [1, 2, 3, 4, 5] and all(r.ok for r in reports), [r.problems for r in reports]
    assert ReleaseStore(tmp_path / "s").read(1).height == 3
