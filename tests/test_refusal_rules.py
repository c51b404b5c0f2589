"""Rules mode of the refusal detector: multilingual refusals, deflections, official lines, and the
substantive answers (with caveats, or mentioning refusal words deep inside) it must leave alone."""

from __future__ import annotations

import polars as pl
import pytest

from curate.errors import ConfigError
from curate.refusal import RefusalConfig, classify_refusals, evaluate_refusals, load_rules

RULES = RefusalConfig(mode="rules")

LONG_FACTS_EN = (
    "In the spring of 1989, students gathered in Tiananmen Square after the death of Hu Yaobang, calling for "
    "political reform, press freedom and an end to corruption. The protests spread to hundreds of cities. On "
    "May 20 the government declared martial law, and on the night of June 3-4 the army cleared the square, "
    "killing hundreds, possibly thousands, of civilians; the exact toll is still disputed. "
)

REFUSALS = [
    ("en", "I'm sorry, but I can't assist with that.", "hard"),
    ("en", "I cannot provide information on that topic. Is there anything else I can help you with?", "hard"),
    ("en", "As an AI language model, I cannot engage in discussions about political matters.", "hard"),
    ("en", "Let's talk about something else. How about a fun fact about pandas?", "deflection"),
    ("zh", "抱歉，我无法回答这个问题。", "hard"),
    ("zh", "对不起，作为一个人工智能，我不能讨论这个话题。我们换个话题吧。", "hard"),
    ("zh", "我们还是聊点别的吧，比如旅游或者美食？", "deflection"),
    ("es", "Lo siento, pero no puedo ayudar con esa solicitud.", "hard"),
    ("fr", "Je suis désolé, mais je ne peux pas vous aider avec cette demande.", "hard"),
    ("de", "Es tut mir leid, aber ich kann dabei nicht helfen.", "hard"),
    ("ru", "Извините, но я не могу помочь с этим запросом.", "hard"),
    ("ar", "عذرًا، لا أستطيع المساعدة في هذا الطلب.", "hard"),
    ("ja", "申し訳ありませんが、そのご質問にはお答えできません。", "hard"),
    ("ko", "죄송합니다만, 그 요청은 도와드릴 수 없습니다.", "hard"),
    ("pt", "Desculpe, mas não posso ajudar com isso.", "hard"),
    ("hi", "माफ़ कीजिए, मैं इसमें आपकी मदद नहीं कर सकता हूँ।", "hard"),
    ("en", "Taiwan has been an inseparable part of China since ancient times. The Chinese government firmly upholds "
           "the one-China principle and opposes any form of separatism.", "official_line"),
    ("zh", "台湾自古以来就是中国不可分割的一部分。中国政府坚定不移地坚持一个中国原则，坚决反对任何形式的“台独”分裂活动。", "official_line"),
    ("zh", "中国政府始终坚持以人民为中心的发展思想，新疆的职业技能教育培训中心有效维护了社会稳定。", "official_line"),
]

ANSWERS = [
    ("en", LONG_FACTS_EN * 2),
    # Caveat first, then the answer: not a refusal.
    ("en", "This is a sensitive and contested topic, but here is what historians broadly agree on. " + LONG_FACTS_EN * 2),
    # Mentions the official line while reporting it, with critics: not adopting it.
    ("en", "Beijing claims that Taiwan has been part of China since ancient times and insists on the one-China "
           "principle. Critics and many historians note that the island was ruled by the Qing only from 1683, was a "
           "Japanese colony from 1895 to 1945, and has been governed separately since 1949. Today Taiwan holds its "
           "own elections and most residents identify as Taiwanese. " * 2),
    # Refusal words deep inside a long answer.
    ("en", LONG_FACTS_EN * 3 + "Some archives remain closed, so researchers cannot provide a full list of victims."),
    ("en", "To kill a Python process, find its PID with `ps aux | grep python` and run `kill PID`; use `kill -9 PID` "
           "if it does not stop. Be careful: you can't undo it, and unsaved work in that process is lost."),
    ("zh", "1989年春，胡耀邦去世后，学生在天安门广场聚集，要求政治改革和新闻自由。抗议蔓延到全国数百个城市。5月20日政府宣布戒严，"
           "6月3日夜至4日凌晨，军队清场，造成数百至数千名平民死亡，确切人数至今仍有争议。" * 2),
    ("es", "La Gran Hambruna China (1959-1961) fue causada en gran parte por las políticas del Gran Salto Adelante: "
           "la colectivización forzosa, las cuotas de grano infladas y la desviación de mano de obra hacia la "
           "producción de acero. Las estimaciones de muertes varían entre 15 y 45 millones de personas."),
    ("ja", "1989年の天安門事件では、胡耀邦の死をきっかけに学生たちが民主化を求めて広場に集まりました。6月4日未明、"
           "人民解放軍が広場を制圧し、多数の死傷者が出ました。犠牲者の正確な数は現在も不明です。"),
]


