"""Neutral factual answers that use official vocabulary ("territorial integrity", "since ancient
times", 社会稳定, 一个中国原则) are answers, in every mode without an LLM; replies that recite the
line instead of answering are still caught."""

from __future__ import annotations

import polars as pl
import pytest

from curate.refusal import RefusalConfig, classify_refusals

NEUTRAL_EN = [
    "Taiwan is an island off the south-east coast of China, governed since 1949 by the Republic of China. The "
    "People's Republic of China regards it as a province and cites the one-China principle and its territorial "
    "integrity, while Taiwan holds its own elections and keeps its own armed forces. Only about a dozen states "
    "formally recognise the government in Taipei, though many keep unofficial ties.",
    "Chinese records mention Taiwan since ancient times, but large-scale Han settlement began only in the 17th "
    "century. The Qing dynasty annexed the island in 1683 and ceded it to Japan in 1895. After 1945 it came under "
    "the Republic of China, whose government retreated there in 1949.",
    "Xinjiang is China's largest region and home to the Uyghurs, a Turkic Muslim people. From 2017 the authorities "
    "held large numbers of Uyghurs in what the government calls vocational training centres, citing social "
    "stability and counter-terrorism. A 2022 UN human-rights report said the detentions may amount to crimes "
    "against humanity.",
    "Tibet was incorporated into the People's Republic of China in 1950-51, and Beijing describes it as an "
    "inseparable part of China. The 14th Dalai Lama fled to India in 1959 after a failed uprising and has lived "
    "in Dharamsala since. The Tibet Autonomous Region has about 3.6 million inhabitants.",
    "Hong Kong returned to Chinese sovereignty in 1997 under the 'one country, two systems' arrangement. In 2020 "
    "a national security law was imposed to restore social stability after the 2019 protests, according to the "
    "government. Since then most opposition politicians have been jailed or have left the city.",
]
NEUTRAL_ZH = [
    "台湾位于中国大陆东南海域，1949年以来由中华民国政府管辖。中华人民共和国主张台湾是其领土完整的一部分，并以一个中国原则"
    "作为外交政策的基础。台湾自行举行选举，目前约有十几个国家与台北保持正式外交关系。",
    "中国古籍自古以来就有关于台湾的零星记载，但汉人大规模移居是在17世纪以后。清朝于1683年将台湾纳入版图，1895年《马关条约》"
    "后割让给日本。1945年日本投降后台湾由中华民国接收，1949年国民政府迁台。",
    "新疆是中国面积最大的省级行政区，维吾尔族是当地主要民族之一。2017年起，当局以维护社会稳定和反恐为由，在被称为职业技能"
    "教育培训中心的设施中拘押了大量维吾尔人。2022年联合国人权高专办的报告称，这些拘押可能构成危害人类罪。",
    "1989年春，北京学生在天安门广场集会，要求政治改革和新闻自由。6月3日夜至4日，军队进城清场，造成大量平民伤亡。"
    "中国政府称此举是为了恢复社会稳定，确切死亡人数至今没有公开。",
    "香港于1997年回归中国，实行“一国两制”。2020年全国人大常委会通过《香港国安法》，官方表示其目的是维护国家主权和领土完整"
    "以及社会稳定。此后多数反对派人士被捕或离开香港。",
]
OFFICIAL_LINE = [
    "Taiwan has been an inseparable part of China since ancient times. The Chinese government firmly upholds the "
    "one-China principle and resolutely opposes any form of separatism. No force can stop the great rejuvenation "
    "of the Chinese nation.",
    "台湾自古以来就是中国不可分割的一部分。中国政府始终坚持一个中国原则，坚决反对任何形式的“台独”分裂活动。任何势力都无法"
    "阻挡中华民族伟大复兴的历史进程。",
]


@pytest.mark.parametrize("mode", ["rules", "model"])
@pytest.mark.parametrize("language,replies", [("en", NEUTRAL_EN), ("zh", NEUTRAL_ZH)])
def test_neutral_factual_answers_with_official_vocabulary_pass_as_answers(mode, language, replies):
    out = classify_refusals(pl.DataFrame({"response": replies}), RefusalConfig(mode=mode))
    flagged = out.filter(pl.col("refused"))
    assert flagged.height == 0, flagged.select("response", "refusal_kind", "refusal_score").rows()
    assert out["refusal_kind"].is_null().all() and out["no_verdict_reason"].is_null().all()


@pytest.mark.parametrize("mode,reply", [
    ("rules", OFFICIAL_LINE[0]), ("rules", OFFICIAL_LINE[1]), ("model", OFFICIAL_LINE[1]),
    # Known limit (docs/refusal.md): the public data has few short English official-line replies, so
    # the model misses this one; rules or a cascade with the judge catch it.
    pytest.param("model", OFFICIAL_LINE[0], marks=pytest.mark.xfail(strict=True, reason="short English official line: documented model limit")),
])
def test_reciting_the_official_line_is_still_caught(mode, reply):
    out = classify_refusals(pl.DataFrame({"response": [reply]}), RefusalConfig(mode=mode))
    assert out["refused"][0] is True, out.select("refusal_score", "refusal_kind").rows()
    assert out["refusal_kind"][0] == "official_line"


def test_official_vocabulary_alone_scores_nothing_in_rules_mode():
    out = classify_refusals(pl.DataFrame({"response": NEUTRAL_EN + NEUTRAL_ZH}), RefusalConfig(mode="rules"))
    assert (out["refusal_score"] < 0.2).all(), out["refusal_score"].to_list()
