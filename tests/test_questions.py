"""Question expansion: parsing, diversity, rejects and lineage (with an injected LLM), then the real local server."""

from __future__ import annotations

import json

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.ids import content_id
from curate.llm import RESULT_SCHEMA
from curate.stages.questions import (
    QuestionsConfig,
    QuestionsStageConfig,
    diversity_filter,
    expand_questions,
    parse_questions,
    questions_stage,
    response_schema,
)

KEYWORDS = pl.DataFrame({
    "keyword_id": ["keyword-a", "keyword-b", "keyword-c"],
    "keyword": ["Great Firewall", "Tiananmen Square", "防火长城"],
    "language": ["en", "en", "zh"],
    "score": [0.5, 0.4, 0.3],
    "seed_ids": [["seed-1"], ["seed-2"], ["seed-3"]],
    "topic": ["Great Firewall", "Tiananmen Square", "防火长城"],
})


def canned_llm_fault_injector(replies: dict[str, list[str | None]]):
    """Stands in for curate.llm.complete_frame: per keyword id, one canned reply per round (None = a failed call).

    The real server cannot be made to return near-duplicates, wrong languages or failures on demand.
    """
    calls: list[pl.DataFrame] = []

    def complete(requests: pl.DataFrame, endpoint, **kwargs) -> pl.DataFrame:
        calls.append(requests)
        rows = []
        for request_id, index in requests.select("request_id", "candidate_index").iter_rows():
            keyword_id, round_index = request_id.rsplit(":", 1)
            reply = replies[keyword_id][int(round_index)]
            rows.append({
                "request_id": request_id, "candidate_index": index, "content": reply, "parsed": reply,
                "status": "ok" if reply is not None else "error",
                "error": None if reply is not None else "invalid_output: injected failure",
            })
        return pl.DataFrame([{k: row.get(k) for k in RESULT_SCHEMA} for row in rows], schema=RESULT_SCHEMA)

    complete.calls = calls  # type: ignore[attr-defined]
    return complete


def _reply(*questions: tuple[str, str]) -> str:
    return json.dumps({"questions": [{"style": s, "question": q} for s, q in questions]}, ensure_ascii=False)


def test_parse_questions_accepts_the_schema_and_rejects_garbage():
    assert parse_questions(_reply(("factual", " What is  the Great Firewall? "))) == [
        {"style": "factual", "question": "What is the Great Firewall?"}
    ]
    assert parse_questions('{"questions": ["Why?"]}') == [{"style": None, "question": "Why?"}]
    for bad in ("not json", "[]", '{"questions": []}', '{"questions": [{"style": "x"}]}', '{"other": 1}'):
        with pytest.raises(ValueError):
            parse_questions(bad)
    schema = response_schema(QuestionsConfig(per_keyword=3))
    assert schema["properties"]["questions"]["maxItems"] == 3
    assert set(schema["properties"]["questions"]["items"]["properties"]["style"]["enum"]) == {
        "factual", "historical", "explanatory", "perspectives"
    }


def test_diversity_filter_drops_duplicates_and_near_duplicates_in_any_script():
    config = QuestionsConfig()
    reasons = diversity_filter(
        [
            "What is the Great Firewall?",
            "what is the great firewall ?",
            "How does the Great Firewall block foreign news sites?",
            "How does the Great Firewall block foreign websites?",
            "防火长城是如何运作的？",
            "防火长城是如何运作的呢？",
        ],
        config,
    )
    assert reasons[0] is None and reasons[2] is None and reasons[4] is None
    assert reasons[1][0] == "duplicate"
    assert reasons[3][0] == "near_duplicate" and reasons[5][0] == "near_duplicate"
    assert "block foreign news sites" in reasons[3][1]
    pair = ["How does the Great Firewall block foreign news sites?", "How does the Great Firewall block foreign websites?"]
    assert diversity_filter(pair, QuestionsConfig(max_similarity=0.95)) == [None, None]