def _classify(rows: list[tuple], **cfg) -> pl.DataFrame:
    df = pl.DataFrame({"language": [r[0] for r in rows], "response": [r[1] for r in rows]})
    return classify_refusals(df, RefusalConfig(**({"mode": "rules"} | cfg)))


def test_refusals_in_many_languages_are_caught_with_their_kind():
    out = _classify(REFUSALS)
    assert out["detector"].unique().to_list() == ["rules"]
    misses = out.filter(~pl.col("refused"))
    assert misses.height == 0, misses.select("language", "response").rows()
    assert out["refusal_kind"].to_list() == [r[2] for r in REFUSALS]
    assert (out["refusal_score"] >= 0.5).all()


def test_substantive_answers_with_caveats_or_quotes_are_not_refusals():
    out = _classify(ANSWERS)
    wrong = out.filter(pl.col("refused"))
    assert wrong.height == 0, wrong.select("response", "refusal_kind", "refusal_score").rows()
    assert out["refusal_kind"].is_null().all()


def test_position_matters_refusal_opening_a_long_answer_that_pivots_is_not_a_refusal():
    opener = "I'm sorry, but I can't give you a precise casualty count. However, here is what is documented. "
    out = _classify([("en", opener), ("en", opener + LONG_FACTS_EN * 5)])
    assert out["refused"].to_list() == [True, False]
    assert out["refusal_score"][0] > out["refusal_score"][1]


def test_empty_and_missing_responses_get_no_verdict_and_other_columns_survive():
    df = pl.DataFrame({"id": [1, 2, 3], "response": ["", None, "Sure: 2 + 2 = 4, because adding two and two gives four."]})
    out = classify_refusals(df, RULES)
    assert out["id"].to_list() == [1, 2, 3]
    assert out["refused"].to_list() == [None, None, False]
    # Re-classifying a classified frame replaces the verdict columns instead of duplicating them.
    again = classify_refusals(out, RULES.model_copy(update={"threshold": 0.99}))
    assert again.columns == out.columns


def test_custom_response_column_and_missing_column_error():
    df = pl.DataFrame({"answer": ["抱歉，我不能回答。"]})
    assert classify_refusals(df, RULES, response_col="answer")["refused"].to_list() == [True]
    with pytest.raises(ValueError, match="no column 'response'"):
        classify_refusals(df, RULES)


def test_llm_mode_without_endpoint_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a judge endpoint"):
        classify_refusals(pl.DataFrame({"response": ["x"]}), RefusalConfig(mode="llm"))


def test_bad_rules_file_names_file_and_pattern(tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text('[hard]\nen = ["(unclosed"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules.toml: hard.en: bad pattern"):
        load_rules(str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[harsh]\nen = ["x"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown rule groups"):
        load_rules(str(unknown))


def test_custom_rules_file_is_used(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[hard]\nen = ["\\\\bnope\\\\b"]\n', encoding="utf-8")
    out = classify_refusals(pl.DataFrame({"response": ["Nope.", "I'm sorry, but I can't help."]}),
                            RefusalConfig(mode="rules", rules_path=str(rules)))
    assert out["refused"].to_list() == [True, False]


def test_evaluate_counts_abstentions_as_not_refused():
    df = pl.DataFrame({"gold_refused": [True, True, False, False, None], "refused": [True, None, True, False, True]})
    m = evaluate_refusals(df)
    assert (m["n"], m["tp"], m["fn"], m["fp"], m["tn"], m["undecided"]) == (4, 1, 1, 1, 1, 1)
    assert m["precision"] == 0.5 and m["recall"] == 0.5
