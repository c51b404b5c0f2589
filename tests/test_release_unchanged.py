"""An unchanged `release create` writes nothing: when the rows file is the one the latest release
was built from (same sha256, same config), the store neither reads nor writes rows and answers as
before (the latest release, `created: false`, "unchanged", tags moved). Same content from another
file still ends unchanged, through the one-pass write (its files removed). Real Delta store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.release import ReleaseStore
from curate.release import store as store_module
from curate.release.store import ROWS_FILE_KEY
from curate.workspace import Workspace, sha256_file
from tests.test_release_helpers import SECOND_REVIEWS, make_workspace, set_reviews
from tests.test_release_stream import META, _data_files_on_disk, _rows


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per data-file pass the store starts (the real write still runs)."""
    calls: list[int] = []
    real = store_module.write_parts

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "write_parts", counted)
    return calls


def test_an_unchanged_release_create_writes_nothing(tmp_path: Path, writes: list[int]) -> None:
    config = str(make_workspace(tmp_path))
    first = CliRunner().invoke(app, ["release", "create", "-c", config, "--json"])
    assert first.exit_code == 0, first.output
    first = json.loads(first.stdout)
    assert first["created"] and len(writes) == 1
    store = ReleaseStore(tmp_path / "store")
    rows_file = Workspace(tmp_path / "ws").table_path("release", "rows")
    assert store.manifest(1)[ROWS_FILE_KEY] == sha256_file(rows_file)
    files = _data_files_on_disk(tmp_path / "store")

    again = CliRunner().invoke(app, ["release", "create", "-c", config, "--json", "--tag", "again"])
    assert json.loads(again.stdout) == first | {"created": False}
    text = CliRunner().invoke(app, ["release", "create", "-c", config])
    assert "unchanged (same content as latest)" in text.stdout
    assert len(writes) == 1  # no pass over the rows, nothing written and deleted
    assert store.versions() == [1] and store.tags()["again"]["version"] == 1
    assert _data_files_on_disk(tmp_path / "store") == files and store.verify(1).ok

    # Rebuilding the rows (same inputs) gives the same file: still nothing written.
    forced = CliRunner().invoke(app, ["release", "create", "-c", config, "--json", "--force"])
    assert json.loads(forced.stdout)["created"] is False and len(writes) == 1

    # Changed reviews: a new rows file, a new release.
    set_reviews(tmp_path, SECOND_REVIEWS)
    second = json.loads(CliRunner().invoke(app, ["release", "create", "-c", config, "--json"]).stdout)
    assert second["created"] and second["version"] == 2 and len(writes) == 2
    assert store.manifest(2)[ROWS_FILE_KEY] == sha256_file(rows_file) != store.manifest(1)[ROWS_FILE_KEY]
    assert store.verify(2).ok


def test_the_store_skips_only_the_same_file_with_the_same_config(tmp_path: Path, writes: list[int]) -> None:
    rows = tmp_path / "rows.parquet"
    _rows(40).write_parquet(rows)
    store = ReleaseStore(tmp_path / "store")
    meta = META | {ROWS_FILE_KEY: sha256_file(rows)}
    first = store.commit(rows, meta)
    assert first.created and len(writes) == 1

    assert store.commit(rows, meta, tags=["t"]) == first.__class__(first.manifest, created=False)
    assert len(writes) == 1 and store.tags()["t"]["version"] == 1

    # Same file, another config: a new release.
    other_config = store.commit(rows, meta | {"config_hash": "y"})
    assert other_config.created and other_config.version == 2 and len(writes) == 2

    # Same rows from another file (reordered): the pass runs, finds the same content, removes its files.
    reordered = tmp_path / "reordered.parquet"
    _rows(40).reverse().write_parquet(reordered)
    files = _data_files_on_disk(tmp_path / "store")
    same = store.commit(reordered, meta | {"config_hash": "y", ROWS_FILE_KEY: sha256_file(reordered)})
    assert not same.created and same.version == 2 and len(writes) == 3
    assert _data_files_on_disk(tmp_path / "store") == files

    # Without a rows-file hash (another caller, or a release made before it was recorded): the pass runs.
    plain = store.commit(rows, META | {"config_hash": "y"})
    assert not plain.created and plain.version == 2 and len(writes) == 4
