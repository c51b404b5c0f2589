"""Dedupe without a model: normalization, exact duplicates, keep policies, bad input, model
resolution errors, the near-duplicate search on planted vectors, and the workspace stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import ConfigError, InputError
from curate.stages.dedupe import DedupeConfig, dedupe_frame, dedupe_stage, near_pairs, normalize_texts, resolve_model
from curate.workspace import Workspace

EXACT = DedupeConfig(semantic=False)


def _frame(texts, languages=None, groups=None, **extra) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame({
        "translation_id": [f"t{i}" for i in range(n)],
        "question_id": groups or [f"q{i}" for i in range(n)],
        "language": languages or ["en"] * n,
        "text": texts,
        **extra,
    })


def _run(df: pl.DataFrame, config: DedupeConfig = EXACT, **kwargs):
    return dedupe_frame(df, config, id_col="translation_id", **kwargs)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What happened in 1989?", "what happened in 1989"),  # case, punctuation
        ("What  happened\tin\n1989 ?", "What happened in 1989?"),  # whitespace
        ("ＷＨＡＴ　happened？", "what happened"),  # NFKC full-width letters, ideographic space and ？
        ("“Tank Man” — who was he?", "tank man who was he"),  # curly quotes, dashes
        ("1989年天安门广场发生了什么？", "1989年天安门广场发生了什么"),  # CJK punctuation
        ("¿Qué pasó en Tiananmen?", "qué pasó en tiananmen"),
    ],
)
def test_normalization_makes_equal(a: str, b: str) -> None:
    assert normalize_texts([a])[0] == normalize_texts([b])[0]


def test_normalization_keeps_meaningful_differences() -> None:
    a, b, c, d = normalize_texts(["Is 5% a lot?", "Is 5 a lot?", "Was ist los?", "Was ist Los?"])
    assert a != b  # symbols are not punctuation
    assert c == d  # but case never matters
    assert normalize_texts(["?!...", "   ", None]) == [None, None, None]


def test_exact_duplicates_within_language_only() -> None:
    df = _frame(
        ["What is the Great Firewall?", "what is the great firewall", "What is the Great Firewall?", "?!", "?!"],
        languages=["en", "en", "fr", "en", "en"],
    )
    out = _run(df)
    kept = out.tables["translations"]
    assert kept["translation_id"].to_list() == ["t0", "t2", "t3", "t4"]  # punctuation-only rows never merge
    clusters = out.tables["clusters"]
    t1 = clusters.filter(pl.col("translation_id") == "t1").row(0, named=True)
    assert t1["cluster_id"] == "t0" and t1["duplicate_reason"] == "exact" and not t1["kept"]
    assert t1["similarity_to_representative"] == 1.0
    assert out.report["dedupe"]["exact_duplicates"] == 1

    cross = _run(df, DedupeConfig(semantic=False, cross_language=True))
    assert cross.tables["translations"]["translation_id"].to_list() == ["t0", "t3", "t4"]


def test_translations_of_the_kept_question_are_kept_in_cross_language_mode() -> None:
    # q0's French row is identical to q0's English row (an untranslated name): same group, kept.
    df = _frame(["Tiananmen", "Tiananmen", "tiananmen!"], languages=["en", "fr", "en"], groups=["q0", "q0", "q1"])
    out = _run(df, DedupeConfig(semantic=False, cross_language=True))
    clusters = out.tables["clusters"].sort("translation_id")
    assert clusters["cluster_id"].to_list() == ["t0", "t0", "t0"]
    assert clusters["kept"].to_list() == [True, True, False]
    assert out.tables["translations"].filter(pl.col("translation_id") == "t1")["is_representative"].to_list() == [False]


@pytest.mark.parametrize(
    ("keep", "expected"),
    [("first", "t0"), ("longest", "t1"), ("best", "t2")],
)
def test_keep_policies(keep: str, expected: str) -> None:
    df = _frame(["Why is Falun Gong banned", "Why is Falun Gong banned?!?", "why is falun gong banned."],
                faithfulness=[0.5, None, 0.9])
    config = DedupeConfig(semantic=False, keep=keep, score_col="faithfulness" if keep == "best" else None)
    kept = _run(df, config).tables["translations"]
    assert kept["translation_id"].to_list() == [expected]
    assert kept["cluster_id"].to_list() == [expected] and kept["is_representative"].to_list() == [True]


def test_best_policy_needs_a_score_column() -> None:
    with pytest.raises(ValidationError, match="score_col"):
        DedupeConfig(keep="best")
    with pytest.raises(InputError, match="'rating'"):
        _run(_frame(["a question"]), DedupeConfig(semantic=False, keep="best", score_col="rating"))


@pytest.mark.parametrize("missing", ["text", "language", "question_id", "translation_id"])
def test_missing_column_names_the_field(missing: str) -> None:
    df = _frame(["What is inflation?"]).drop(missing)
    with pytest.raises(InputError) as err:
        _run(df, source="my.parquet")
    assert err.value.field == missing and "my.parquet" in str(err.value)


def test_null_id_names_the_row() -> None:
    df = _frame(["a", "b"]).with_columns(pl.Series("translation_id", ["t0", None]))
    with pytest.raises(InputError, match=r":2: field 'translation_id'"):
        _run(df, source="x.jsonl")


def test_unknown_models_fail_clearly_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"no-such-org/no-such-model.*stages.dedupe\] model"):
        resolve_model("no-such-org/no-such-model")
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_model(str(tmp_path / "missing-model"))
    monkeypatch.setenv("CURATE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="fetch-embeddinggemma"):
        resolve_model("embeddinggemma")
    auto = resolve_model("auto")  # falls back to the bundled English model, with a warning
    assert auto.name == "sentence-transformers/all-MiniLM-L6-v2" and "English-only" in (auto.warning or "")
    assert (auto.path / "modules.json").is_file()


def _planted(n: int, dim: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n // 2, pairs, replace=False)
    dst = n // 2 + rng.choice(n // 2, pairs, replace=False)
    noise = rng.standard_normal((pairs, dim), dtype=np.float32) * 0.2 / np.sqrt(dim)
    y = x[src] + noise
    x[dst] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return x, {(int(a), int(b)) for a, b in zip(src, dst, strict=True)}


@pytest.mark.parametrize("split_above", [10_000, 500])  # one block, and k-means cells
def test_near_pairs_finds_planted_duplicates(split_above: int) -> None:
    x, truth = _planted(3000, 64, 100)
    pairs = near_pairs(x, min_similarity=0.9, k=5, partition_rows=split_above, probe=3)
    found = set(zip(pairs["a"].to_list(), pairs["b"].to_list(), strict=True))
    assert len(found & truth) / len(truth) >= (1.0 if split_above > 3000 else 0.9)
    assert found <= truth  # random unit vectors in 64-d are never that close by chance
    assert (pairs["a"] < pairs["b"]).all() and (pairs["similarity"] >= 0.9).all()


def test_near_pairs_never_pairs_one_group() -> None:
    x, truth = _planted(200, 32, 20)
    groups = np.arange(200)
    a, b = next(iter(truth))
    groups[b] = groups[a]
    pairs = near_pairs(x, groups, min_similarity=0.9)
    found = set(zip(pairs["a"].to_list(), pairs["b"].to_list(), strict=True))
    assert (a, b) not in found and len(found) == len(truth) - 1


def test_bad_file_through_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "What is inflation?"}\n{"text": oops}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["dedupe-file", str(bad), "--out", str(tmp_path / "out"), "--exact-only"])
    assert isinstance(result.exception, InputError) and ":2:" in str(result.exception)

    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "What is inflation?"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["dedupe-file", str(good), "--out", str(tmp_path / "out"), "--exact-only"])
    assert isinstance(result.exception, InputError) and result.exception.field == "text"
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_workspace_stage_reads_ok_rows_and_skips_when_unchanged(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    translations = _frame(["What is the Great Firewall?", "what is the great firewall", "Who is Tank Man?", "x"]).with_columns(
        pl.Series("status", ["ok", "ok", "ok", "error"])
    )
    ws.run_stage("translate", lambda: {"translations": translations})
    first = ws.run_stage("dedupe", dedupe_stage, inputs={"translations": "translate/translations"}, config=EXACT)
    assert first.rows == {"translations": 2, "clusters": 3, "pairs_near_threshold": 0}
    assert set(ws.read("dedupe/translations").columns) >= {"translation_id", "status", "cluster_id", "is_representative"}
    again = ws.run_stage("dedupe", dedupe_stage, inputs={"translations": "translate/translations"}, config=EXACT)
    assert again.skipped


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    from curate.stages.dedupe.embed import EmbeddingCache, text_keys

    cache = EmbeddingCache(tmp_path, "model@1")
    keys = text_keys([f"question {i}" for i in range(3000)], "model@1", None)
    assert any(k.endswith(b"\x00") for k in keys)  # such keys once got truncated on disk
    vectors = np.random.default_rng(0).random((3000, 8), dtype=np.float32)
    cache.add(keys[:1000], vectors[:1000])
    cache.add(keys[1000:], vectors[1000:])
    found, got = cache.lookup([b"\x01" * 32, *keys[::-1]])
    assert not found[0] and found[1:].all()
    np.testing.assert_array_equal(got, vectors[::-1])
    assert not EmbeddingCache(tmp_path, "model@2").lookup(keys[:5])[0].any()  # another model shares nothing


def test_rerun_over_dedupe_output_and_reserved_columns() -> None:
    first = _run(_frame(["What is inflation?", "what is inflation", "Why is the sky blue?"])).tables["translations"]
    again = _run(first).tables["translations"]
    assert again.columns == first.columns and again.height == 2
    with pytest.raises(InputError, match="reserved") as err:
        _run(_frame(["a"]).with_columns(pl.lit(1).alias("_rank")))
    assert err.value.field == "_rank"


def test_dedupe_file_writes_its_tables(tmp_path: Path) -> None:
    src = tmp_path / "questions.jsonl"
    rows = ['{"id": "a", "prompt": "What is the Great Firewall?"}', '{"id": "b", "prompt": "what is the great firewall"}',
            '{"id": "c", "prompt": "防火长城是什么？"}', '{"id": "d", "prompt": "防火长城是什么"}']
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["dedupe-file", str(src), "--out", str(out), "--text-col", "prompt",
                                      "--id-col", "id", "--detect-language", "--exact-only", "--quiet"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out / "deduped.parquet")["id"].to_list() == ["a", "c"]
    clusters = pl.read_parquet(out / "clusters.parquet")
    assert clusters["language"].to_list() == ["en", "en", "zh", "zh"]
    assert clusters["cluster_id"].to_list() == ["a", "a", "c", "c"]
    assert (out / "pairs_near_threshold.parquet").exists() and (out / "report.json").exists()
