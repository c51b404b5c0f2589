"""`[stages.*] overrides`: sampling parameters pass the whole-config check and reach each request's
body (seen on the fault injector, tests/fault_server.py, used here only to record request bodies);
a known parameter of the wrong type, a key curate sets itself, an endpoint setting and a typo are
errors naming the file, the section and the key."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import EndpointConfig, load_config
from curate.errors import ConfigError
from curate.llm import complete_frame
from curate.validate import check_config
from curate.workspace import Workspace
from tests.fault_server import FaultConfig, FaultServer
from tests.test_answers_seed import config_with
from tests.test_answers_stage import put_translations, translations_from

PASSED = ('stop = ["</answer>", "###"], top_k = 20, min_p = 0.05, presence_penalty = 0.5, frequency_penalty = 0.25, '
          'repetition_penalty = 1.1, repeat_penalty = 1.1, min_tokens = 2, chat_template_kwargs = { enable_thinking = false }, '
          'mirostat = 2, typical_p = 0.9, top_a = 0.1, max_tokens = 64')


def check(tmp_path, overrides: str, section: str = "answers") -> str:
    """The ConfigError's text for a config whose [stages.<section>] has `overrides`."""
    path = tmp_path / "curate.toml"
    path.write_text(f'workspace = "ws"\n[stages.{section}]\n{overrides}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        check_config(load_config(path))
    assert str(path) in str(err.value)
    return str(err.value)


def test_sampling_parameters_reach_the_request_body(tmp_path, deccp_censored, monkeypatch):
    with FaultServer(FaultConfig(reply="<think>Thinking about it.</think>An answer in English {request}.")) as server:
        monkeypatch.chdir(tmp_path)
        config_with(tmp_path, PASSED, server.base_url)
        check_config(load_config(tmp_path / "curate.toml"))
        put_translations(Workspace(tmp_path / "ws"), translations_from(deccp_censored))
        result = CliRunner().invoke(app, ["answers", "--quiet"])
        assert result.exit_code == 0, result.output
        bodies = [json.loads(b) for b in server.bodies]
    assert len(bodies) == 9  # 3 usable translations x K = 3
    for body in bodies:
        assert body["stop"] == ["</answer>", "###"] and body["top_k"] == 20 and body["min_p"] == 0.05
        assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
        assert body["repetition_penalty"] == 1.1 and body["repeat_penalty"] == 1.1 and body["min_tokens"] == 2
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        # Parameters curate does not know go as they are.
        assert body["mirostat"] == 2 and body["typical_p"] == 0.9 and body["top_a"] == 0.1
        assert body["max_tokens"] == 64 and body["temperature"] == 0.6  # the endpoint's default stays
        assert "fold_system_prompt" not in body


@pytest.mark.parametrize(("value", "expected"), [
    ('top_k = "20"', "stages.answers.overrides.top_k: Input should be a valid integer, got '20'"),
    ("top_k = 2.5", "stages.answers.overrides.top_k: Input should be a valid integer, got 2.5"),
    ("stop = 5", "stages.answers.overrides.stop: should be a string or a list of strings, got 5"),
    ("stop = [1, 2]", "stages.answers.overrides.stop: should be a string or a list of strings, got [1, 2]"),
    ('min_p = "low"', "stages.answers.overrides.min_p: Input should be a valid number, got 'low'"),
    ("min_p = 3.0", "stages.answers.overrides.min_p: Input should be less than or equal to 1, got 3.0"),
    ("presence_penalty = true", "stages.answers.overrides.presence_penalty: Input should be a valid number, got True"),
    ('chat_template_kwargs = "x"', "stages.answers.overrides.chat_template_kwargs: Input should be a valid dictionary"),
    ("fold_system_prompt = 1", "stages.answers.overrides.fold_system_prompt: Input should be a valid boolean"),
    ('seed = "7"', "stages.answers.overrides.seed: Input should be a valid integer"),
    ("temperature = 50", "stages.answers.overrides.temperature: Input should be less than or equal to 2"),
])
def test_a_known_parameter_of_the_wrong_type_is_named(tmp_path, value, expected):
    assert expected in check(tmp_path, f"overrides = {{ {value} }}")


NOT_OVERRIDES = {
    'model = "other"': "stages.answers.overrides.model: not an override: set by the endpoint's `model`",
    "n = 4": "stages.answers.overrides.n: not an override: curate sends one request per candidate",
    "stream = true": "stages.answers.overrides.stream: not an override",
    'response_format = { type = "json_object" }': "stages.answers.overrides.response_format: not an override: set by curate",
    "timeout_s = 5": "stages.answers.overrides.timeout_s: an endpoint setting, not a request parameter: set it on the endpoint ([llm]",
    "max_concurrency = 4": "stages.answers.overrides.max_concurrency: an endpoint setting",
    'base_url = "http://x/v1"': "stages.answers.overrides.base_url: an endpoint setting",
}


@pytest.mark.parametrize(("key", "expected"), NOT_OVERRIDES.items())
def test_keys_curate_sets_itself_and_endpoint_settings_are_errors(tmp_path, key, expected):
    assert expected in check(tmp_path, f"overrides = {{ {key} }}")


@pytest.mark.parametrize(("key", "close"), [("temprature", "temperature"), ("top-k", "top_k"), ("maxTokens", "max_tokens"),
                                            ("presense_penalty", "presence_penalty"), ("sed", "seed")])
def test_a_typo_of_a_known_key_names_it_and_lists_every_accepted_one(tmp_path, key, close):
    message = check(tmp_path, f'overrides = {{ "{key}" = 1 }}')
    assert f"stages.answers.overrides.{key}: unknown key; did you mean '{close}'?" in message
    known = message.split("(known: ")[1].split(";")[0].split(", ")
    assert {"seed", "stop", "top_k", "min_p", "temperature", "top_p", "max_tokens", "presence_penalty",
            "frequency_penalty", "repetition_penalty", "chat_template_kwargs", "fold_system_prompt"} <= set(known)


@pytest.mark.parametrize(("section", "body", "expected"), [
    ("safety_filter", 'satisfaction_overrides = { top_k = "x" }', "stages.safety_filter.satisfaction_overrides.top_k"),
    ("safety_filter", "judge_overrides = { n = 2 }", "stages.safety_filter.judge_overrides.n"),
    ("judge", "overrides = { stop = 1 }", "stages.judge.overrides.stop"),
    ("refusal", "judge_overrides = { timeout_s = 1 }", "stages.refusal.judge_overrides.timeout_s"),
    ("eval", "generation = { stop = false }", "stages.eval.generation.stop"),
    ("blocked.refusal", "judge_overrides = { top_k = 1.5 }", "stages.blocked.refusal.judge_overrides.top_k"),
])
def test_every_stages_overrides_are_checked(tmp_path, section, body, expected):
    assert expected in check(tmp_path, body, section)


def test_every_problem_is_named_at_once(tmp_path):
    message = check(tmp_path, 'overrides = { top_k = "20", model = "x", timeout_s = 1 }')
    for key in ("top_k", "model", "timeout_s"):
        assert f"stages.answers.overrides.{key}:" in message


PYTHON_NOT_OVERRIDES = {
    "model": ("other", "overrides.model: not an override: set by the endpoint's `model`"),
    "messages": ([{"role": "user", "content": "x"}], "overrides.messages: not an override"),
    "n": (4, "overrides.n: not an override: curate sends one request per candidate"),
    "stream": (True, "overrides.stream: not an override: curate reads whole replies"),
    "response_format": ({"type": "json_object"}, "overrides.response_format: not an override: set by curate"),
    "timeout_s": (1, "overrides.timeout_s: an endpoint setting, not a request parameter"),
    "base_url": ("http://x/v1", "overrides.base_url: an endpoint setting"),
    "top_k": ("20", "overrides.top_k: Input should be a valid integer, got '20'"),
    "temprature": (0.1, "overrides.temprature: unknown key; did you mean 'temperature'?"),
}


@pytest.mark.parametrize(("key", "value", "expected"), [(k, v, e) for k, (v, e) in PYTHON_NOT_OVERRIDES.items()])
def test_complete_frame_from_python_checks_overrides_like_the_config_and_sends_nothing(key, value, expected):
    """From Python, `overrides` go through the config's check: before, only `n` was refused and the
    rest went silently into the body (a `model` or `response_format` there replaced curate's own)."""
    prompt = pl.DataFrame({"request_id": ["r"], "prompt": ["Say hello."]})
    with FaultServer(FaultConfig(reply="hello")) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model="m", timeout_s=5.0)
        with pytest.raises(ValueError) as err:
            complete_frame(prompt, endpoint, overrides={key: value})
        assert expected in str(err.value)
        # Every problem at once; a key the server may know (typical_p) and a None (drops a default) pass.
        with pytest.raises(ValueError) as both:
            complete_frame(prompt, endpoint, overrides={"model": "x", "stream": True, "typical_p": 0.9, "top_p": None})
        assert "overrides.model:" in str(both.value) and "overrides.stream:" in str(both.value)
        assert "typical_p" not in str(both.value) and "top_p" not in str(both.value)
        assert server.bodies == []
        out = complete_frame(prompt, endpoint, overrides={"typical_p": 0.9, "top_p": None, "max_tokens": 8})
        assert out["status"].to_list() == ["ok"]
        body = json.loads(server.bodies[0])
        assert body["typical_p"] == 0.9 and "top_p" not in body and body["model"] == "m"


