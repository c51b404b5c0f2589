"""Draft releases: candidates still pending review go out with their review stats, tagged 'draft';
rejected candidates stay out; a normal release is unchanged by the mode's existence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from curate.cli import app
from curate.release import ReleaseStore
from curate.workspace import Workspace
from tests.test_release_helpers import FIRST_REVIEWS, make_workspace, review

runner = CliRunner()


def cli(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def cli_json(*args: str) -> dict:
    return json.loads(cli(*args, "--json").stdout)


def released_ids(store: ReleaseStore, ref: str | int) -> set[str]:
    return set(store.read(ref)["candidate_id"].to_list())


def test_draft_adds_pending_keeps_rejected_out_and_normal_release_is_unchanged(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    store = ReleaseStore(tmp_path / "store")

    normal = cli_json("release", "create", "-c", config)
    assert normal["rows"] == 4 and not normal["draft"] and normal["pending_rows"] == 0
    assert released_ids(store, 1) == {"cand-c1", "cand-c2", "cand-c3", "cand-c5"}
    assert "draft" not in store.tags()
    m1 = store.manifest(1)
    assert m1["draft"] is False and m1["unreviewed_rows"] == 0
    assert m1["excluded_by_reason"] == {"rejected": 1}  # c6 has no submitted review, so it is not listed

    draft = cli_json("release", "create", "-c", config, "--draft", "--tag", "demo")
    assert draft["created"] and draft["version"] == 2 and draft["rows"] == 5
    # c6 has only a draft (unsubmitted) response: pending, released with zero votes. c4 was rejected.
    assert released_ids(store, 2) == {"cand-c1", "cand-c2", "cand-c3", "cand-c5", "cand-c6"}
    c6 = store.read(2).filter(pl.col("candidate_id") == "cand-c6").row(0, named=True)
    assert (c6["n_reviews"], c6["accept_votes"], c6["harmful_votes"]) == (0, 0, 0)
    assert c6["satisfaction_mean"] is None and not c6["answer_corrected"]
    assert c6["topic"] == "xinjiang" and c6["seed_ids"] == ["seed-xinjiang-1", "seed-xinjiang-2"]
    m2 = store.manifest(2)
    assert m2["draft"] is True and m2["pending_rows"] == 1 and m2["unreviewed_rows"] == 1
    assert m2["config"]["include_pending"] is True
    assert m2["excluded_by_reason"] == {"rejected": 1}
    assert store.tags()["draft"]["version"] == 2 and store.tags()["demo"]["version"] == 2
    assert "published" not in store.tags()

    # Rerunning the same draft is a no-op; the accepted-only release still gives release 1's rows.
    assert cli_json("release", "create", "-c", config, "--draft")["created"] is False
    again = cli_json("release", "create", "-c", config)
    assert again["rows"] == 4 and again["content_hash"] == normal["content_hash"]
    assert store.tags()["draft"]["version"] == 2  # the draft tag never moves to a reviewed-only release

    # The exported card says it is a draft.
    out = tmp_path / "hf-draft"
    cli("export", "hf", str(out), "--release", "draft", "-c", config)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Draft release" in card and "1 rows have no review yet" in card
    assert json.loads((out / "release_manifest.json").read_text())["draft"] is True


def test_draft_counts_under_threshold_reviews_as_pending(tmp_path: Path) -> None:
    # min_submitted = 2: c3 (one accept) is pending, not accepted; c4 (two rejects) is still out.
    config = str(make_workspace(tmp_path, extra_config="min_submitted = 2\ninclude_pending = true\n"))
    draft = cli_json("release", "create", "-c", config)
    assert draft["draft"] and draft["rows"] == 5
    assert (draft["pending_rows"], draft["unreviewed_rows"]) == (2, 1)
    store = ReleaseStore(tmp_path / "store")
    assert "cand-c4" not in released_ids(store, "draft")
    c3 = store.read("draft").filter(pl.col("candidate_id") == "cand-c3").row(0, named=True)
    assert (c3["n_reviews"], c3["accept_votes"]) == (1, 1)


def test_draft_refuses_published_tag_and_works_before_any_review_sync(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    refused = cli("release", "create", "-c", config, "--draft", "--tag", "published", ok=False)
    assert refused.exit_code != 0 and "published" in (refused.output + str(refused.exception))
    assert not (tmp_path / "store" / "manifests").exists()

    # No review stage at all yet (fresh demo): a normal release names the missing table,
    # a draft releases every ok candidate as unreviewed.
    shutil.rmtree(Workspace(tmp_path / "ws").root / "stages" / "review")
    missing = cli("release", "create", "-c", config, ok=False)
    assert missing.exit_code != 0 and "review/reviews" in (missing.output + str(missing.exception))
    draft = cli_json("release", "create", "-c", config, "--draft")
    assert draft["rows"] == 6 and draft["unreviewed_rows"] == 6 and draft["pending_rows"] == 6


def test_draft_with_everything_rejected_releases_nothing(tmp_path: Path) -> None:
    rejected = [review(k, "ann1", False) for k in ("c1", "c2", "c3", "c4", "c5", "c6")]
    config = str(make_workspace(tmp_path, reviews=rejected))
    failed = cli("release", "create", "-c", config, "--draft", ok=False)
    assert failed.exit_code != 0 and "nothing to release" in (failed.output + str(failed.exception))


def test_release_flow_task_passes_draft(tmp_path: Path) -> None:
    from flows.release import commit_release

    config = str(make_workspace(tmp_path, reviews=FIRST_REVIEWS))
    summary = commit_release.fn(config, [], None, False, True)
    assert summary["draft"] and summary["rows"] == 5 and summary["unreviewed_rows"] == 1
    assert ReleaseStore(tmp_path / "store").tags()["draft"]["version"] == summary["version"]


def test_curate_run_accepts_draft_for_the_release_flow_only(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    wrong = cli("run", "-c", config, "--flow", "review-sync", "--draft", ok=False)
    assert wrong.exit_code != 0 and "--draft" in (wrong.output + str(wrong.exception))
    assert not (tmp_path / "store").exists()
