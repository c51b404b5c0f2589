import json
import logging

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import Config, EndpointConfig, config_hash, load_config
from curate.errors import ConfigError
from curate.secrets import redact
from curate.stages.answers import AnswersConfig


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.llm.temperature == 0.6 and cfg.llm.top_p == 0.95
    assert len(cfg.languages) == 11 and cfg.languages[0] == "en"


def test_file_then_env_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('workspace = "w1"\n[llm]\nmodel = "r1"\nmax_concurrency = 4\n')
    cfg = load_config(path, environ={"CURATE__LLM__MAX_CONCURRENCY": "32", "CURATE__LANGUAGES": '["en", "zh"]'})
    assert cfg.workspace == "w1" and cfg.llm.model == "r1"
    assert cfg.llm.max_concurrency == 32
    assert cfg.languages == ["en", "zh"]


def test_invalid_value_names_the_setting(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm]\nmax_concurrency = 0\n")
    with pytest.raises(ConfigError, match=r"c.toml: llm.max_concurrency"):
        load_config(path, environ={})


def test_unknown_setting_is_rejected(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm]\nbase_ulr = 'x'\n")
    with pytest.raises(ConfigError, match=r"llm.base_ulr"):
        load_config(path, environ={})


def test_broken_toml_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})


def test_secret_in_file_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm]\napi_key = 'sk-live-123456'\n")
    with pytest.raises(ConfigError, match="secrets come only from the environment"):
        load_config(path, environ={})


def test_secret_never_reaches_manifest_logs_or_run_files(tmp_path, monkeypatch, caplog, deccp_censored):
    secret = "sk-test-DO-NOT-LEAK-7f3a9c"
    monkeypatch.setenv("CURATE_LLM_API_KEY", secret)
    monkeypatch.setenv("CURATE__WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.llm.api_key() == secret
    with caplog.at_level(logging.INFO):
        logging.getLogger("curate.test").info("calling endpoint with key %s", secret)
        result = CliRunner().invoke(app, ["-v", "ingest", str(deccp_censored)])
    assert result.exit_code == 0, result.output
    assert secret not in caplog.text
    assert secret not in result.output
    for f in (tmp_path / "ws").rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    manifest = json.loads((tmp_path / "ws" / "stages" / "ingest" / "manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_token_limits_are_settings_not_secrets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[llm]\nmax_tokens = 256\ntokens_per_minute = 100000\n[stages.questions]\noverrides = { max_tokens = 64 }\n")
    cfg = load_config(path, environ={})
    assert cfg.llm.max_tokens == 256 and cfg.stages["questions"]["overrides"]["max_tokens"] == 64
    for key in ("hf_token", "password", "secret_key", "aws_access_key"):
        path.write_text(f"[x]\n{key} = 'abc'\n")
        with pytest.raises(ConfigError, match="looks like a secret"):
            load_config(path, environ={})


def test_shipped_template_loads(repo_root):
    cfg = load_config(repo_root / "curate" / "templates" / "curate.toml", environ={})
    assert cfg.llm.max_tokens == 1024


def test_redact_masks_env_secrets():
    env = {"MY_API_KEY": "abcdef123456", "HOME": "/root", "CURATE__LLM__MAX_TOKENS": "1234567"}
    assert redact("key=abcdef123456 home=/root n=1234567", env) == "key=*** home=/root n=1234567"


def test_where_an_endpoint_is_and_how_hard_it_is_driven_stay_out_of_the_config_hash():
    base = AnswersConfig(generator=EndpointConfig(model="r1", temperature=0.6))
    moved = AnswersConfig(generator=EndpointConfig(
        model="r1", temperature=0.6, base_url="https://gpu-node-7:8000/v1", api_key_env="OTHER_KEY", timeout_s=600,
        max_concurrency=256, requests_per_minute=600, tokens_per_minute=10**6, max_retries=0))
    assert config_hash(base) == config_hash(moved)
    assert config_hash(Config(llm=base.generator)) == config_hash(Config(llm=moved.generator))  # at any depth
    for changed in ({"model": "r1-distill"}, {"temperature": 0.7}, {"top_p": 0.5}, {"max_tokens": 64},
                    {"structured_output": "off"}):
        other = AnswersConfig(generator=EndpointConfig(model="r1", temperature=0.6).model_copy(update=changed))
        assert config_hash(other) != config_hash(base), changed
    assert config_hash(AnswersConfig(generator=base.generator, candidates_per_prompt=2)) != config_hash(base)
    # The dump a manifest shows keeps every field: only the hash leaves some out.
    assert moved.generator.model_dump()["base_url"] == "https://gpu-node-7:8000/v1"
