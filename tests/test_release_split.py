"""The eval split is a column of the release: exports leave the test split out unless asked, the
card says so, and eval's `release:VERSION` reads exactly that column."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from curate.cli import app
from curate.eval.sets import holdout_mask, load_release_prompts
from curate.release import ReleaseStore, checkout, export_hf
from tests.test_release_helpers import make_workspace

runner = CliRunner()


def release(tmp_path: Path, fraction: str = "0.7") -> tuple[str, ReleaseStore]:
    config = str(make_workspace(tmp_path, extra_config=f"test_fraction = {fraction}\n"))
    result = runner.invoke(app, ["release", "create", "-c", config])
    assert result.exit_code == 0, (result.output, result.exception)
    return config, ReleaseStore(tmp_path / "store")


def test_split_column_by_question_and_in_the_manifest(tmp_path: Path) -> None:
    _, store = release(tmp_path)
    rows = store.read("latest")
    assert set(rows["split"]) == {"train", "test"}, rows.select("question_id", "split")
    # The same seeded hash of the question id that eval used before releases had the column.
    expected = holdout_mask(rows, 0.7, 0)
    assert rows["split"].to_list() == ["test" if h else "train" for h in expected]
    manifest = store.manifest("latest")
    assert manifest["by_split"] == {k: int(v) for k, v in rows.group_by("split").len().iter_rows()}
    assert manifest["config"]["test_fraction"] == 0.7


def test_exports_leave_the_test_split_out_unless_asked(tmp_path: Path) -> None:
    config, store = release(tmp_path)
    rows = store.read("latest")
    test_ids = set(rows.filter(pl.col("split") == "test")["row_id"])
    assert test_ids

    out = export_hf(store, "latest", tmp_path / "hf", "messages")
    exported = pl.read_parquet(out / "data" / "*" / "*.parquet")
    assert set(exported["row_id"]).isdisjoint(test_ids) and exported.height == rows.height - len(test_ids)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"{len(test_ids)} rows of the `test` split" in card and "--include-test" in card

    co = checkout(store, "latest", tmp_path / "co", "reasoning", "jsonl")
    lines = (co / "data.jsonl").read_text().splitlines()
    assert len(lines) == rows.height - len(test_ids)

    result = runner.invoke(app, ["export", "hf", str(tmp_path / "all"), "--include-test", "-c", config])
    assert result.exit_code == 0, (result.output, result.exception)
    everything = pl.read_parquet(tmp_path / "all" / "data" / "*" / "*.parquet")
    assert everything.height == rows.height and set(everything["split"]) == {"train", "test"}
    assert "includes the `test` split" in (tmp_path / "all" / "README.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "all" / "release_manifest.json").read_text())["by_split"]


def test_eval_release_set_is_the_test_split_column(tmp_path: Path) -> None:
    _, store = release(tmp_path)
    rows = store.read("latest")
    # holdout_fraction no longer matters: the release's own column decides.
    prompts = load_release_prompts("latest", store=str(tmp_path / "store"), split="test", holdout_fraction=0.99)
    assert set(prompts["prompt"]) == set(rows.filter(pl.col("split") == "test")["prompt"])
