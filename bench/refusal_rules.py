"""Throughput of the rules refusal detector vs the same patterns applied row by row with Python `re`.

    uv run python bench/refusal_rules.py [--rows 20000] [--repeats 3]

Rows are the 161 real replies of data/refusal_eval/labeled.jsonl repeated to --rows. The baseline
compiles the same TOML patterns with `re` and, per row, checks the head/whole text and counts
official-line and balance hits: the work the detector's polars expressions do, minus the scoring
arithmetic. Both must agree on the per-group hit flags (checked) so the comparison is like for like.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import polars as pl

from curate.refusal import RefusalConfig, classify_refusals, load_rules

REPO = Path(__file__).resolve().parent.parent


def raw_re(texts: list[str], lead: int) -> list[tuple[bool, bool, int]]:
    rules = load_rules(None)
    # polars' (?i) prefix is re.I here; the Rust-only syntax in the file (\p{...}) is not used by the rules.
    hard = [re.compile(p[4:], re.I) for p in rules["hard"]]
    defl = [re.compile(p[4:], re.I) for p in rules["deflection"]]
    official = [re.compile(p[4:], re.I) for p in rules["official_line"]]
    balance = [re.compile(p[4:], re.I) for p in rules["balance"]]
    out = []
    for text in texts:
        t = (text or "").strip()
        head = t[:lead]
        hard_hit = any(p.search(head) for p in hard) or any(p.search(t) for p in hard)
        defl_hit = any(p.search(head) for p in defl) or any(p.search(t) for p in defl)
        hits = sum(1 for p in official if p.search(t)) - min(3, sum(1 for p in balance if p.search(t)))
        out.append((hard_hit, defl_hit, hits))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    texts = [json.loads(line)["response"] for line in (REPO / "data/refusal_eval/labeled.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = (texts * (args.rows // len(texts) + 1))[: args.rows]
    df = pl.DataFrame({"response": texts})
    cfg = RefusalConfig(mode="rules")
    classify_refusals(df.head(10), cfg)  # compile patterns once, outside the timing
    ours, base = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        classify_refusals(df, cfg)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        raw_re(texts, cfg.lead_chars)
        base.append(time.perf_counter() - t)
    mean_chars = statistics.mean(len(x) for x in texts)
    print(f"rows={args.rows} mean_chars={mean_chars:.0f} repeats={args.repeats}")
    for name, times in (("curate rules (polars)", ours), ("python re, row by row", base)):
        best = min(times)
        print(f"{name:24s} best {best:.3f} s  {args.rows / best:,.0f} rows/s")
    print(f"speed-up {min(base) / min(ours):.2f}x")


if __name__ == "__main__":
    main()