def test_expansion_keeps_diverse_questions_and_rejects_the_rest_with_reasons():
    replies = {
        "keyword-a": [
            _reply(
                ("factual", "What is the Great Firewall?"),
                ("factual", "What is the Great Firewall ?"),
                ("historical", "How has the Great Firewall changed since 2000?"),
                ("explanatory", "Why?"),
            ),
            _reply(("perspectives", "How do foreign governments view the Great Firewall?"), ("explanatory", "What exactly is the Great Firewall?")),
        ],
        "keyword-b": [None, None],
        "keyword-c": [_reply(("factual", "What is the Great Firewall of China?"), ("factual", "防火长城是什么时候建立的？")), None],
    }
    fake = canned_llm_fault_injector(replies)
    config = QuestionsConfig(per_keyword=3, max_rounds=2)
    questions, rejects, _ = expand_questions(KEYWORDS, config, endpoint=EndpointConfig(), complete=fake)

    a = questions.filter(pl.col("keyword_id") == "keyword-a")
    assert a["text"].to_list() == [
        "What is the Great Firewall?", "How has the Great Firewall changed since 2000?",
        "How do foreign governments view the Great Firewall?",
    ]
    assert a["style"].to_list() == ["factual", "historical", "perspectives"]
    for row in questions.iter_rows(named=True):
        assert row["question_id"] == content_id("question", row["text"], row["keyword_id"])
        assert row["status"] == "ok"
    assert set(questions["topic"]) <= set(KEYWORDS["topic"])
    # keyword-a had 2 after round 0, so it was asked again with a fresh sample (candidate_index 1); full ones were not.
    assert fake.calls[1]["request_id"].to_list() == ["keyword-a:1", "keyword-b:1", "keyword-c:1"]
    assert fake.calls[1]["candidate_index"].to_list() == [1, 1, 1]

    reasons = dict(rejects.group_by("reject_reason").len().iter_rows())
    assert reasons == {"duplicate": 1, "too_short": 1, "over_quota": 1, "llm_error": 3, "wrong_language": 1}
    errors = rejects.filter(pl.col("status") == "error")
    assert sorted(errors["keyword_id"].to_list()) == ["keyword-b", "keyword-b", "keyword-c"]
    assert errors["error"].str.contains("injected failure").all()
    assert rejects.filter(pl.col("reject_reason") == "wrong_language")["text"].to_list() == ["What is the Great Firewall of China?"]
    assert questions.filter(pl.col("keyword_id") == "keyword-c")["text"].to_list() == ["防火长城是什么时候建立的？"]


def test_non_questions_and_off_topic_questions_are_rejected_and_the_report_counts_styles():
    replies = {
        k: [_reply(
            ("factual", f"What is known about the {kw}?"), ("historical", f"How did the {kw} begin?"),
            ("factual", f"The {kw}"), ("explanatory", "How did it come about?"),
        )]
        for k, kw in KEYWORDS.select("keyword_id", "keyword").iter_rows()
    }
    out = questions_stage(
        KEYWORDS.filter(pl.col("language") == "en"),
        QuestionsStageConfig(questions=QuestionsConfig(per_keyword=3, max_rounds=1)),
        complete=canned_llm_fault_injector(replies),
    )
    assert out.tables["questions"].height == 4
    rejects = out.tables["rejects"]
    assert sorted(rejects["reject_reason"].to_list()) == ["not_a_question", "not_a_question", "off_topic", "off_topic"]
    assert out.report["keywords_short_of_quota"] == 2
    assert out.report["by_style"] == {"factual": 2, "historical": 2}


@pytest.mark.slow
@pytest.mark.llm
def test_expansion_with_the_local_server_ends_every_keyword_in_a_table(llm_endpoint):
    endpoint = llm_endpoint.model_copy(update={"max_tokens": 160, "max_retries": 1})
    keywords = KEYWORDS.head(2)
    config = QuestionsConfig(per_keyword=2, max_rounds=1, overrides={"temperature": 0.7, "max_tokens": 160})
    questions, rejects, results = expand_questions(keywords, config, endpoint=endpoint)
    assert results[0].height == keywords.height
    for keyword_id in keywords["keyword_id"]:
        got = questions.filter(pl.col("keyword_id") == keyword_id).height
        dropped = rejects.filter(pl.col("keyword_id") == keyword_id).height
        assert got + dropped >= 1, keyword_id  # a question or a reason, never nothing
        assert got <= 2
    for row in questions.iter_rows(named=True):
        assert row["question_id"] == content_id("question", row["text"], row["keyword_id"])
        assert row["text"].strip() and row["language"] == "en"
    assert rejects["reject_reason"].is_not_null().all()
    assert (rejects.filter(pl.col("status") == "error")["error"].is_not_null()).all()
