"""The release stage in bounded memory (curate.release.assemble) gives the rows of the in-memory path.

Workspaces of 3,000 synthetic candidates with the cases that decide rows: reviews (stale answer
versions, corrections, harmful votes, drafts, a review of an unknown candidate), duplicated
candidate ids, null prompts, blank and null answers, non-ok statuses, the judge's routing, a
draft, and a mixed-in file. The content hashes and the `release/excluded` file hashes below were
produced by the in-memory stage this one replaced (commit c6b563e); buckets are made small so that
the rows cross many of them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import curate.release.assemble as assemble
from bench.release_workspace import write_workspace
from curate.config import load_config
from curate.errors import InputError
from curate.release import ReleaseConfig, ReleaseStore, create_release, mix_sources
from curate.release.config import MixSource
from curate.release.rows import build_release_rows
from curate.workspace import Workspace
from tests.test_release_helpers import write_safety_jsonl

# scenario -> (routing, draft, content hash, sha256 of release/excluded, rows, answers corrected)
PINNED = {
    "reviewed": (False, False, "5eb561e95b7d60f318037e2fa797f5aa654b67495f351aa651ef59a055940da3",
                 "31b1e93f7c0953c5743f1cb5e34795cabc842761a853779dd63dd0d3cd776248", 258),
    "draft": (False, True, "ccce52e59da8b72f99765049a8eb4e668d5ca91141cf0c9138c99b9c31252f4f",
              "c5ef39007b28e0d4d6a13c7aba526aab7edaa05e1b12d17a35a78002c4070515", 2665),
    "routed": (True, False, "5eb561e95b7d60f318037e2fa797f5aa654b67495f351aa651ef59a055940da3",
               "5f1a8d02893bbca80de8f31dae76ac89131e8620daf3c380582afb3b549989d9", 258),
    "routed_draft": (True, True, "94ce092c27710656f45cf178cbaee3edf4967bd0072f1ae75887f728170a9a63",
                     "19579ed77b9d097bb1b3eaf4d8223a03a2b902b4ab866103a6f8b7194c2c0d18", 883),
}


def _workspace(tmp_path: Path, routing: bool) -> tuple[Path, Path]:
    write_workspace(tmp_path / "ws", 3000, review_every=7, routing=routing, edge_cases=True)
    mix = write_safety_jsonl(tmp_path / "safety.jsonl")
    config = tmp_path / "curate.toml"
    config.write_text(f'workspace = "{tmp_path / "ws"}"\n\n[stages.release]\nstore = "{tmp_path / "store"}"\n\n'
                      f'[[stages.release.mix]]\nname = "safety"\npath = "{mix}"\ncount = 5\n', encoding="utf-8")
    return config, mix


@pytest.mark.parametrize("scenario", sorted(PINNED))
def test_bounded_stage_gives_the_rows_of_the_in_memory_stage(tmp_path: Path, scenario: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    routing, draft, content_hash, excluded_sha, rows = PINNED[scenario]
    monkeypatch.setattr(assemble, "BUCKET_ROWS", 64)
    config, _ = _workspace(tmp_path, routing)
    result = create_release(load_config(config), draft=draft)
    assert result.manifest["content_hash"] == content_hash and result.manifest["rows"] == rows
    manifest = Workspace(tmp_path / "ws").manifest("release")
    assert manifest["outputs"]["excluded"]["sha256"] == excluded_sha
    assert manifest["report"]["answers_corrected"] == 29
    # No scratch file (spilled texts, the assembled file) is left beside the stage's tables.
    assert sorted(p.name for p in (tmp_path / "ws" / "stages" / "release").iterdir()) == [
        "excluded.parquet", "manifest.json", "rows.parquet"]
    # The assembled file gets the stage store's mode, like the tables written through it.
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ws" / "stages" / "release").glob("*.parquet")}
    assert modes == {"excluded.parquet": 0o600, "rows.parquet": 0o600}


def test_bounded_rows_equal_in_memory_rows_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row for row and in the same order: the stage's file against build_release_rows + mix_sources."""
    monkeypatch.setattr(assemble, "BUCKET_ROWS", 50)
    config, mix = _workspace(tmp_path, routing=False)
    create_release(load_config(config), draft=True)
    ws = Workspace(tmp_path / "ws")
    curated, _ = build_release_rows(ws.read("review/reviews"), ws.read("answers/candidates"),
                                    ReleaseConfig(include_pending=True), questions=ws.read("questions/questions"),
                                    keywords=ws.read("keywords/keywords"))
    expected, _ = mix_sources(curated, [MixSource(name="safety", path=str(mix), count=5)])
    expected = expected.with_columns(pl.col("split").fill_null("train"))
    written = ws.read("release/rows")
    assert written.height == expected.height > 50 * 40  # across many buckets
    assert written.equals(expected)
    assert written["row_id"].is_sorted()
    assert (written["answer_corrected"].sum(), written["source"].value_counts().height) == (29, 2)


