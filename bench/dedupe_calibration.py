"""Calibrate dedupe thresholds per model and per language on public paraphrase data (data/paraphrase_public).

    nice -n 10 uv run python bench/dedupe_calibration.py --model embeddinggemma --prompt query \
        --max-duplicate 81 --max-distinct 64 --cross \
        --json bench/results/dedupe_calibration.json        # the shipped entry: the 11 languages, pooled
    nice -n 10 uv run python bench/dedupe_calibration.py --model minilm-bundled --max-distinct 300

Sets (see data/paraphrase_public/SOURCE.md), all translations of the STS benchmark, so every
language is judged on the same kind of pairs:
- STS-B multi-MT (DeepL; en zh es fr de ru ja pt it nl pl), KorSTS (ko, post-edited) and
  Multilingual-STSB (Google Translate; ar hi, test split only: even rows pick, odd rows report).
  `duplicate` = score >= 4.5 ("completely equivalent"), `distinct` = 1 <= score <= 3 (same
  topic, important information differs: the analogue of "same-topic different question").
  Scores in between are ambiguous and left out; unrelated pairs (< 1) are left out because any
  threshold separates them. Thresholds are PICKED on the dev split and REPORTED on the test
  split (different sentences).
- PAWS-X dev (`--pawsx-limit`): adversarial word-swap negatives. Reported only, never used to pick.
- Cross-language (`--cross`): STS-B test with sentence 1 in English and sentence 2 in another language.
- Medical Question Pairs (`--mqp`, English, question-shaped: per patient question a doctor's
  same-intent rewrite and a related different question): AUC, paraphrases merged at 5% wrong
  merges and test rates at the pick, the shipped table and its own dev pick. `--question-share S`
  lets its dev pairs take share S of the weight in the English and pooled picks (shipped: 0).

Picking rule, per language on its dev pairs, and pooled over the languages (each weighing the
same) for the model-wide value that a language without public data gets: `threshold` = the
lowest cosine at which at most 5% of distinct pairs merge (wrong merges lose data);
`verify_above` = the highest cosine at which at least 95% of duplicate pairs are at or above it
(pairs between the two go to the verifier when it is on).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = REPO / "data" / "paraphrase_public"
# STS-B in each language (see data/paraphrase_public/SOURCE.md): the same English pairs translated.
STSB_MULTI_MT = ("en", "zh", "es", "fr", "de", "ru", "ja", "pt", "it", "nl", "pl")  # DeepL, dev + test
KORSTS = ("ko",)  # KorSTS (Kakao Brain): machine translation post-edited, dev + test
MULTILINGUAL_STSB = ("ar", "hi")  # Huertas97/Multilingual-STSB (Google Translate), test split only
# The project's default languages (curate.toml): every one has an STS-B translation above.
DEFAULT_LANGUAGES = ("en", "zh", "es", "fr", "de", "ru", "ar", "ja", "ko", "pt", "hi")
PAWSX_LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")
DUPLICATE_MIN_SCORE = 4.5
DISTINCT_SCORES = (1.0, 3.0)
MAX_WRONG_MERGES = 0.05
MIN_RECALL = 0.95
MAX_DISTINCT = 120
MAX_DUPLICATE: int | None = None  # all duplicate pairs unless thinned (--max-duplicate)
# Medical Question Pairs (doctor-written, English), question-shaped; see mqp_pairs.
MQP_REPO = "curai/medical-question-pair-dataset"
MQP_COMMIT = "6c7f7fd7a53cedc6fec105c0c6cb78f2e9a82cd1"
MQP_SHA256 = "94ecd609a9ca9350e1cff2438aa55a034762f01c1a68732aaae3e4be7b03cf57"


def sts_rows(language: str, split: str) -> list[tuple[str, str, float]]:
    """(sentence 1, sentence 2, score 0-5) of one language's STS-B translation.

    Multilingual-STSB ships only the test split, so for ar and hi the even rows stand in for dev
    (picking) and the odd rows for test (reporting): different pairs, same genres in both halves."""
    if language in STSB_MULTI_MT:
        with open(DATA / "stsb_multi_mt" / f"stsb-{language}-{split}.csv", newline="", encoding="utf-8") as f:
            return [(s1, s2, float(score)) for s1, s2, score in csv.reader(f)]
    if language in KORSTS:
        with open(DATA / "korsts" / f"sts-{split}.tsv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return [(r[5], r[6], float(r[4])) for r in rows]
    if language in MULTILINGUAL_STSB:
        with open(DATA / "multilingual_stsb" / f"stsb-{language}-test.csv", newline="", encoding="utf-8") as f:
            rows = [(s1, s2, float(score)) for s1, s2, score in csv.reader(f)]
        return rows[0::2] if split == "dev" else rows[1::2]
    raise SystemExit(f"no STS-B translation for language {language!r} in {DATA}")


def stsb_pairs(language: str, split: str, max_distinct: int | None = None) -> list[tuple[str, str, bool]]:
    """(sentence 1, sentence 2, is duplicate), ambiguous and unrelated pairs left out, distinct
    pairs thinned evenly to `max_distinct` (embedding time on a shared 2-core machine)."""
    rows = sts_rows(language, split)
    duplicate = [(s1, s2, True) for s1, s2, v in rows if v >= DUPLICATE_MIN_SCORE]
    distinct = [(s1, s2, False) for s1, s2, v in rows if DISTINCT_SCORES[0] <= v <= DISTINCT_SCORES[1]]
    step = max(1, -(-len(distinct) // (max_distinct or MAX_DISTINCT)))
    dup_step = max(1, -(-len(duplicate) // MAX_DUPLICATE)) if MAX_DUPLICATE else 1
    return duplicate[::dup_step] + distinct[::step]


def mqp_pairs(path: Path, split: str, sha256: str | None = MQP_SHA256) -> list[tuple[str, str, bool]]:
    """(question 1, question 2, is duplicate) of Curai's Medical Question Pairs (English).

    For each of 1,524 patient questions a doctor wrote one rewrite with the same intent
    (duplicate) and one related question that the original's answer would not answer (distinct):
    the held-out design's "paraphrase" and "same-topic different question". Split by ORIGINAL
    question, never by pair: the question groups, in file order, alternate dev (even) and test
    (odd), so both halves hold every doctor's groups. The file carries no license, so it is read
    from a clone (`--mqp`), checked against its pinned sha256, and never copied into data/."""
    if not path.is_file():
        raise SystemExit(f"{path}: not found; clone https://github.com/{MQP_REPO} (commit {MQP_COMMIT}) "
                         "and pass its mqp.csv with --mqp")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha256 is not None and digest != sha256:
        raise SystemExit(f"{path}: sha256 {digest} is not the pinned {sha256} ({MQP_REPO} {MQP_COMMIT})")
    groups: dict[str, list[tuple[str, str, bool]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if len(row) != 4 or row[3] not in ("0", "1"):
                raise SystemExit(f"{path}:{line_no}: expected dr_id,question_1,question_2,label (0 or 1), got {row!r}")
            groups.setdefault(row[1], []).append((row[1], row[2], row[3] == "1"))
    keep = {"dev": 0, "test": 1}[split]
    return [pair for i, pairs in enumerate(groups.values()) if i % 2 == keep for pair in pairs]


def auc(sims: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a duplicate pair scores above a distinct pair."""
    pos, neg = sims[labels], sims[~labels]
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1.0
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def best_recall(sims: np.ndarray, labels: np.ndarray) -> float:
    """Duplicates merged at the threshold where MAX_WRONG_MERGES of these distinct pairs merge."""
    neg = np.sort(sims[~labels])[::-1]
    allowed = int(np.floor(MAX_WRONG_MERGES * neg.size))
    threshold = neg[allowed] + 1e-6  # strictly above the (allowed+1)-th highest different pair
    return float((sims[labels] >= threshold).mean())


