"""Releases end to end through the CLI: review -> release -> second release -> diff -> verify ->
tamper -> verify fails, and the Hugging Face export loads with `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.release import ReleaseStore
from curate.release.rows import row_id_for_candidate
from tests.test_release_helpers import SECOND_REVIEWS, make_workspace, set_reviews

runner = CliRunner()


def cli(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def cli_json(*args: str):
    return json.loads(cli(*args, "--json").stdout)


def test_review_release_diff_verify_tamper_export(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    first = cli_json("release", "create", "-c", config, "--tag", "candidate", "--flow-run-id", "flow-123")
    assert first["created"] and first["version"] == 1 and first["rows"] == 4

    store = ReleaseStore(tmp_path / "store")
    m1 = store.manifest(1)
    assert m1["by_language"] == {"en": 3, "zh": 1}
    assert m1["by_topic"] == {"tiananmen": 2, "tibet": 1, "xinjiang": 1}
    assert m1["parent"] is None and m1["flow_run_ids"] == ["flow-123"]
    assert m1["review_campaigns"] == ["pilot"] and m1["policy"] == "majority"
    assert m1["models"]["answers"] == "deepseek-r1-test"
    assert m1["files"] and all(len(f["sha256"]) == 64 for f in m1["files"])
    rows1 = store.read(1)
    c2 = rows1.filter(pl.col("candidate_id") == "cand-c2").row(0, named=True)
    assert c2["answer"] == "Many protest limits on religious practice." and c2["answer_corrected"]
    assert c2["topic"] == "tibet" and c2["seed_ids"] == ["seed-tibet-1", "seed-tibet-2"]  # topic via the keyword
    assert c2["keyword_id"] == "kw-tibet" and c2["question_id"] == "q-c2" and c2["translation_id"] == "tr-c2"

    # Unchanged inputs give no new release.
    assert cli_json("release", "create", "-c", config) == first | {"created": False}

    set_reviews(tmp_path, SECOND_REVIEWS)
    second = cli_json("release", "create", "-c", config, "--tag", "candidate")
    assert second["version"] == 2 and second["content_hash"] != first["content_hash"]
    m2 = store.manifest(2)
    assert m2["parent"] == {"version": 1, "content_hash": first["content_hash"]}
    assert m2["review_campaigns"] == ["pilot", "round2"]
    assert store.tags()["candidate"]["version"] == 2
    assert [h["version"] for h in store.tags()["candidate"]["history"]] == [1, 2]

    diff = cli_json("versions", "diff", "1", "2", "-c", config)
    assert diff["added_rows"] == [row_id_for_candidate("cand-c4")]
    assert diff["removed_rows"] == [row_id_for_candidate("cand-c3")]
    [changed] = diff["changed_rows"]
    assert changed["row_id"] == row_id_for_candidate("cand-c1")
    assert {"answer", "answer_corrected", "n_reviews", "accept_votes"} <= set(changed["changed_fields"])
    assert "prompt" not in changed["changed_fields"]
    deltas = {(d["dimension"], d["value"]): d["delta"] for d in diff["count_deltas"]}
    assert deltas == {("topic", "tiananmen"): -1, ("topic", "tibet"): 1}
    text = cli("versions", "diff", "candidate", "1", "-c", config).stdout
    assert "removed" in text and "tibet" in text

    # Past versions stay readable and intact.
    assert store.read(1).equals(rows1)
    verified = cli("versions", "verify", "-c", config)
    assert "release 1: ok" in verified.stdout and "release 2: ok" in verified.stdout
    cli("versions", "tag", "published", "1", "-c", config)
    assert "published" in cli("versions", "list", "-c", config).stdout

    # Tamper: rewrite a data file of release 1 as valid Parquet with one answer changed.
    data_file = tmp_path / "store" / "rows" / m1["files"][0]["path"]
    tampered = pl.read_parquet(data_file).with_columns(
        answer=pl.when(pl.col("candidate_id") == "cand-c5").then(pl.lit("edited")).otherwise(pl.col("answer"))
    )
    tampered.write_parquet(data_file)
    failed = cli("versions", "verify", "-c", config, ok=False)
    assert failed.exit_code == 1
    assert "release 1: FAILED" in failed.stdout and "release 2: ok" in failed.stdout
    assert f"data file {m1['files'][0]['path']} sha256" in failed.stderr and "size" in failed.stderr
    assert cli("versions", "verify", "2", "-c", config).exit_code == 0

    # Export the (intact) release 2 and load it with datasets, all languages and one language.
    out = tmp_path / "hf"
    cli("export", "hf", str(out), "--release", "2", "-c", config)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "config_name: zh" in card and "- en" in card
    assert first["content_hash"] in card  # the parent is part of the lineage
    from datasets import load_dataset

    cache = str(tmp_path / "hf-cache")
    everything = load_dataset(str(out), split="train", cache_dir=cache)
    assert everything.num_rows == 4
    zh = load_dataset(str(out), "zh", split="train", cache_dir=cache)
    assert zh.num_rows == 1 and set(zh["language"]) == {"zh"}
    [assistant] = [m for m in zh[0]["messages"] if m["role"] == "assistant"]
    assert assistant["content"].startswith("<think>\n") and "</think>" in assistant["content"]


def test_checkout_formats_and_bad_input(tmp_path: Path) -> None:
    config = str(make_workspace(tmp_path))
    cli("release", "create", "-c", config)
    out = tmp_path / "v1"
    cli("versions", "checkout", "latest", str(out), "-c", config, "--format", "reasoning", "--as", "jsonl")
    lines = [json.loads(x) for x in (out / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and {"prompt", "reasoning", "response", "row_id", "candidate_id"} <= set(lines[0])
    assert json.loads((out / "manifest.json").read_text())["version"] == 1
    shown = cli("versions", "show", "v1", "-c", config).stdout
    assert "release 1" in shown and "by language: en=3, zh=1" in shown
    assert [v["version"] for v in cli_json("versions", "list", "-c", config)] == [1]

    bad_format = cli("versions", "checkout", "1", str(tmp_path / "x"), "-c", config, "--format", "xml", ok=False)
    assert isinstance(bad_format.exception, CurateError) and "unknown output format 'xml'" in str(bad_format.exception)
    assert not (tmp_path / "x").exists()
    not_empty = cli("versions", "checkout", "1", str(out), "-c", config, ok=False)
    assert "not empty" in str(not_empty.exception)

    unknown = cli("versions", "show", "7", "-c", config, ok=False)
    assert isinstance(unknown.exception, CurateError) and "no release 7" in str(unknown.exception)
    unknown_tag = cli("versions", "diff", "1", "nosuchtag", "-c", config, ok=False)
    assert "unknown release 'nosuchtag'" in str(unknown_tag.exception)
    bad_tag = cli("versions", "tag", "latest", "1", "-c", config, ok=False)
    assert "bad tag name" in str(bad_tag.exception)

    empty = tmp_path / "empty.toml"
    empty.write_text(f'workspace = "{tmp_path / "nows"}"\n[stages.release]\nstore = "{tmp_path / "nostore"}"\n')
    missing = cli("release", "create", "-c", str(empty), ok=False)
    assert isinstance(missing.exception, CurateError) and "'review/reviews' is missing" in str(missing.exception)
    no_store = cli("versions", "verify", "-c", str(empty), ok=False)
    assert "no releases yet" in str(no_store.exception)

    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text(f'workspace = "{tmp_path / "ws"}"\n[stages.release]\nformat = "xml"\n')
    bad = cli("release", "create", "-c", str(bad_cfg), ok=False)
    assert isinstance(bad.exception, CurateError) and "stages.release.format" in str(bad.exception)


def test_push_needs_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(make_workspace(tmp_path))
    cli("release", "create", "-c", config)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = cli("export", "hf", str(tmp_path / "hf"), "--push", "someone/dataset", "-c", config, ok=False)
    assert "HF_TOKEN" in str(result.exception) and not (tmp_path / "hf").exists()


def test_rows_follow_policy_threshold_and_campaign_filter() -> None:
    from curate.release import ReleaseConfig, build_release_rows
    from curate.review.config import DecisionRule
    from tests.test_release_helpers import FIRST_REVIEWS, review, reviews_frame, upstream_frames

    frames = upstream_frames()
    reviews = reviews_frame([*FIRST_REVIEWS, review("zz", "ann1", True)])  # a candidate that is not in the table
    rows, excluded = build_release_rows(
        reviews,
        frames["candidates"],
        ReleaseConfig(),
        rule=DecisionRule(policy="any-reject"),
        questions=frames["questions"],
        keywords=frames["keywords"],
    )
    assert sorted(rows["candidate_id"]) == ["cand-c1", "cand-c2", "cand-c3"]  # c5 has a harmful flag
    reasons = dict(excluded.select("candidate_id", "exclude_reason").iter_rows())
    assert reasons == {"cand-c4": "rejected", "cand-c5": "rejected", "cand-zz": "unknown_candidate"}

    rows, excluded = build_release_rows(reviews, frames["candidates"], ReleaseConfig(), rule=DecisionRule(min_submitted=2))
    assert sorted(rows["candidate_id"]) == ["cand-c1", "cand-c2", "cand-c5"]
    assert dict(excluded.select("candidate_id", "exclude_reason").iter_rows())["cand-c3"] == "pending"
    assert rows["topic"].is_null().all() and rows["seed_ids"].is_null().all()  # no lineage tables given

    rows, _ = build_release_rows(reviews, frames["candidates"], ReleaseConfig(campaigns=["nope"]))
    assert rows.is_empty()


def test_release_with_nothing_accepted_is_refused(tmp_path: Path) -> None:
    from tests.test_release_helpers import review

    config = str(make_workspace(tmp_path, reviews=[review("c1", "ann1", False)]))
    result = cli("release", "create", "-c", config, ok=False)
    assert isinstance(result.exception, CurateError) and "nothing to release" in str(result.exception)
    assert "rejected" in str(result.exception) and not (tmp_path / "store" / "manifests").exists()


def test_cli_process_reports_unknown_version_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = str(make_workspace(tmp_path))
    cli("release", "create", "-c", config)
    proc = subprocess.run(
        [sys.executable, "-m", "curate", "versions", "show", "9", "-c", config],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no release 9" in proc.stderr and "Traceback" not in proc.stderr
