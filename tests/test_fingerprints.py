"""Fingerprints see every input: editing a template, a rules file or a stoplist reruns exactly
the stages that depend on it (and those whose input tables changed), and no loader cache keeps
serving the old file. Where an endpoint is, and how hard it is driven, is not an input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.prompts import PROMPTS_DIR, render_prompt
from curate.refusal import RULES_PATH, load_rules
from curate.stages.keywords import bundled_stopwords, stopwords_for
from curate.stages.keywords.config import KeywordsConfig
from curate.workspace import Workspace


def curate(*args: str) -> str:
    result = CliRunner().invoke(app, list(args) if args[0] == "ingest" else [*args, "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def states(output: str) -> dict[str, str]:
    """`stage: done ...` / `stage: skipped (unchanged) ...` lines as {stage: done|skipped}."""
    found = {}
    for line in output.splitlines():
        stage, sep, rest = line.partition(": ")
        if sep and rest.startswith(("done", "skipped")):
            found[stage.strip()] = "skipped" if rest.startswith("skipped") else "done"
    return found


def test_editing_a_stoplist_reruns_keywords_and_nothing_before_it(tmp_path, deccp_censored, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stoplist = tmp_path / "stop.txt"
    stoplist.write_text("# extra stopwords\n", encoding="utf-8")
    (tmp_path / "curate.toml").write_text(
        'workspace = "ws"\nlanguages = ["en", "zh"]\n[stages.keywords]\nstopword_files = ["stop.txt"]\n', encoding="utf-8")
    curate("ingest", str(deccp_censored))
    assert states(curate("keywords")) == {"keywords": "done"}
    ws = Workspace(tmp_path / "ws")
    first = ws.read("keywords/keywords")["keyword"].to_list()
    assert str(stoplist.resolve()) in {str(Path(p).resolve()) for p in ws.manifest("keywords")["files"]}
    assert states(curate("ingest", str(deccp_censored))) == {"ingest": "skipped"}
    assert states(curate("keywords")) == {"keywords": "skipped"}

    # The top keyword becomes a stopword: the keywords stage reruns and drops it; ingest does not rerun.
    top = next(k for k in first if " " not in k)
    stoplist.write_text(f"# extra stopwords\n{top}\n", encoding="utf-8")
    assert states(curate("ingest", str(deccp_censored))) == {"ingest": "skipped"}
    assert states(curate("keywords")) == {"keywords": "done"}
    assert top not in ws.read("keywords/keywords")["keyword"].to_list()
    assert states(curate("keywords")) == {"keywords": "skipped"}


def test_loaders_never_serve_a_file_older_than_its_last_edit(tmp_path):
    template = tmp_path / "t.j2"
    template.write_text("first {{ x }}", encoding="utf-8")
    assert render_prompt(str(template), x=1) == "first 1"
    template.write_text("second version {{ x }}", encoding="utf-8")
    assert render_prompt(str(template), x=1) == "second version 1"

    rules = tmp_path / "rules.toml"
    shutil.copy(RULES_PATH, rules)
    before = load_rules(str(rules))
    rules.write_text(rules.read_text(encoding="utf-8") + '\n[pivot_extra]\nen = ["zzz never said"]\n', encoding="utf-8")
    with pytest.raises(Exception, match="unknown rule groups"):
        load_rules(str(rules))
    shutil.copy(RULES_PATH, rules)
    assert load_rules(str(rules)) == before

    stop = tmp_path / "stop.txt"
    stop.write_text("alpha\n", encoding="utf-8")
    config = KeywordsConfig(stopword_files=[str(stop)])
    assert "alpha" in stopwords_for("en", config)
    stop.write_text("beta\n", encoding="utf-8")
    words = stopwords_for("en", config)
    assert "beta" in words and "alpha" not in words
    assert bundled_stopwords("en") == bundled_stopwords("en")


@pytest.mark.slow
@pytest.mark.llm
def test_editing_a_template_reruns_that_stage_only(tmp_path, deccp_censored, llm_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    template = tmp_path / "questions.j2"
    shutil.copy(PROMPTS_DIR / "question_expansion.j2", template)
    (tmp_path / "curate.toml").write_text(
        f'workspace = "ws"\nlanguages = ["en", "zh"]\n[llm]\nbase_url = "{llm_server.base_url}"\nmax_concurrency = 2\n'
        '[stages.questions]\ntemplate = "questions.j2"\nmax_keywords = 1\nper_keyword = 1\nmax_rounds = 1\n'
        'seed_examples = 0\noverrides = { temperature = 0.0, max_tokens = 64 }\n', encoding="utf-8")
    curate("ingest", str(deccp_censored))
    curate("keywords")
    assert states(curate("questions")) == {"questions": "done"}
    assert states(curate("questions")) == {"questions": "skipped"}

    template.write_text(template.read_text(encoding="utf-8") + "\nKeep each question short.\n", encoding="utf-8")
    assert states(curate("keywords")) == {"keywords": "skipped"}
    assert states(curate("questions")) == {"questions": "done"}
    assert states(curate("questions")) == {"questions": "skipped"}

    # The same server by another name, driven with other limits: no reply changes, nothing reruns.
    config = tmp_path / "curate.toml"
    moved = config.read_text(encoding="utf-8").replace("127.0.0.1", "localhost")
    config.write_text(moved.replace("max_concurrency = 2", "max_concurrency = 1\ntimeout_s = 300\nmax_retries = 1"),
                      encoding="utf-8")
    assert states(curate("questions")) == {"questions": "skipped"}
    # A sampling setting changes the replies: the stage reruns.
    config.write_text(config.read_text(encoding="utf-8").replace("max_tokens = 64", "max_tokens = 48"), encoding="utf-8")
    assert states(curate("questions")) == {"questions": "done"}


@pytest.mark.slow
@pytest.mark.llm
def test_editing_the_refusal_rules_reruns_the_stages_that_use_them(tmp_path, llm_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("What happened at Tiananmen Square in 1989?\nWho is the Panchen Lama?\n", encoding="utf-8")
    rules = tmp_path / "rules.toml"
    shutil.copy(RULES_PATH, rules)
    (tmp_path / "curate.toml").write_text(
        f'workspace = "ws"\nlanguages = ["en"]\n[llm]\nbase_url = "{llm_server.base_url}"\nmax_concurrency = 2\n'
        '[stages.blocked]\nkeep = "all"\noverrides = { temperature = 0.0, max_tokens = 32 }\n'
        '[stages.blocked.refusal]\nrules_path = "rules.toml"\n'
        '[stages.keywords]\nmin_count = 1\n', encoding="utf-8")
    curate("ingest", str(seeds))
    assert states(curate("blocked")) == {"blocked": "done"}
    assert states(curate("keywords")) == {"keywords": "done"}

    # A rules edit that changes no verdict: blocked reruns (its replies come from the LLM cache);
    # its seeds table is unchanged, so keywords, which reads it, is not rerun.
    rules.write_text(rules.read_text(encoding="utf-8") + "\n# reviewed\n", encoding="utf-8")
    assert states(curate("ingest", str(seeds))) == {"ingest": "skipped"}
    assert states(curate("blocked")) == {"blocked": "done"}
    assert states(curate("keywords")) == {"keywords": "skipped"}
    assert states(curate("blocked")) == {"blocked": "skipped"}
    assert any(os.path.samefile(p, rules) for p in Workspace(tmp_path / "ws").manifest("blocked")["files"])
