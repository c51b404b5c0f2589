"""`seed` in `[stages.answers] overrides`: accepted by the whole-config check (its type checked),
and the K candidates of a translation are sent seed, seed + 1, ... (counted on the fault injector,
tests/fault_server.py, used here only to see the request bodies)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.errors import ConfigError
from curate.validate import check_config
from curate.workspace import Workspace
from tests.fault_server import FaultConfig, FaultServer
from tests.test_answers_stage import put_translations, translations_from


def config_with(tmp_path, overrides: str, base_url: str = "http://127.0.0.1:9/v1"):
    path = tmp_path / "curate.toml"
    path.write_text(f'workspace = "ws"\n[llm]\nbase_url = "{base_url}"\nmax_retries = 0\n'
                    f'[stages.answers]\ncandidates_per_prompt = 3\nrequire_reasoning = false\noverrides = {{ {overrides} }}\n',
                    encoding="utf-8")
    return path


def test_a_seed_in_answers_overrides_passes_the_check(tmp_path):
    cfg = check_config(load_config(config_with(tmp_path, "seed = 7, max_tokens = 64")))
    assert cfg.stages["answers"]["overrides"]["seed"] == 7


@pytest.mark.parametrize("bad", ['"7"', "7.5", "true"])
def test_a_seed_of_the_wrong_type_is_named(tmp_path, bad):
    with pytest.raises(ConfigError) as err:
        check_config(load_config(config_with(tmp_path, f"seed = {bad}")))
    assert "stages.answers.overrides.seed" in str(err.value) and "curate.toml" in str(err.value)


def test_the_k_candidates_are_sent_distinct_seeds(tmp_path, deccp_censored, monkeypatch):
    with FaultServer(FaultConfig(reply="<think>Thinking about it.</think>An answer in English {request}.")) as server:
        monkeypatch.chdir(tmp_path)
        config_with(tmp_path, "seed = 7, max_tokens = 64", server.base_url)
        put_translations(Workspace(tmp_path / "ws"), translations_from(deccp_censored))
        result = CliRunner().invoke(app, ["answers", "--quiet"])
        assert result.exit_code == 0, result.output
        bodies = [json.loads(b) for b in server.bodies]
    seeds = defaultdict(list)
    for body in bodies:
        seeds[json.dumps(body["messages"])].append(body["seed"])
    # 3 usable translations (the flagged one is not sent), each asked K = 3 times with seeds 7, 8, 9.
    assert len(bodies) == 9 and len(seeds) == 3
    assert all(sorted(s) == [7, 8, 9] for s in seeds.values())
