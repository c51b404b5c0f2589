"""Drafts hold unreviewed rows: never `published`, never `latest`, exported only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.eval.sets import load_release_prompts
from curate.release import ReleaseNotFound, ReleaseStore, export_hf
from tests.test_release_helpers import make_workspace

runner = CliRunner()


def create(config: str, *args: str) -> dict:
    result = runner.invoke(app, ["release", "create", "-c", config, "--json", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_only_drafts_means_no_latest_and_no_published(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    store = ReleaseStore(tmp_path / "store")
    draft = create(config, "--draft")
    with pytest.raises(ReleaseNotFound, match="draft"):
        store.resolve("latest")
    with pytest.raises(CurateError, match="draft"):
        store.tag("published", draft["version"])
    refused = runner.invoke(app, ["versions", "tag", "published", str(draft["version"]), "-c", config])
    assert refused.exit_code != 0 and "draft" in str(refused.exception)
    assert "published" not in store.tags()
    # An explicit reference still reaches the draft.
    assert store.resolve("draft") == store.resolve(draft["version"]) == draft["version"]


def test_latest_skips_a_newer_draft_everywhere(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    store = ReleaseStore(tmp_path / "store")
    reviewed = create(config)
    draft = create(config, "--draft")
    assert draft["version"] > reviewed["version"]
    assert store.resolve("latest") == reviewed["version"]
    assert store.manifest("latest")["draft"] is False
    store.tag("published", "latest")
    assert store.tags()["published"]["version"] == reviewed["version"]
    # eval's release:latest reads the reviewed release, not the draft.
    prompts = load_release_prompts("latest", store=str(tmp_path / "store"), split="all")
    assert "cand-c6" not in set(store.read("latest")["candidate_id"]) and prompts.height == 4

    # `export hf` defaults to latest, i.e. the reviewed release.
    out = tmp_path / "hf"
    result = runner.invoke(app, ["export", "hf", str(out), "-c", config])
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((out / "release_manifest.json").read_text())["version"] == reviewed["version"]


def test_exporting_a_draft_needs_the_flag_and_says_so(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    store = ReleaseStore(tmp_path / "store")
    draft = create(config, "--draft")
    with pytest.raises(CurateError, match="allow.draft"):
        export_hf(store, draft["version"], tmp_path / "refused", "messages")
    assert not (tmp_path / "refused").exists()
    refused = runner.invoke(app, ["export", "hf", str(tmp_path / "cli-refused"), "--release", "draft", "-c", config])
    assert refused.exit_code != 0 and "--allow-draft" in str(refused.exception)
    refused = runner.invoke(app, ["versions", "checkout", "draft", str(tmp_path / "co"), "-c", config])
    assert refused.exit_code != 0 and "--allow-draft" in str(refused.exception)

    out = tmp_path / "hf"
    result = runner.invoke(app, ["export", "hf", str(out), "--release", "draft", "--allow-draft", "-c", config])
    assert result.exit_code == 0, (result.output, result.exception)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Draft release" in card and "exported with --allow-draft" in card