def test_bounded_stage_refuses_colliding_row_ids(tmp_path: Path) -> None:
    """A mixed-in row whose id equals a curated row's is refused, as before: no release, no scratch left."""
    _, mix = _workspace(tmp_path, routing=False)
    ws = Workspace(tmp_path / "ws")
    taken = ws.read("answers/candidates").filter(pl.col("status") == "ok").row(0, named=True)
    # A table source's row id comes from its candidate id, so this row's is the curated row's.
    selected = pl.DataFrame({"candidate_id": [taken["candidate_id"]], "prompt": ["p"], "reasoning": ["r"], "answer": ["a"], "language": ["en"],
                             "subset": ["s"], "messages": [[{"role": "user", "content": "p"}]]})
    ws.run_stage("safety_filter", lambda: {"selected": selected}, force=True)
    config = tmp_path / "clash.toml"
    config.write_text(f'workspace = "{tmp_path / "ws"}"\n\n[stages.release]\nstore = "{tmp_path / "store"}"\n\n'
                      '[[stages.release.mix]]\nname = "safety"\ntable = "safety_filter/selected"\ncount = 1\n',
                      encoding="utf-8")
    with pytest.raises(InputError, match="row ids collide"):
        create_release(load_config(config), draft=True)
    assert not (tmp_path / "store" / "manifests").exists() or not list((tmp_path / "store" / "manifests").iterdir())
    assert not [p for p in (tmp_path / "ws" / "stages" / "release").iterdir() if p.name.startswith(".")]


def test_bounded_stage_names_a_missing_candidate_column(tmp_path: Path) -> None:
    config, _ = _workspace(tmp_path, routing=False)
    ws = Workspace(tmp_path / "ws")
    ws.run_stage("answers", lambda: {"candidates": ws.read("answers/candidates").drop("language")}, force=True)
    with pytest.raises(InputError, match="language"):
        create_release(load_config(config), draft=True)


def test_bounded_stage_failing_midway_leaves_the_last_rows_and_no_scratch(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while the texts are joined back (here: the third bucket) leaves the previous
    release/rows and release intact, and no spilled or half-written file behind."""
    monkeypatch.setattr(assemble, "BUCKET_ROWS", 500)
    config, _ = _workspace(tmp_path, routing=False)
    first = create_release(load_config(config), draft=True)
    stage_dir = tmp_path / "ws" / "stages" / "release"
    before = (stage_dir / "rows.parquet").read_bytes()
    calls = {"n": 0}
    real = assemble.with_texts

    def failing(accepted: pl.DataFrame, texts: pl.DataFrame) -> pl.DataFrame:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device")
        return real(accepted, texts)

    monkeypatch.setattr(assemble, "with_texts", failing)
    with pytest.raises(OSError, match="No space left"):
        create_release(load_config(config), draft=True, force=True)
    assert calls["n"] == 3
    assert (stage_dir / "rows.parquet").read_bytes() == before
    assert sorted(p.name for p in stage_dir.iterdir()) == ["excluded.parquet", "failed.json", "manifest.json",
                                                           "rows.parquet"]
    store = ReleaseStore(tmp_path / "store")
    assert store.versions() == [first.version] and store.verify(first.version).ok


def test_bounded_stage_reads_large_row_groups_page_by_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidates file with row groups past WHOLE_CHUNK_ROWS goes through the buffered reader: same rows."""
    routing, draft, content_hash, _, rows = PINNED["draft"]
    monkeypatch.setattr(assemble, "WHOLE_CHUNK_ROWS", 100)
    monkeypatch.setattr(assemble, "BUCKET_ROWS", 700)
    config, _ = _workspace(tmp_path, routing)
    result = create_release(load_config(config), draft=draft)
    assert (result.manifest["content_hash"], result.manifest["rows"]) == (content_hash, rows)
