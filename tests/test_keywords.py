"""Keyword extraction: English and Chinese seeds, CJK tokenization, stoplists and filters, topics, the CLI."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import IngestConfig, LangIdConfig
from curate.errors import ConfigError, CurateError, InputError
from curate.ids import content_id, normalize_text
from curate.stages.ingest import read_seeds
from curate.stages.keywords import (
    KeywordsConfig,
    assign_topics,
    bundled_stopwords,
    candidate_phrases,
    extract_keywords,
    stopwords_for,
    tokenize,
)

DATA = Path(__file__).resolve().parent.parent / "data"


def _seeds(texts: list[str], language: str = "en", **extra) -> pl.DataFrame:
    return pl.DataFrame({
        "seed_id": [f"seed-{i}" for i in range(len(texts))], "text": texts, "language": [language] * len(texts), **extra,
    })


@pytest.fixture(scope="module")
def deccp_seeds() -> pl.DataFrame:
    return read_seeds([DATA / "deccp" / "censored.txt"], IngestConfig(), LangIdConfig())


@pytest.fixture(scope="module")
def chinese_seeds() -> pl.DataFrame:
    return read_seeds([DATA / "china_politics_eval" / "zh-CN.txt"], IngestConfig(default_language="zh"), LangIdConfig())


def _assert_lineage(keywords: pl.DataFrame, seeds: pl.DataFrame, joiner: str = " ") -> None:
    text_of = dict(seeds.select("seed_id", "text").iter_rows())
    for row in keywords.iter_rows(named=True):
        assert row["count"] == len(row["seed_ids"]) == len(set(row["seed_ids"]))
        assert row["keyword_id"] == content_id("keyword", row["keyword"], row["language"])
        for seed_id in row["seed_ids"]:
            # Every token of the keyword is in every seed it claims to come from.
            seed_text = normalize_text(text_of[seed_id])
            for part in row["keyword"].split(joiner) if joiner else [row["keyword"]]:
                assert normalize_text(part).removesuffix("'s") in seed_text, (row["keyword"], text_of[seed_id])


def test_english_deccp_keywords_are_ranked_topics_with_lineage(deccp_seeds):
    keywords, rejects, report = extract_keywords(deccp_seeds.filter(pl.col("language") == "en"), KeywordsConfig())
    words = keywords["keyword"].to_list()
    assert {"Great Firewall", "Tiananmen Square", "Xinjiang"} <= set(words)
    assert keywords["score"].is_sorted(descending=True)
    assert keywords["count"].min() >= 2
    stop = bundled_stopwords("en")
    for word in words:
        assert not word.isdigit()
        assert not all(normalize_text(t) in stop for t in word.split()), word
    assert not {"how", "what", "why", "tell"} & {w.lower() for w in words}
    _assert_lineage(keywords, deccp_seeds)
    # "Great" and "Firewall" never occur apart, so only the phrase is kept.
    subsumed = rejects.filter(pl.col("reject_reason") == "subsumed")["keyword"].to_list()
    assert "Firewall" in subsumed and "Firewall" not in words
    assert report["keywords_per_language"]["en"] == keywords.height


def test_chinese_keywords_are_segmented_with_jieba(chinese_seeds):
    keywords, _, _ = extract_keywords(chinese_seeds, KeywordsConfig())
    words = set(keywords["keyword"])
    assert {"台湾", "新疆", "香港"} <= words
    assert not words & {"什么", "如何", "为什么", "哪些", "是否"}
    assert all(len(w) >= 2 for w in words)
    assert set(keywords["language"]) == {"zh"}
    _assert_lineage(keywords, chinese_seeds, joiner="")


def test_mixed_language_seeds_are_ranked_per_language(deccp_seeds):
    # censored.txt holds English and Chinese prompts; each language gets its own keywords.
    keywords, _, report = extract_keywords(deccp_seeds, KeywordsConfig())
    assert {"en", "zh"} <= set(report["keywords_per_language"])
    zh = keywords.filter(pl.col("language") == "zh")["keyword"].to_list()
    assert "防火长城" in zh
    assert not any(ch.isascii() and ch.isalpha() for w in zh for ch in w)


def test_japanese_and_korean_tokenization_without_new_dependencies():
    assert candidate_phrases("天安門事件について教えてください", "ja", stopwords_for("ja", KeywordsConfig()), 3) == {
        ("天安門事件",): "天安門事件"
    }
    ja = candidate_phrases("ウイグル人の人権問題はなぜ起きたのですか？", "ja", stopwords_for("ja", KeywordsConfig()), 3)
    assert "ウイグル人" in ja.values() and "人権問題" in ja.values()
    ko = candidate_phrases("천안문 사태에 대해 설명해주세요", "ko", stopwords_for("ko", KeywordsConfig()), 3)
    assert set(ko.values()) == {"천안문", "사태", "천안문 사태"}
    # Devanagari vowel signs are combining marks: words must not be cut at them.
    assert [t for _, t in tokenize("तियानमेन चौक", "hi")[0]] == ["तियानमेन", "चौक"]


def test_filters_min_count_numbers_and_length():
    texts = [
        "What happened in 1989 in Tiananmen Square?",
        "Who died in Tiananmen Square in 1989?",
        "Why were the 1989 protests crushed?",
        "How are the 1989 protests remembered by students?",
        "What did students demand in the 1989 protests?",
        "Which leaders supported the 1989 protests in the PRC?",
        "Is the PRC the same as China?",
    ]
    keywords, rejects, _ = extract_keywords(_seeds(texts), KeywordsConfig())
    words = set(keywords["keyword"])
    assert {"1989 protests", "Tiananmen Square", "students"} <= words
    assert "1989" not in words and "1989" in rejects.filter(pl.col("reject_reason") == "pure_number")["keyword"].to_list()
    assert "PRC" in words
    assert "PRC" not in set(extract_keywords(_seeds(texts), KeywordsConfig(min_length=4))[0]["keyword"])
    assert "1989" in set(extract_keywords(_seeds(texts), KeywordsConfig(drop_numbers=False))[0]["keyword"])
    strict, _, _ = extract_keywords(_seeds(texts), KeywordsConfig(min_count=3))
    assert set(strict["keyword"]) == {"1989 protests"}
    below = rejects.filter(pl.col("reject_reason") == "below_min_count")
    assert below.height == 1 and below["count"][0] > 0


def test_too_common_keywords_are_dropped_in_larger_seed_sets():
    texts = [f"What happened in Beijing during the {w} affair?" for w in ("alpha", "bravo", "delta", "echo", "gamma", "kilo", "lima")]
    texts += [f"Who remembers the {w} affair?" for w in ("alpha", "bravo", "delta", "echo", "gamma")]
    keywords, rejects, _ = extract_keywords(_seeds(texts), KeywordsConfig())
    assert "Beijing" not in set(keywords["keyword"])
    too_common = rejects.filter(pl.col("reject_reason") == "too_common")
    assert "Beijing" in too_common["keyword"].to_list() and "affair" in too_common["keyword"].to_list()
    assert "alpha affair" in set(keywords["keyword"])
    assert "Beijing" in set(extract_keywords(_seeds(texts), KeywordsConfig(max_doc_fraction=1.0))[0]["keyword"])


def test_extra_stopwords_from_config_and_file(tmp_path):
    texts = ["Tell me about the Great Firewall of China.", "How does the Great Firewall block sites?", "Who built the Great Firewall?"]
    base, _, _ = extract_keywords(_seeds(texts), KeywordsConfig())
    assert "Great Firewall" in set(base["keyword"])
    listed, _, _ = extract_keywords(_seeds(texts), KeywordsConfig(stopwords=["Firewall"]))
    assert not any("firewall" in w.lower() for w in listed["keyword"])
    stoplist = tmp_path / "mine.txt"
    stoplist.write_text("# my words\ngreat\n", encoding="utf-8")
    filed, _, _ = extract_keywords(_seeds(texts), KeywordsConfig(stopword_files=[str(stoplist)]))
    assert "Firewall" in set(filed["keyword"]) and not any("great" in w.lower() for w in filed["keyword"])
    with pytest.raises(ConfigError, match="missing.txt"):
        extract_keywords(_seeds(texts), KeywordsConfig(stopword_files=[str(tmp_path / "missing.txt")]))


def test_blocked_seeds_are_used_when_the_column_is_set():
    texts = ["What is the Great Firewall?", "Explain the Great Firewall.", "What is Falun Gong?", "Who founded Falun Gong?"]
    seeds = _seeds(texts, blocked=[True, True, False, False])
    auto, _, report = extract_keywords(seeds, KeywordsConfig())
    assert set(auto["keyword"]) == {"Great Firewall"} and report["seeds_used"] == 2
    every, _, _ = extract_keywords(seeds, KeywordsConfig(source="all"))
    assert {"Great Firewall", "Falun Gong"} <= set(every["keyword"])
    with pytest.raises(InputError, match="blocked"):
        extract_keywords(_seeds(texts), KeywordsConfig(source="blocked"))
    with pytest.raises(InputError, match="text"):
        extract_keywords(seeds.drop("text"), KeywordsConfig())


def test_cooccurrence_topics_group_phrases_that_share_seeds(deccp_seeds):
    keywords, _, _ = extract_keywords(deccp_seeds.filter(pl.col("language") == "en"), KeywordsConfig())
    topic = dict(keywords.select("keyword", "topic").iter_rows())
    assert topic["Tiananmen Square massacre"] == topic["Tiananmen Square"] == "Tiananmen Square"
    # A frequent keyword must not swallow unrelated rarer ones.
    assert topic["Great Firewall"] != topic["China"]
    assert topic["Xinjiang"] != topic["Great Firewall"]
    none, _, _ = extract_keywords(deccp_seeds, KeywordsConfig(topics="none"))
    assert none["topic"].null_count() == none.height


def test_seed_topics_vote():
    seeds = _seeds(["What is the Great Firewall?", "Explain the Great Firewall."], topic=["censorship", "censorship"])
    keywords, _, _ = extract_keywords(seeds, KeywordsConfig(topics="seed"))
    assert keywords["topic"].to_list() == ["censorship"]


@pytest.mark.slow
def test_embedding_topics_with_bundled_minilm():
    labels = ["Tiananmen Square massacre", "Tiananmen Square protests", "Falun Gong", "Great Firewall"]
    keywords = pl.DataFrame({"keyword": labels, "language": ["en"] * 4, "seed_ids": [["a"], ["b"], ["c"], ["d"]]})
    topics = assign_topics(keywords, _seeds(["x"]), KeywordsConfig(topics="embedding")).to_list()
    assert topics[0] == topics[1] == "Tiananmen Square massacre"
    assert topics[2] == "Falun Gong" and topics[3] == "Great Firewall"


def test_an_unusable_embedding_model_fails_clearly_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    keywords = pl.DataFrame({"keyword": ["Falun Gong"], "language": ["en"], "seed_ids": [["a"]]})
    for setting in ("no-such-org/no-such-model", str(tmp_path / "missing-model")):
        config = KeywordsConfig(topics="embedding", embedding_model=setting)
        with pytest.raises(ConfigError, match=r"embedding_model '.*stages.keywords\] embedding_model"):
            assign_topics(keywords, _seeds(["x"]), config)


def test_cli_keywords_stage_writes_table_report_and_skips_when_unchanged(tmp_path):
    cfg = tmp_path / "curate.toml"
    cfg.write_text(f'workspace = "{tmp_path / "ws"}"\n[stages.keywords]\nmin_count = 2\n', encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(DATA / "deccp" / "censored.txt"), "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["keywords", "-c", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "keywords: done" in res.output
    from curate.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    table = ws.read("keywords/keywords")
    assert table.height > 20 and "Great Firewall" in table["keyword"].to_list()
    manifest = ws.manifest("keywords")
    assert manifest["report"]["keywords"]["rows"] == table.height
    assert manifest["report"]["rejects"]["by_reject_reason"]["subsumed"] > 0
    assert manifest["inputs"] and "seeds" in manifest["inputs"]
    again = runner.invoke(app, ["keywords", "-c", str(cfg), "--quiet"])
    assert "skipped" in again.output


def test_cli_keywords_without_seeds_is_a_clear_error(tmp_path):
    cfg = tmp_path / "curate.toml"
    cfg.write_text(f'workspace = "{tmp_path / "ws"}"\n[stages.keywords]\nmode = "nonsense"\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["keywords", "-c", str(cfg), "--quiet"])
    assert isinstance(res.exception, CurateError) and "stages.keywords.mode" in str(res.exception)
    cfg.write_text(f'workspace = "{tmp_path / "ws"}"\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["keywords", "-c", str(cfg), "--quiet"])
    assert isinstance(res.exception, CurateError) and "ingest" in str(res.exception)


@pytest.mark.slow
@pytest.mark.llm
def test_llm_mode_with_the_local_server_accounts_for_every_seed(llm_endpoint):
    texts = ["How does the Great Firewall of China work?", "What happened at Tiananmen Square in 1989?"]
    seeds = _seeds(texts)
    endpoint = llm_endpoint.model_copy(update={"max_tokens": 40, "max_retries": 1})
    config = KeywordsConfig(mode="llm", min_count=1, overrides={"temperature": 0.0, "max_tokens": 40})
    keywords, rejects, report = extract_keywords(seeds, config, endpoint=endpoint)
    errors = rejects.filter(pl.col("reject_reason") == "llm_error")
    # Each seed either yielded keywords or has a reject row saying why (failed call, nothing usable).
    contributed = set(keywords["seed_ids"].explode().drop_nulls())
    assert contributed | set(rejects["seed_id"].drop_nulls()) == set(seeds["seed_id"])
    assert errors["error"].is_not_null().all()
    for row in keywords.iter_rows(named=True):
        # Grounded: the model's keywords must occur in the seed they came from.
        for seed_id in row["seed_ids"]:
            assert normalize_text(row["keyword"]) in normalize_text(texts[int(seed_id.split("-")[1])])
    assert "llm_usage" in report
