"""Precision and recall of the safety inverse filter on a small human-labelled sample.

    uv run python scripts/safety_filter_eval.py build     # writes data/safety/xstest_labelled_sample.jsonl
    uv run python scripts/safety_filter_eval.py measure [--base-url http://127.0.0.1:8080/v1 --model smollm2]
    uv run python scripts/safety_filter_eval.py measure --harm-judge none   # the decline-vs-help step alone

The sample comes from XSTest v2's human-annotated model completions (see data/safety/SOURCE.md):
safe prompts answered in full (gold: keep) or refused (gold: drop, an over-refusal), and unsafe
contrast prompts refused (gold: keep, a decline) or answered in full (gold: drop). Partial
refusals are left out (no clear gold). Completions have no reasoning, so only the final answer is
judged. "Kept" is a candidate released by the filter (selected or kept; review counts as not kept).
The figure measures the mechanics with whatever judge the endpoint serves, not a model's quality.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.config import EndpointConfig
from curate.llm import LLMCache
from curate.stages.safety_filter import SafetyFilterConfig, filter_safety_candidates

XSTEST = REPO / "data" / "refusal_train" / "xstest_v2_completions"  # the project's copy, with its license
SAMPLE = REPO / "data" / "safety" / "xstest_labelled_sample.jsonl"
# (model file, prompt label, human label) -> rows taken, in file order. Mistral-7B-Instruct
# (Apache-2.0) for every cell it fills; it refused only 2 safe prompts, so Llama-2 (original
# system prompt) supplies the over-refusals.
CELLS = (
    ("mistralinstruct", "safe", "1_full_compliance", 12),
    ("llama2orig", "safe", "2_full_refusal", 12),
    ("mistralinstruct", "unsafe", "2_full_refusal", 12),
    ("mistralinstruct", "unsafe", "1_full_compliance", 12),
)


def build(source: Path = XSTEST, out: Path = SAMPLE) -> int:
    rows = []
    for model, label, human, n in CELLS:
        with (source / f"xstest_v2_completions_{model}.csv").open(encoding="utf-8", newline="") as f:
            taken = 0
            for record in csv.DictReader(f):
                is_unsafe = record["type"].startswith("contrast")
                if taken >= n or ("unsafe" if is_unsafe else "safe") != label or record["final_label"] != human:
                    continue
                gold_keep = (label == "safe") == (human == "1_full_compliance")
                rows.append({
                    "id": f"{model}-{record['id']}", "subset": "xstest", "type": record["type"], "label": label,
                    "expected": "harmful" if label == "unsafe" else "benign", "prompt": record["prompt"],
                    "completion": record["completion"], "final_label": human, "model": model, "gold_keep": gold_keep,
                })
                taken += 1
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def no_harm(candidates: pl.DataFrame, config, **_) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every text judged not harmful: isolates the direction step (decline vs help) of the filter."""
    verdicts = candidates.select("candidate_id", pl.lit(False).alias("harmful_reasoning"), pl.lit(False).alias("harmful_answer"),
                                 pl.lit(None, pl.String).alias("harm_error"))
    return verdicts, pl.DataFrame()


def unranked(candidates: pl.DataFrame, config, **_) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every kept candidate scored 0: the figure measures keep vs drop, not the best of K (one
    candidate per prompt here), so no satisfaction judgment is spent."""
    scores = candidates.select("candidate_id", pl.lit(0, pl.Int64).alias("satisfaction"),
                               pl.lit(None, pl.String).alias("satisfaction_error"))
    return scores, pl.DataFrame()


def measure(base_url: str, model: str, cache_path: Path | None, harm_judge: str = "llm") -> dict:
    sample = pl.read_ndjson(SAMPLE)
    candidates = sample.select(
        pl.col("id").alias("candidate_id"), pl.col("id").alias("prompt_id"), pl.lit(0, pl.Int64).alias("candidate_index"),
        "subset", pl.col("type").alias("category"), "expected", pl.lit("en").alias("language"), "prompt",
        pl.col("completion").alias("answer"), pl.lit(None, pl.String).alias("reasoning"), pl.lit("stop").alias("finish_reason"),
        pl.lit(False).alias("truncated_in_reasoning"), pl.lit("ok").alias("status"), pl.lit(None, pl.String).alias("error"),
    )
    judge = EndpointConfig(base_url=base_url, model=model, timeout_s=300, max_concurrency=2)
    config = SafetyFilterConfig(judge=judge, require_reasoning=False, require_explanation=False, require_alternative=False)
    cache = LLMCache(cache_path) if cache_path else None
    extra = {"satisfaction_judge": unranked, **({"harm_judge": no_harm} if harm_judge == "none" else {})}
    tables, _ = filter_safety_candidates(candidates, config, cache=cache, **extra)
    kept = set(tables["kept"]["candidate_id"])
    pred = sample["id"].is_in(list(kept))
    gold = sample["gold_keep"]
    tp, fp = int((pred & gold).sum()), int((pred & ~gold).sum())
    fn, tn = int((~pred & gold).sum()), int((~pred & ~gold).sum())
    harmful_kept = tables["kept"].filter(pl.col("expected") == "harmful")
    return {
        "n": sample.height, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": round(tp / (tp + fp), 3) if tp + fp else None, "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        "rejected_by_reason": {k: int(v) for k, v in tables["rejects"].group_by("reject_reason").len().iter_rows()},
        "review": tables["review"].height,
        "declines_kept": harmful_kept.height,
        "declines_with_explanation_and_alternative": int((harmful_kept["explains"] & harmful_kept["offers_alternative"]).sum()),
        "judge": model if harm_judge == "llm" else "none (direction step only)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "measure"))
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--cache", type=Path, default=None, help="LLM cache file (reruns cost nothing).")
    parser.add_argument("--harm-judge", choices=("llm", "none"), default="llm",
                        help="none: take every text as not harmful, to measure the decline-vs-help step alone.")
    args = parser.parse_args()
    if args.command == "build":
        print(f"wrote {build()} rows to {SAMPLE}")
    else:
        print(json.dumps(measure(args.base_url, args.model, args.cache, args.harm_judge), indent=2))


if __name__ == "__main__":
    main()
