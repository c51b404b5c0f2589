"""The safety chain in the stage table: declarations that agree, settings from the default config,
whole-config checking of its sections, and the command line and flow that run it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.errors import ConfigError
from curate.pipeline import SAFETY, SAFETY_STEPS
from curate.runner import file_hashes, stage_settings
from curate.tables import TableRef
from curate.validate import check_config

REPO = Path(__file__).resolve().parent.parent


def test_every_safety_input_is_written_by_an_earlier_safety_stage():
    written: set[TableRef] = set()
    for declared in SAFETY:
        for name, wanted in declared.reads.items():
            assert set(wanted.refs) & written, f"{declared.name}.{name} reads {wanted.refs}, none written before it"
        written |= set(declared.writes)
    assert SAFETY_STEPS == ("safety_prompts", "safety_translate", "safety_answers", "safety_filter")


def test_safety_stages_build_settings_from_the_default_config_and_declare_existing_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, environ={})
    for declared in SAFETY:
        settings = stage_settings(declared, cfg)
        for path in file_hashes(declared, settings):
            assert Path(path).exists(), (declared.name, path)
    for rel in ("curate/stages/safety_prompts.py", "curate/stages/safety_answers.py", "curate/stages/safety_filter.py",
                "curate/stages/safety_translate.py", "curate/release/table_mix.py", "curate/llm/sampling.py", "flows/safety.py"):
        assert len((REPO / rel).read_text(encoding="utf-8").splitlines()) <= 400, rel


def test_a_typo_in_a_safety_section_fails_before_anything_runs(tmp_path):
    config = tmp_path / "curate.toml"
    config.write_text('[stages.safety_filter]\nrequire_reasonning = false\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="require_reasonning"):
        check_config(load_config(config))


def test_run_safety_rejects_options_of_other_flows_and_unknown_stages(tmp_path):
    config = tmp_path / "curate.toml"
    config.write_text(f'workspace = "{tmp_path / "ws"}"\n', encoding="utf-8")
    runner = CliRunner()
    bad_until = runner.invoke(app, ["run", "--flow", "safety", "-c", str(config), "--until", "answers"])
    assert bad_until.exit_code != 0 and "unknown safety stage" in str(bad_until.exception or bad_until.output)
    with_seeds = runner.invoke(app, ["run", "--flow", "safety", "-c", str(config), "--seeds", str(config)])
    assert with_seeds.exit_code != 0
    assert "safety_filter" in runner.invoke(app, ["--help"]).output
