import json

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import IngestConfig, LangIdConfig
from curate.errors import InputError
from curate.records import Seed, polars_schema
from curate.stages.ingest import read_seeds

PROMPTS = ["What happened at Tiananmen Square in 1989?", "Who is the Dalai Lama?", "天安门事件发生了什么？"]


def _read(*paths, **cfg):
    return read_seeds(list(paths), IngestConfig(**cfg), LangIdConfig())


@pytest.fixture
def sources(tmp_path):
    """The same three prompts in every supported format."""
    out = {}
    (tmp_path / "s.txt").write_text("\n".join(PROMPTS) + "\n\n", encoding="utf-8")
    out["txt"] = tmp_path / "s.txt"
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps({"prompt": p}, ensure_ascii=False) for p in PROMPTS), encoding="utf-8")
    out["jsonl"] = tmp_path / "s.jsonl"
    (tmp_path / "s.json").write_text(json.dumps([{"text": p} for p in PROMPTS], ensure_ascii=False), encoding="utf-8")
    out["json"] = tmp_path / "s.json"
    pl.DataFrame({"question": PROMPTS}).write_csv(tmp_path / "s.csv")
    out["csv"] = tmp_path / "s.csv"
    (tmp_path / "s.tsv").write_text("prompt\tx\n" + "\n".join(f"{p}\t1" for p in PROMPTS) + "\n", encoding="utf-8")
    out["tsv"] = tmp_path / "s.tsv"
    pl.DataFrame({"prompt": PROMPTS}).write_parquet(tmp_path / "s.parquet")
    out["parquet"] = tmp_path / "s.parquet"
    import datasets

    datasets.Dataset.from_dict({"prompt": PROMPTS}).save_to_disk(str(tmp_path / "ds"))
    out["datasets"] = tmp_path / "ds"
    return out


def test_every_format_gives_the_same_seeds(sources):
    frames = {fmt: _read(path) for fmt, path in sources.items()}
    ids = {fmt: df["seed_id"].to_list() for fmt, df in frames.items()}
    assert all(v == ids["txt"] for v in ids.values()), ids
    df = frames["jsonl"]
    assert df.schema == polars_schema(Seed)
    assert df["language"].to_list() == ["en", "en", "zh"]
    assert df["source_line"].to_list() == [1, 2, 3]
    assert (df["language_confidence"] > 0.5).all()


def test_language_column_and_default_language(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "Bonjour", "lang": "FR_fr"}\n{"prompt": "hola amigos"}\n', encoding="utf-8")
    df = _read(path)
    assert df["language"].to_list()[0] == "fr"
    assert _read(path, default_language="es")["language"].to_list() == ["fr", "es"]


def test_identical_prompts_are_kept_once(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("Who is Xi Jinping?\n  who is XI jinping?\nWhat is Falun Gong?\n", encoding="utf-8")
    assert _read(path)["text"].to_list() == ["Who is Xi Jinping?", "What is Falun Gong?"]


def test_real_deccp_seeds(deccp_censored):
    df = _read(deccp_censored)
    assert df.height == 95
    assert df["seed_id"].n_unique() == 95
    assert df["language"].value_counts().sort("count")["language"][-1] == "en"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing_column.csv", "id,body\n1,hello\n", r"missing_column.csv:1: field 'text': no prompt column"),
        ("bad_encoding.txt", b"fine line\nsecond\n\xff\xfe bad\n", r"bad_encoding.txt:3: not valid UTF-8"),
        ("empty.jsonl", "", r"empty.jsonl: file is empty"),
        ("blank.txt", "\n \n", r"blank.txt: file is empty"),
        ("malformed.jsonl", '{"prompt": "ok"}\n{"prompt": "broken\n', r"malformed.jsonl:2: malformed JSON"),
        ("not_object.jsonl", '{"prompt": "ok"}\n["a"]\n', r"not_object.jsonl:2: expected a JSON object"),
        ("dup.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "a", "prompt": "z"}\n',
         r"dup.jsonl:3: field 'id': duplicate id 'a' \(first seen on line 1\)"),
        ("empty_text.csv", "prompt\nhello\n\"\"\n", r"empty_text.csv:3: field 'prompt': empty"),
        ("ragged.csv", "prompt\nhello,extra\n", r"ragged.csv:2: row has 2 fields"),
        ("seeds.xlsx", "x", r"unsupported file type"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=match):
        _read(path)


def test_configured_text_field_missing(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"s.jsonl:1: field 'body': column not found"):
        _read(path, text_field="body")


def test_duplicate_ids_across_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "1", "prompt": "x"}\n', encoding="utf-8")
    b.write_text('{"id": "1", "prompt": "y"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"b.jsonl:1: field 'id': duplicate id '1'"):
        _read(a, b)


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE__WORKSPACE", str(tmp_path / "ws"))
    good = tmp_path / "good.txt"
    good.write_text("Who is the Panchen Lama?\n", encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(good)]).exit_code == 0
    before = (tmp_path / "ws" / "stages" / "ingest" / "seeds.parquet").read_bytes()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops}\n', encoding="utf-8")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "curate", "ingest", str(bad)], capture_output=True, text=True,
                          env={**__import__("os").environ, "CURATE__WORKSPACE": str(tmp_path / "ws")})
    assert proc.returncode == 2
    assert "bad.jsonl:2: malformed JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The last good output and its manifest are untouched; the failure is recorded beside them.
    assert (tmp_path / "ws" / "stages" / "ingest" / "seeds.parquet").read_bytes() == before
    manifest = json.loads((tmp_path / "ws" / "stages" / "ingest" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    failure = json.loads((tmp_path / "ws" / "stages" / "ingest" / "failed.json").read_text())
    assert "bad.jsonl:2" in failure["error"]
    assert not list((tmp_path / "ws").rglob("*.tmp"))
