"""Mixing external messages-format sets into a release, and the three output formats."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curate.config import load_config
from curate.errors import ConfigError, InputError
from curate.records import ReleaseRow, empty_frame
from curate.release import MixSource, ReleaseStore, create_release, format_rows, mix_sources
from curate.release.mix import load_mix_source
from tests.test_release_helpers import make_workspace, write_safety_jsonl


def _mix_config(path: Path, **amount) -> str:
    key, value = next(iter(amount.items()))
    return f'\n[[stages.release.mix]]\nname = "synthetic-safety"\npath = "{path}"\n{key} = {value}\nseed = 7\ntopic = "safety"\n'


def test_mix_by_ratio_is_deterministic_and_recorded(tmp_path: Path) -> None:
    safety = write_safety_jsonl(tmp_path / "safety.jsonl")
    config = make_workspace(tmp_path, extra_config=_mix_config(safety, ratio=0.5))
    result = create_release(load_config(config))
    rows = ReleaseStore(tmp_path / "store").read(result.version)
    mixed = rows.filter(pl.col("source") == "synthetic-safety")
    assert mixed.height == 2  # 0.5 x 4 curated rows
    assert set(mixed["topic"]) == {"safety"} and mixed["candidate_id"].is_null().all()
    [mix] = result.manifest["mixes"]
    assert mix | {"skipped": None} == mix | {
        "name": "synthetic-safety",
        "requested": 2,
        "taken": 2,
        "eligible": 13,
        "seed": 7,
        "ratio": 0.5,
        "skipped": None,
    }
    assert mix["skipped"]["not_single_turn"] == 1 and len(mix["sha256"]) == 64
    assert result.manifest["by_source"] == {"curate": 4, "synthetic-safety": 2}

    # Same file and seed, fresh process state: the same rows; another seed: (almost surely) others.
    pool, _ = load_mix_source(MixSource(name="synthetic-safety", path=str(safety), ratio=0.5, seed=7, topic="safety"))
    again, _ = mix_sources(
        rows.filter(pl.col("source") == "curate"),
        [MixSource(name="synthetic-safety", path=str(safety), ratio=0.5, seed=7, topic="safety")],
    )
    assert again.filter(pl.col("source") == "synthetic-safety")["row_id"].to_list() == mixed["row_id"].to_list()
    other, _ = mix_sources(
        rows.filter(pl.col("source") == "curate"), [MixSource(name="s", path=str(safety), count=5, seed=8)]
    )
    assert other.filter(pl.col("source") == "s").height == 5

    think = pool.filter(pl.col("prompt").str.contains("reasoning reply")).row(0, named=True)
    assert (
        think["reasoning"] == "SYNTHETIC reasoning"
        and think["answer"] == "SYNTHETIC refusal."
        and think["language"] == "fr"
    )


def test_mix_count_larger_than_pool_takes_all_and_says_so(tmp_path: Path) -> None:
    safety = write_safety_jsonl(tmp_path / "safety.jsonl", n=3)
    curated = empty_frame(ReleaseRow)
    rows, [mix] = mix_sources(curated, [MixSource(name="s", path=str(safety), count=50)])
    assert rows.height == mix["taken"] == 4 and mix["requested"] == 50


def test_bad_mix_input_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n{"prompt": "no messages"}\n'
    )
    with pytest.raises(InputError) as err:
        load_mix_source(MixSource(name="s", path=str(bad), count=1))
    assert err.value.line == 2 and err.value.field == "messages" and str(bad) in str(err.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": []}\n{not json\n')
    with pytest.raises(InputError, match=r"broken.jsonl:2: malformed JSON"):
        load_mix_source(MixSource(name="s", path=str(broken), count=1))
    with pytest.raises(InputError, match="mix source not found"):
        load_mix_source(MixSource(name="s", path=str(tmp_path / "nope.jsonl"), count=1))
    with pytest.raises(ValueError, match="exactly one of ratio or count"):
        MixSource(name="s", path="x.jsonl", ratio=0.1, count=3)
    config = make_workspace(tmp_path, extra_config='\n[[stages.release.mix]]\nname = "curate"\npath = "x"\ncount = 1\n')
    with pytest.raises(ConfigError, match="mix names"):
        create_release(load_config(config))


def test_output_formats(tmp_path: Path) -> None:
    config = make_workspace(tmp_path)
    rows = ReleaseStore(tmp_path / "store").read(create_release(load_config(config)).version)
    messages = format_rows(rows, "messages")
    first = messages.row(0, named=True)
    user, assistant = first["messages"]
    assert user == {"role": "user", "content": rows["prompt"][0]}
    assert assistant["content"] == f"<think>\n{rows['reasoning'][0]}\n</think>\n\n{rows['answer'][0]}"
    assert {"row_id", "language", "topic", "seed_ids", "candidate_id", "source"} <= set(messages.columns)
    assert "prompt" not in messages.columns

    reasoning = format_rows(rows, "reasoning")
    assert reasoning.select("prompt", "reasoning", "response").row(0) == rows.select(
        "prompt", "reasoning", "answer"
    ).row(0)
    plain = format_rows(rows, "prompt_response")
    assert "reasoning" not in plain.columns and plain["response"].to_list() == rows["answer"].to_list()
    no_reasoning = format_rows(rows.with_columns(reasoning=pl.lit(None, pl.String)), "messages")
    assert no_reasoning.row(0, named=True)["messages"][1]["content"] == rows["answer"][0]
    with pytest.raises(ConfigError, match="unknown output format 'chatml'"):
        format_rows(rows, "chatml")
    json.dumps(messages.head(1).to_dicts())  # plain JSON-serializable structures