def pawsx_pairs(language: str, limit: int) -> list[tuple[str, str, bool]]:
    out = []
    with open(DATA / "pawsx" / f"dev-{language}.tsv", encoding="utf-8") as f:
        for line in f:
            s1, s2, label = line.rstrip("\n").split("\t")
            out.append((s1, s2, label == "1"))
    return out[:limit]


class Scorer:
    def __init__(self, spec: str, prompt_name: str | None, cache_root: Path, batch_size: int):
        from curate.stages.dedupe import EmbeddingCache, load_model, resolve_model

        self.resolved = resolve_model(spec)
        self.model = load_model(str(self.resolved.path), None, "torch", 256)
        self.cache = EmbeddingCache(cache_root, self.resolved.key)
        self.prompt_name = prompt_name
        self.batch_size = batch_size
        self.seconds = 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        from curate.stages.dedupe import embed_texts

        started = time.perf_counter()
        emb, _ = embed_texts(texts, self.model, model_key=self.resolved.key, cache=self.cache,
                             batch_size=self.batch_size, prompt_name=self.prompt_name)
        self.seconds += time.perf_counter() - started
        return emb

    def cosines(self, a: list[str], b: list[str]) -> np.ndarray:
        ea, eb = self.embed(a), self.embed(b)
        return np.einsum("ij,ij->i", ea, eb)


