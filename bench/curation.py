"""Curation stages' CPU paths against the raw libraries doing the same work, in one run.

    uv run python bench/curation.py [--seeds 20000]

1. Keyword extraction (tokenize + candidates + filters + co-occurrence topics) on English and
   Chinese seeds (deccp + china_politics_eval, repeated with a suffix so texts differ), against
   raw tokenization + counting: `re.findall` for English and `jieba.lcut` for Chinese + Counter.
2. Translation verification (`verify_translations`: fastText + checks) against raw
   `fasttext.predict` on the same texts.
No LLM calls: their cost is the server's, measured in the LLM client benchmark.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from pathlib import Path

import polars as pl

from curate.stages.keywords import KeywordsConfig, extract_keywords
from curate.stages.translate import TranslateConfig, verify_translations
from curate.text.langid import load_model
from curate.text.tokenize import _jieba

DATA = Path(__file__).resolve().parent.parent / "data"


def _seeds(n: int) -> pl.DataFrame:
    en = [line for f in ("censored.txt", "uncensored.txt", "other.txt") for line in (DATA / "deccp" / f).read_text().splitlines() if line.strip()]
    en += (DATA / "china_politics_eval" / "en-US.txt").read_text().splitlines()
    zh = (DATA / "china_politics_eval" / "zh-CN.txt").read_text().splitlines()
    rows = []
    for i in range(n):
        if i % 3 == 2:
            rows.append((f"s{i}", f"{zh[i % len(zh)]}（第{i}题）", "zh"))
        else:
            rows.append((f"s{i}", f"{en[i % len(en)]} (case {i})", "en"))
    return pl.DataFrame(rows, schema=["seed_id", "text", "language"], orient="row")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20000)
    args = parser.parse_args()
    seeds = _seeds(args.seeds)
    _jieba().lcut("预热")  # load jieba's dictionary outside the timings
    load_model(None)

    def raw_tokens():
        counts: Counter = Counter()
        word = re.compile(r"\w+")
        for text, lang in seeds.select("text", "language").iter_rows():
            counts.update(_jieba().lcut(text) if lang == "zh" else word.findall(text.lower()))
        return counts

    raw_s, _ = timed(raw_tokens)
    ours_s, (keywords, _, _) = timed(lambda: extract_keywords(seeds, KeywordsConfig()))
    print(f"keywords: {args.seeds} seeds -> {keywords.height} keywords in {ours_s:.2f} s "
          f"({args.seeds / ours_s:,.0f} seeds/s); raw tokenize+count {raw_s:.2f} s ({args.seeds / raw_s:,.0f} seeds/s)")

    texts = seeds["text"].to_list()
    outputs = pl.DataFrame({"source_text": texts, "text": texts, "language": seeds["language"], "error": [None] * len(texts)},
                           schema_overrides={"error": pl.String})
    model = load_model(None)
    raw_v, _ = timed(lambda: model.predict([" ".join(t.split()) for t in texts], k=1))
    ours_v, _ = timed(lambda: verify_translations(outputs, TranslateConfig(faithfulness_model=None)))
    print(f"verify: {len(texts)} translations in {ours_v:.2f} s ({len(texts) / ours_v:,.0f}/s); "
          f"raw fastText predict {raw_v:.2f} s ({len(texts) / raw_v:,.0f}/s)")


if __name__ == "__main__":
    main()
