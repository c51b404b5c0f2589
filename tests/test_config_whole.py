"""The whole config is checked before anything runs: unknown sections and keys (with a "did you
mean"), out-of-range values and renamed names fail first, naming the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from curate import config as config_module
from curate.cli import app, register_renamed
from curate.config import load_config
from curate.errors import ConfigError, CurateError
from curate.validate import check_config

BASE = 'workspace = "ws"\nlanguages = ["en", "zh"]\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "curate.toml"
    path.write_text(BASE + body, encoding="utf-8")
    return path


def fails_before_running(tmp_path: Path, args: list[str], body: str) -> str:
    """Run a command over a bad config: it must fail as a user error naming the file, and leave no workspace."""
    config = write(tmp_path, body)
    result = CliRunner().invoke(app, [*args, "-c", str(config)])
    assert isinstance(result.exception, CurateError), (result.output, result.exception)
    message = str(result.exception)
    assert str(config) in message
    assert not (tmp_path / "ws").exists()
    return message


@pytest.mark.parametrize("command", [["ingest", "seeds.txt"], ["keywords"], ["answers"], ["status"], ["detect-refusals", "x.jsonl"]])
def test_a_misspelled_section_fails_every_command_before_it_runs(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seeds.txt").write_text("What happened in 1989?\n", encoding="utf-8")
    message = fails_before_running(tmp_path, command, "[stages.answer]\ncandidates_per_prompt = 2\n")
    assert "[stages.answer]" in message and "did you mean 'answers'" in message


def test_a_misspelled_key_in_a_later_stage_fails_before_the_first_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seeds.txt").write_text("What happened in 1989?\n", encoding="utf-8")
    message = fails_before_running(tmp_path, ["ingest", "seeds.txt"], "[stages.answers]\ncandidates_per_promt = 2\n")
    assert "stages.answers.candidates_per_promt: unknown key; did you mean 'candidates_per_prompt'?" in message


def test_a_misspelled_top_level_key_names_the_close_one(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[llm]\ntemprature = 0.5\n"))
    assert "llm.temprature: unknown key; did you mean 'temperature'?" in str(err.value)
    assert str(tmp_path / "curate.toml") in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'llm'"):
        load_config(write(tmp_path, "[lm]\nmodel = 'x'\n"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[llm]\ntemperature = 50\n", "llm.temperature: Input should be less than or equal to 2"),
        ("[llm]\ntemperature = -0.1\n", "llm.temperature: Input should be greater than or equal to 0"),
        ("[llm]\nmax_tokens = 0\n", "llm.max_tokens: Input should be greater than or equal to 1"),
        ("[llm]\ntop_p = 1.5\n", "llm.top_p"),
        ("[stages.answers]\noverrides = { temperature = 50 }\n", "stages.answers.overrides.temperature"),
        ("[stages.blocked]\nmin_refusal_rate = 1.5\n", "stages.blocked.min_refusal_rate"),
        ("[stages.questions]\nper_keyword = 0\n", "stages.questions.per_keyword: Input should be greater than or equal to 1"),
        ("[stages.dedupe]\nthreshold = 2\n", "stages.dedupe.threshold"),
        ("[stages.translate]\nlanguages = ['en', 'xx']\n", "unknown language codes ['xx']"),
        ("[stages.orchestrate]\ntask_runner = 'spark'\n", "stages.orchestrate.task_runner"),
        ("[stages.eval]\nsamples = 0\n", "stages.eval.samples"),
        ("[stages.eval.endpoints.a]\ntemperature = 9\n", "stages.eval.endpoints.a.temperature"),
        ("[stages.review]\nbatch_size = 0\n", "stages.review.batch_size"),
        ("[stages.refusal]\nthreshold = 3\n", "stages.refusal.threshold"),
    ],
)
def test_out_of_range_values_are_errors_naming_file_and_key(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        check_config(load_config(path))
    assert expected in str(err.value) and str(path) in str(err.value)


def test_languages_must_be_iso_639_1_codes(tmp_path):
    path = tmp_path / "curate.toml"
    path.write_text('languages = ["en", "klingon"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown language codes \['klingon'\]") as err:
        load_config(path)
    assert str(path) in str(err.value)
    path.write_text('languages = ["en", "pt-BR", "zh"]\n', encoding="utf-8")
    assert load_config(path).languages == ["en", "pt-BR", "zh"]


def test_the_default_config_and_the_init_template_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_config(load_config(None, environ={}))
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    check_config(load_config(tmp_path / "curate.toml"))


def test_curate_run_and_serve_check_the_config_before_any_flow_or_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    body = '[stages.orchestrate]\nseeds = ["seeds.txt"]\n[stages.qestions]\nper_keyword = 2\n'
    for command in (["run"], ["serve"]):
        message = fails_before_running(tmp_path, command, body)
        assert "did you mean 'questions'" in message and "Prefect" not in message


def test_renamed_settings_and_commands_name_the_new_one(tmp_path, monkeypatch):
    monkeypatch.setitem(config_module.RENAMED, "stages.answers.samples", "stages.answers.candidates_per_prompt")
    monkeypatch.setitem(config_module.RENAMED, "stages.judge", "stages.refusal")
    path = write(tmp_path, "[stages.answers]\nsamples = 2\n")
    with pytest.raises(ConfigError, match="stages.answers.samples: renamed to 'stages.answers.candidates_per_prompt'"):
        check_config(load_config(path))
    path = write(tmp_path, "[stages.judge]\nmode = 'rules'\n")
    with pytest.raises(ConfigError, match=r"\[stages.judge\]: renamed to \[stages.refusal\]"):
        check_config(load_config(path))

    commands = typer.Typer()
    commands.command()(lambda: None)
    register_renamed(commands, {"detect": "detect-refusals"})
    result = CliRunner().invoke(commands, ["detect", "file.jsonl", "--mode", "rules"])
    assert isinstance(result.exception, CurateError)
    assert str(result.exception) == "`curate detect` was renamed: use `curate detect-refusals`"