def rates(sims: np.ndarray, labels: np.ndarray, threshold: float, lower: float | None = None) -> dict:
    dup, dis = sims[labels], sims[~labels]
    out = {"duplicates": int(dup.size), "distinct": int(dis.size),
           "duplicates_merged": round(float((dup >= threshold).mean()), 3) if dup.size else None,
           "distinct_merged": round(float((dis >= threshold).mean()), 3) if dis.size else None}
    if lower is not None:
        band = (sims >= lower) & (sims < threshold)
        out["duplicates_in_band"] = round(float(band[labels].mean()), 3) if dup.size else None
        out["distinct_in_band"] = round(float(band[~labels].mean()), 3) if dis.size else None
        out["pairs_in_band"] = round(float(band.mean()), 3)
    return out


def pick(sims: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(threshold, verify_above) on weighted pairs (each language weighs the same)."""
    dis_s, dis_w = sims[~labels], weights[~labels]
    order = np.argsort(-dis_s)
    cum = np.cumsum(dis_w[order]) / dis_w.sum()
    # Lowest threshold with at most MAX_WRONG_MERGES of the distinct weight at or above it.
    over = np.nonzero(cum > MAX_WRONG_MERGES)[0]
    threshold = float(dis_s[order][over[0]]) + 1e-4 if over.size else float(dis_s.min())
    dup_s, dup_w = sims[labels], weights[labels]
    order = np.argsort(-dup_s)
    cum = np.cumsum(dup_w[order]) / dup_w.sum()
    verify_above = float(dup_s[order][np.searchsorted(cum, MIN_RECALL)])
    return round(threshold, 3), round(min(verify_above, threshold), 3)


def question_report(sims: dict[str, tuple[np.ndarray, np.ndarray]], picked: tuple[float, float],
                    shipped: tuple[float, float]) -> dict:
    """A question-shaped set's dev/test separation and its test rates at the picked, the shipped
    and its own dev-only thresholds."""
    (dev_s, dev_l), (test_s, test_l) = sims["dev"], sims["test"]
    own = pick(dev_s, dev_l, np.ones(dev_s.size))
    return {"dev_pairs": [int(dev_l.sum()), int((~dev_l).sum())], "auc_dev": round(auc(dev_s, dev_l), 3),
            "auc_test": round(auc(test_s, test_l), 3), "best_recall_test": round(best_recall(test_s, test_l), 3),
            "test_at_picked": rates(test_s, test_l, *picked), "test_at_shipped": rates(test_s, test_l, *shipped),
            "own_dev_pick": list(own), "test_at_own_dev_pick": rates(test_s, test_l, *own)}


def pooled(parts: list[tuple[np.ndarray, np.ndarray]], shares: list[float]) -> tuple[np.ndarray, ...]:
    """Concatenated (cosines, labels, weights), each part weighing its share of the pool."""
    weights = [np.full(s.size, share / s.size) for (s, _), share in zip(parts, shares, strict=True)]
    return np.concatenate([s for s, _ in parts]), np.concatenate([lab for _, lab in parts]), np.concatenate(weights)


def calibrate(spec: str, prompt_name: str | None, languages: tuple[str, ...], cache_root: Path,
              pawsx_limit: int, batch_size: int, cross: bool = False, mqp: Path | None = None,
              question_share: float = 0.0) -> dict:
    """Per-language picks on dev (each language's own threshold), a pooled pick (the model-wide
    threshold that languages without public data get), and both reported on test.

    With `mqp`, the question-shaped Medical Question Pairs are measured too; with `question_share`
    > 0 their dev pairs join the picks for English (its own pick and the pool) with that share of
    the weight, the STS-B languages sharing the rest equally."""
    from curate.stages.dedupe import calibration_for

    scorer = Scorer(spec, prompt_name, cache_root, batch_size)
    questions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if mqp is not None:  # first: a pick below needs its dev pairs
        for split in ("dev", "test"):
            pairs = mqp_pairs(mqp, split)
            questions[split] = (scorer.cosines([p[0] for p in pairs], [p[1] for p in pairs]), np.array([p[2] for p in pairs]))
    share = question_share if questions else 0.0
    result: dict = {"model": scorer.resolved.name, "spec": spec, "prompt_name": prompt_name,
                    "languages": list(languages), "per_language": {}}
    dev_s, dev_l, dev_w, test_sets = [], [], [], {}
    for lang in languages:  # one language at a time (dev, then test), so a stopped run still reports some
        pairs = stsb_pairs(lang, "dev")
        sims = scorer.cosines([p[0] for p in pairs], [p[1] for p in pairs])
        labels = np.array([p[2] for p in pairs])
        dev_s.append(sims)
        dev_l.append(labels)
        dev_w.append(np.full(len(pairs), 1.0 / len(pairs)))
        if lang == "en" and share:
            threshold, lower = pick(*pooled([(sims, labels), questions["dev"]], [1.0 - share, share]))
        else:
            threshold, lower = pick(sims, labels, dev_w[-1])
        pairs = stsb_pairs(lang, "test")
        test_sets[lang] = (scorer.cosines([p[0] for p in pairs], [p[1] for p in pairs]), np.array([p[2] for p in pairs]))
        result["per_language"][lang] = {"threshold": threshold, "verify_above": lower,
                                        "dev_pairs": [int(labels.sum()), int((~labels).sum())],
                                        "test": rates(*test_sets[lang], threshold, lower)}
        print(json.dumps({lang: result["per_language"][lang], "embed_s": round(scorer.seconds)}), file=sys.stderr,
              flush=True)
    parts = list(zip(dev_s, dev_l, strict=True)) + ([questions["dev"]] if share else [])
    threshold, lower = pick(*pooled(parts, [(1.0 - share) / len(dev_s)] * len(dev_s) + ([share] if share else [])))
    result |= {"threshold": threshold, "verify_above": lower, "question_share": share}
    if questions:
        shipped = calibration_for(scorer.resolved.name)
        result["questions"] = {"mqp": question_report(questions, (threshold, lower),
                                                      (shipped.threshold, shipped.verify_above))}
        print(json.dumps({"mqp": result["questions"]["mqp"]}), file=sys.stderr, flush=True)
    for lang, (sims, labels) in test_sets.items():
        result["per_language"][lang]["test_at_model_wide"] = rates(sims, labels, threshold, lower)
    if cross and len(languages) > 1 and "en" in languages:
        cross_rates = {}
        en = stsb_pairs("en", "test")
        for lang in languages:
            if lang == "en" or lang not in STSB_MULTI_MT:  # only the DeepL files are row-parallel to en
                continue
            other = stsb_pairs(lang, "test")
            sims = scorer.cosines([p[0] for p in en], [p[1] for p in other])
            cross_rates[f"en-{lang}"] = rates(sims, np.array([p[2] for p in en]), threshold, lower)
        result["stsb_test_cross_language"] = cross_rates
    if pawsx_limit:
        paws = {}
        for lang in (lang for lang in PAWSX_LANGUAGES if lang in languages):
            pairs = pawsx_pairs(lang, pawsx_limit)
            sims = scorer.cosines([p[0] for p in pairs], [p[1] for p in pairs])
            labels = np.array([p[2] for p in pairs])  # at the model-wide pick, the value every language ships with
            paws[lang] = rates(sims, labels, threshold, lower) | {"auc": round(auc(sims, labels), 3),
                                                                  "best_recall": round(best_recall(sims, labels), 3)}
        result["pawsx_dev"] = paws
    result["embed_seconds"] = round(scorer.seconds, 1)
    return result


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"### {r['model']} (prompt {r['prompt_name']}): model-wide threshold {r['threshold']}, "
                     f"verify_above {r['verify_above']}\n")
        lines.append("| language | dev pairs (para / diff) | threshold | verify_above | test pairs | paraphrases merged "
                     "| same-topic different merged | para merged + band | diff merged + band "
                     "| at model-wide: para / diff merged |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for lang, v in r["per_language"].items():
            t, w = v["test"], v["test_at_model_wide"]
            lines.append(
                f"| {lang} | {v['dev_pairs'][0]} / {v['dev_pairs'][1]} | {v['threshold']} | {v['verify_above']} "
                f"| {t['duplicates']} / {t['distinct']} | {t['duplicates_merged']} | {t['distinct_merged']} "
                f"| {round(t['duplicates_merged'] + t['duplicates_in_band'], 3)} "
                f"| {round(t['distinct_merged'] + t['distinct_in_band'], 3)} "
                f"| {w['duplicates_merged']} / {w['distinct_merged']} |")
        for name in ("stsb_test_cross_language", "pawsx_dev"):
            for lang, v in r.get(name, {}).items():
                lines.append(f"| {name} {lang} | | | | {v['duplicates']} / {v['distinct']} | {v['duplicates_merged']} "
                             f"| {v['distinct_merged']} | | | |")
        lines.append("")
        for name, v in r.get("questions", {}).items():
            t, s, o = v["test_at_picked"], v["test_at_shipped"], v["test_at_own_dev_pick"]
            lines.append(f"{name} (question-shaped, en): dev {v['dev_pairs']}, AUC dev {v['auc_dev']} test {v['auc_test']}, "
                         f"best recall at 5% wrong (test) {v['best_recall_test']}; test para / diff merged: at the "
                         f"pick {t['duplicates_merged']} / {t['distinct_merged']}, at the shipped table "
                         f"{s['duplicates_merged']} / {s['distinct_merged']}, at its own dev pick {v['own_dev_pick']} "
                         f"{o['duplicates_merged']} / {o['distinct_merged']}")
        lines.append("")
        # The shipped policy: every language gets the pooled value (each language's own pick rests
        # on ~60 same-topic pairs and did worse on test than the pool; docs/dedupe.md).
        lines.append(f"calibration.toml entries (the pool, question share {r.get('question_share', 0.0)}):\n")
        for lang in r["per_language"]:
            lines.append(f"{lang} = {{ threshold = {r['threshold']}, verify_above = {r['verify_above']} }}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    global MAX_DISTINCT, MAX_DUPLICATE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable); default embeddinggemma")
    parser.add_argument("--prompt", default="query", help="prompt name for multilingual models (EmbeddingGemma: "
                        "query, the shipped one; STS, Clustering, ...; compare them with bench/dedupe_prompts.py)")
    parser.add_argument("--pawsx-limit", type=int, default=0, help="PAWS-X dev pairs per language (0: skip)")
    parser.add_argument("--cross", action="store_true", help="also report English vs other-language pairs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "calibration-embeddings")
    parser.add_argument("--languages", help="comma-separated languages (default: the project's 11)")
    parser.add_argument("--max-distinct", type=int, default=MAX_DISTINCT, help="distinct pairs per language and split")
    parser.add_argument("--max-duplicate", type=int, help="duplicate pairs per language and split (default: all)")
    parser.add_argument("--mqp", type=Path, help="mqp.csv of a clone of curai/medical-question-pair-dataset "
                        "(question-shaped, English; not copied into data/: it carries no license)")
    parser.add_argument("--question-share", type=float, default=0.0, help="weight of the --mqp dev pairs in the "
                        "English and pooled picks (0: measured only)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    MAX_DISTINCT, MAX_DUPLICATE = args.max_distinct, args.max_duplicate
    languages = tuple(args.languages.split(",")) if args.languages else DEFAULT_LANGUAGES
    results = []
    for spec in args.model or ["embeddinggemma"]:
        english_only = spec == "minilm-bundled"
        results.append(calibrate(spec, None if english_only else args.prompt, ("en",) if english_only else languages,
                                 args.cache, args.pawsx_limit, args.batch_size, args.cross, args.mqp,
                                 args.question_share))
        print(json.dumps(results[-1], indent=1), flush=True)
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
