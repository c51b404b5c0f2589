"""One rule decides "accepted" for push, pull and release: `[stages.review] policy` plus the
settings file's `min_submitted` (overridden by an explicit `[argilla] min_submitted`)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.errors import ConfigError
from curate.release import ReleaseStore
from curate.review.config import decision_rule
from curate.review.pull import review_stage
from curate.review.settings import BUNDLED_SETTINGS_FILE
from tests.test_release_helpers import FIRST_REVIEWS, make_workspace, reviews_frame

runner = CliRunner()


def settings_requiring(tmp_path: Path, min_submitted: int) -> Path:
    """A copy of the bundled review settings with another `min_submitted`."""
    folder = tmp_path / "annotations"
    folder.mkdir()
    text = BUNDLED_SETTINGS_FILE.read_text(encoding="utf-8")
    text = text.replace("min_submitted = 1 ", f"min_submitted = {min_submitted} ", 1)
    assert f"min_submitted = {min_submitted}" in text
    (folder / "review.toml").write_text(text, encoding="utf-8")
    (folder / "guidelines.md").write_text((BUNDLED_SETTINGS_FILE.parent / "guidelines.md").read_text(encoding="utf-8"))
    return folder / "review.toml"


def config_with_review(tmp_path: Path, review_section: str) -> Path:
    config = make_workspace(tmp_path)
    config.write_text(config.read_text(encoding="utf-8") + "\n[stages.review]\n" + review_section, encoding="utf-8")
    return config


def released(config: Path) -> set[str]:
    result = runner.invoke(app, ["release", "create", "-c", str(config), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    version = json.loads(result.stdout)["version"]
    return set(ReleaseStore(config.parent / "store").read(version)["candidate_id"].to_list())


def test_one_accept_of_two_required_is_not_released(tmp_path: Path) -> None:
    settings = settings_requiring(tmp_path, 2)
    config = config_with_review(tmp_path, f'settings = "{settings}"\n')
    rule = decision_rule(load_config(config))
    assert (rule.policy, rule.min_submitted) == ("majority", 2)

    # c3 has one accept: pull calls it pending, so release must leave it out.
    pulled = review_stage(None, reviews_frame(FIRST_REVIEWS), rule=rule).tables["decisions"]
    assert dict(pulled.select("candidate_id", "decision").iter_rows())["cand-c3"] == "pending"
    assert released(config) == {"cand-c1", "cand-c2", "cand-c5"}
    manifest = ReleaseStore(tmp_path / "store").manifest("latest")
    assert (manifest["policy"], manifest["min_submitted"]) == ("majority", 2)
    assert manifest["excluded_by_reason"] == {"pending": 1, "rejected": 1}


def test_review_policy_governs_release_and_argilla_override_wins(tmp_path: Path) -> None:
    config = config_with_review(tmp_path, 'policy = "any-reject"\n')
    assert released(config) == {"cand-c1", "cand-c2", "cand-c3"}  # c5 has a harmful flag
    # An explicit [argilla] min_submitted wins over the settings file, for every step alike.
    cfg = load_config(config, environ={"CURATE__ARGILLA__MIN_SUBMITTED": "3"})
    assert decision_rule(cfg).min_submitted == 3


def test_release_section_no_longer_sets_its_own_rule(tmp_path: Path) -> None:
    for key in ('policy = "any-reject"', "min_submitted = 2"):
        (tmp_path / key[:6]).mkdir()
        config = make_workspace(tmp_path / key[:6], extra_config=key + "\n")
        result = runner.invoke(app, ["release", "create", "-c", str(config)])
        assert isinstance(result.exception, ConfigError), result.output
        assert "[stages.review]" in str(result.exception) and key.split(" ")[0] in str(result.exception)
    assert not any(p.name == "manifests" for p in tmp_path.rglob("manifests"))


def test_draft_counts_pending_by_the_same_rule(tmp_path: Path) -> None:
    settings = settings_requiring(tmp_path, 2)
    config = config_with_review(tmp_path, f'settings = "{settings}"\n')
    result = runner.invoke(app, ["release", "create", "-c", str(config), "--draft", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert (out["pending_rows"], out["unreviewed_rows"]) == (2, 1)
    rows = ReleaseStore(tmp_path / "store").read(out["version"])
    assert rows.filter(pl.col("candidate_id") == "cand-c3")["n_reviews"].to_list() == [1]


def test_unknown_policy_is_a_config_error(tmp_path: Path) -> None:
    config = config_with_review(tmp_path, 'policy = "unanimous"\n')
    with pytest.raises(ConfigError, match="stages.review.policy"):
        decision_rule(load_config(config))


def test_release_create_reads_the_review_section_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule, the routing refresh and the gate come from one parse of `[stages.review]` (loading
    the config checks every section once more, before this)."""
    import curate.config as config_module
    from curate.release import create_release

    cfg = load_config(config_with_review(tmp_path, 'policy = "any-reject"\n'))
    sections: list[str] = []
    validate = config_module.validate_section

    def counted(model, raw, where, source=None):
        sections.append(where)
        return validate(model, raw, where, source)

    monkeypatch.setattr(config_module, "validate_section", counted)
    version = create_release(cfg).version
    assert set(ReleaseStore(tmp_path / "store").read(version)["candidate_id"]) == {"cand-c1", "cand-c2", "cand-c3"}
    assert sections.count("stages.review") == 1, sections