@pytest.mark.slow
@pytest.mark.llm
def test_the_real_server_takes_checked_overrides(tmp_path, llm_endpoint):
    """Checked overrides from a config, sent to the real llama.cpp server: greedy (top_k = 1) with a
    stop string ends the reply where the same reply without it has its first full stop."""
    path = tmp_path / "curate.toml"
    path.write_text('workspace = "ws"\n[stages.answers]\noverrides = { top_k = 1, min_p = 0.0, repeat_penalty = 1.0, '
                    'presence_penalty = 0.0, seed = 3, typical_p = 1.0, max_tokens = 48, stop = ["."] }\n', encoding="utf-8")
    overrides = check_config(load_config(path)).stages["answers"]["overrides"]
    prompt = pl.DataFrame({"request_id": ["cats"], "prompt": ["Write three short sentences about cats."]})
    stopped = complete_frame(prompt, llm_endpoint, overrides=overrides)
    free = complete_frame(prompt, llm_endpoint, overrides={k: v for k, v in overrides.items() if k != "stop"})
    assert stopped["status"].to_list() == ["ok"] and free["status"].to_list() == ["ok"], stopped["error"].to_list()
    whole, cut = free["content"][0], stopped["content"][0]
    assert "." in whole and "." not in cut
    assert cut.strip() == whole.split(".")[0].strip()
