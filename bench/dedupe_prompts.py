"""Compare EmbeddingGemma prompts (and text normalisation) for dedupe on the public calibration pairs.

    nice -n 10 uv run python bench/dedupe_prompts.py --every 2 --json bench/results/dedupe_prompts.json

Same pairs as bench/dedupe_calibration.py (STS-B translations: paraphrase = score >= 4.5,
same-topic different = 1..3; data/paraphrase_public), thinned to every `--every`-th pair per
language and split, and the same embedding cache, so the calibration rerun for a prompt measured
here re-embeds nothing. Per prompt and language:
- `auc_test`: probability that a paraphrase pair scores above a same-topic different pair (test);
- `best_recall_test`: paraphrases merged on test at the threshold where 5% of the test's
  different pairs merge (the separation itself, no transfer noise);
- `merge`: the threshold picked on dev (<= 5% wrong merges) applied to test: paraphrases / different merged;
- `recall`: the threshold picked on dev for >= 95% paraphrases merged applied to test, the other way round.
The picks are bench/dedupe_calibration.py's `pick`. Prompts: names from the model's
config_sentence_transformers.json, `none` for the raw text. `--normalise` adds, for each prompt, a
variant whose texts are NFKC-normalised, whitespace-collapsed and stripped of trailing
punctuation before embedding.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dedupe_calibration as cal  # noqa: E402  (the bench folder is not a package)

LANGUAGES = ("en", "zh", "ja", "ar", "de", "ko", "hi", "fr", "es", "ru", "pt")  # diverse first
PROMPTS = ("STS", "Clustering", "query", "none", "Classification", "document")
TRAILING = re.compile(r"[\s.?!。？！．｡،؟।]+$")


def normalise(text: str) -> str:
    """Language-general surface normalisation: NFKC, collapsed whitespace, no trailing sentence punctuation."""
    return TRAILING.sub("", " ".join(unicodedata.normalize("NFKC", text).split()))


def score(sims_dev, lab_dev, sims_test, lab_test) -> dict:
    threshold, verify_above = cal.pick(sims_dev, lab_dev, np.ones(sims_dev.size))
    merge, recall = cal.rates(sims_test, lab_test, threshold), cal.rates(sims_test, lab_test, verify_above)
    return {"auc_test": round(cal.auc(sims_test, lab_test), 3), "best_recall_test": round(cal.best_recall(sims_test, lab_test), 3),
            "threshold": threshold, "verify_above": verify_above,
            "merge": [merge["duplicates_merged"], merge["distinct_merged"]],
            "recall": [recall["duplicates_merged"], recall["distinct_merged"]],
            "pairs_test": [merge["duplicates"], merge["distinct"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default=",".join(PROMPTS))
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    parser.add_argument("--every", type=int, default=2, help="keep every n-th pair per language and split")
    parser.add_argument("--normalise", action="store_true", help="also measure normalised texts")
    parser.add_argument("--cache", type=Path, default=cal.REPO / ".cache" / "calibration-embeddings")
    parser.add_argument("--compare", help="two measured variants, e.g. STS,query: paired bootstrap of their difference")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scorer = cal.Scorer("embeddinggemma", None, args.cache, 32)
    prompts = args.prompts.split(",")
    variants = [(p, False) for p in prompts] + ([(p, True) for p in prompts] if args.normalise else [])
    results: dict = {}
    test_sims: dict = {}  # (variant, language) -> (test cosines, labels), for --compare
    for lang in args.languages.split(","):
        splits = {s: cal.stsb_pairs(lang, s)[:: args.every] for s in ("dev", "test")}
        for prompt, norm in variants:
            scorer.prompt_name = None if prompt == "none" else prompt
            sims = {}
            for split, pairs in splits.items():
                a, b = [p[0] for p in pairs], [p[1] for p in pairs]
                if norm:
                    a, b = [normalise(t) for t in a], [normalise(t) for t in b]
                sims[split] = (scorer.cosines(a, b), np.array([p[2] for p in pairs]))
            name = prompt + ("+norm" if norm else "")
            results.setdefault(name, {})[lang] = score(*sims["dev"], *sims["test"])
            test_sims[name, lang] = sims["test"]
            print(json.dumps({"prompt": name, "lang": lang, **results[name][lang], "embed_s": round(scorer.seconds)}),
                  flush=True)
        if args.json:  # after every language, so a stopped run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    print(table(results))
    if args.compare:
        a, b = args.compare.split(",")
        diff = bootstrap(test_sims, a, b, args.languages.split(","))
        print(json.dumps({"compare": f"{a} - {b}", **diff}))
        if args.json:
            args.json.write_text(json.dumps(results | {"compare": {f"{a} - {b}": diff}}, indent=1))


def bootstrap(test_sims: dict, a: str, b: str, languages: list[str], rounds: int = 1000) -> dict:
    """Mean over languages of a - b (AUC and best recall on test), with a 95% interval from
    resampling each language's test pairs (paraphrases and different pairs separately; the same
    resample for both variants, so the comparison is paired)."""
    rng = np.random.default_rng(0)
    observed = {"auc": [], "best_recall": []}
    draws = np.zeros((rounds, 2))
    for lang in languages:
        (sa, labels), (sb, _) = test_sims[a, lang], test_sims[b, lang]
        observed["auc"].append(cal.auc(sa, labels) - cal.auc(sb, labels))
        observed["best_recall"].append(cal.best_recall(sa, labels) - cal.best_recall(sb, labels))
        pos, neg = np.nonzero(labels)[0], np.nonzero(~labels)[0]
        for r in range(rounds):
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
            draws[r] += [cal.auc(sa[idx], labels[idx]) - cal.auc(sb[idx], labels[idx]),
                         cal.best_recall(sa[idx], labels[idx]) - cal.best_recall(sb[idx], labels[idx])]
    draws /= len(languages)
    out = {"languages": len(languages)}
    for j, key in enumerate(("auc", "best_recall")):
        out[key] = {"mean_difference": round(float(np.mean(observed[key])), 4),
                    "interval_95": [round(float(x), 4) for x in np.percentile(draws[:, j], [2.5, 97.5])],
                    "languages_a_better": int(sum(d > 0 for d in observed[key]))}
    return out


def table(results: dict) -> str:
    lines = ["| prompt | languages | AUC (test) | best recall at 5% wrong (test) | dev-picked merge: para / diff "
             "merged (test) | dev-picked 95% recall: para / diff merged (test) |", "|---|---|---|---|---|---|"]
    for name, per in results.items():
        v = list(per.values())
        mean = lambda f: round(float(np.mean([f(x) for x in v])), 3)  # noqa: E731
        lines.append(f"| {name} | {len(v)} | {mean(lambda x: x['auc_test'])} | {mean(lambda x: x['best_recall_test'])} "
                     f"| {mean(lambda x: x['merge'][0])} / {mean(lambda x: x['merge'][1])} "
                     f"| {mean(lambda x: x['recall'][0])} / {mean(lambda x: x['recall'][1])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
