"""`curate eval` argument errors: one clear message, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.cli.eval import parse_endpoint_spec
from curate.config import EndpointConfig
from curate.errors import ConfigError


def test_endpoint_specs_lay_options_over_the_llm_section():
    base = EndpointConfig(model="judge-model", max_tokens=512, api_key_env="MY_KEY")
    name, ep = parse_endpoint_spec("tuned=http://10.0.0.5:8000/v1,model=org/tuned,temperature=0.6,max_tokens=64", base)
    assert name == "tuned"
    assert (ep.base_url, ep.model, ep.temperature, ep.max_tokens, ep.api_key_env) == (
        "http://10.0.0.5:8000/v1", "org/tuned", 0.6, 64, "MY_KEY")
    with pytest.raises(ConfigError, match="environment"):
        parse_endpoint_spec("x=http://h/v1,api_key=sk-123", base)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_endpoint_spec("x=http://h/v1,oops", base)


def test_bad_endpoint_and_set_arguments_are_clear_errors(tmp_path: Path):
    runner = CliRunner()
    bad = runner.invoke(app, ["eval", "--endpoint", "no-url-here", "--out", str(tmp_path)])
    assert bad.exit_code != 0
    assert "NAME=URL" in str(bad.exception) or "NAME=URL" in bad.output
    bad = runner.invoke(app, ["eval", "--endpoint", "a=http://127.0.0.1:1/v1,temperature=hot", "--out", str(tmp_path)])
    assert "temperature" in str(bad.exception) + bad.output
    bad = runner.invoke(app, ["eval", "--set", "nope", "--out", str(tmp_path)])
    assert "unknown eval set" in str(bad.exception) + bad.output
