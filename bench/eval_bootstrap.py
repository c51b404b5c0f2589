"""Benchmark: curate.eval.metrics.summarize (bootstrap CIs for every breakdown) against
scipy.stats.bootstrap doing the same percentile intervals on the same prompt values.

    uv run python bench/eval_bootstrap.py [--prompts 200] [--languages 11] [--samples 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from scipy import stats

from curate.eval.metrics import ALL, prompt_values, sample_values, summarize


def judged_frame(prompts: int, languages: int, samples: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 2 * prompts * languages * samples
    endpoint = np.repeat(["base", "tuned"], n // 2)
    item = np.tile(np.repeat([f"p{i}" for i in range(prompts)], languages * samples), 2)
    language = np.tile(np.repeat([f"l{j}" for j in range(languages)], samples), 2 * prompts)
    category = np.tile(np.repeat([f"c{i % 8}" for i in range(prompts)], languages * samples), 2)
    return pl.DataFrame({
        "endpoint": endpoint, "set": "deccp", "kind": "blocked", "item_id": item, "language": language,
        "category": category, "label": "blocked", "sample_index": np.tile(np.arange(samples), n // samples),
        "status": np.where(rng.random(n) < 0.01, "error", "ok"), "refused": rng.random(n) < 0.4,
        "satisfaction": rng.integers(0, 5, n),
    })


def scipy_summary(judged: pl.DataFrame, resamples: int) -> dict[tuple, tuple[float, float]]:
    prompts = prompt_values(sample_values(judged))
    out = {}
    for frame in (prompts.with_columns(language=pl.lit(ALL), category=pl.lit(ALL)),
                  prompts.with_columns(category=pl.lit(ALL)), prompts.with_columns(language=pl.lit(ALL))):
        for key, group in frame.group_by(["endpoint", "set", "metric", "language", "category"]):
            values = group["value"].drop_nulls().to_numpy()
            res = stats.bootstrap((values,), np.mean, n_resamples=resamples, method="percentile", random_state=0,
                                  vectorized=True)
            out[key] = (res.confidence_interval.low, res.confidence_interval.high)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--languages", type=int, default=11)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    judged = judged_frame(args.prompts, args.languages, args.samples)
    print(f"{judged.height} sample rows: 2 endpoints x {args.prompts} prompts x {args.languages} languages x {args.samples} samples")

    started = time.perf_counter()
    ours = summarize(judged, resamples=args.resamples)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = scipy_summary(judged, args.resamples)
    scipy_s = time.perf_counter() - started

    diffs = []
    for r in ours.iter_rows(named=True):
        low, high = theirs[(r["endpoint"], r["set"], r["metric"], r["language"], r["category"])]
        diffs += [abs(r["ci_low"] - low), abs(r["ci_high"] - high)]
    print(f"groups: {ours.height}")
    print(f"curate summarize (all breakdowns, {args.resamples} resamples): {ours_s:.2f} s")
    print(f"scipy.stats.bootstrap, same groups:                 {scipy_s:.2f} s  (ratio {scipy_s / ours_s:.2f}x)")
    print(f"CI bound difference (different random draws): median {np.median(diffs):.4f}, max {max(diffs):.4f}")


if __name__ == "__main__":
    main()
