"""Throughput of the rules refusal detector vs the same patterns applied row by row with Python `re`.

    uv run python bench/refusal_rules.py [--rows 20000] [--repeats 3]
    uv run python bench/refusal_rules.py --per-call 1,100,10000 [--reference OLD_RULES_PY]

Rows are the 161 real replies of data/refusal_eval/labeled.jsonl repeated to --rows. The baseline
compiles the same TOML patterns with `re` and, per row, checks the head/whole text and counts
official-line and balance hits: the work the detector's polars expressions do, minus the scoring
arithmetic. Both must agree on the per-group hit flags (checked) so the comparison is like for like.

`--per-call` measures what one call costs at each size in a warm process, as every shard of answers
and judge_score pays it: a first call on other rows compiles what stays compiled, then the median of
--repeats calls. `--reference` loads an earlier rules.py (`git show 2ad87e1:curate/refusal/rules.py
> /tmp/old_rules.py`) and times its classify_rules the same way in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import time
from pathlib import Path

import polars as pl

from curate.refusal import RefusalConfig, classify_refusals, load_rules, rules_file

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


def _reference(path: str):
    spec = importlib.util.spec_from_file_location("reference_rules", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.RULES_PATH = rules_file(None)  # the earlier file looks for the rules beside itself
    return module.classify_rules


def per_call(texts: list[str], sizes: list[int], repeats: int, reference: str | None) -> None:
    cfg = RefusalConfig(mode="rules")
    rules = load_rules(None)
    patterns = [re.compile(p[4:], re.I) for group in rules.values() for p in group]
    implementations = {"curate rules (polars)": lambda df: classify_refusals(df, cfg)}
    if reference:
        earlier = _reference(reference)
        implementations[f"reference {Path(reference).name}"] = lambda df: earlier(df, cfg)

    def raw(df: pl.DataFrame) -> None:  # every pattern on every reply (re keeps them compiled)
        for text in df["response"]:
            [p.search(text) for p in patterns]

    implementations["python re, every pattern"] = raw
    print(f"per call, warm process, median of {repeats} calls, each on other rows")
    for size in sizes:
        frames = [pl.DataFrame({"response": [texts[(i * size + j) % len(texts)] for j in range(size)]}) for i in range(repeats + 1)]
        chars = frames[0]["response"].str.len_chars().sum()
        line = [f"rows={size:<6} chars={chars:<8}"]
        for name, run in implementations.items():
            run(frames[-1])  # warm-up on other rows
            times = []
            for frame in frames[:repeats]:
                t = time.perf_counter()
                run(frame)
                times.append(time.perf_counter() - t)
            line.append(f"{name} {statistics.median(times) * 1000:.1f} ms")
        print("  ".join(line), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-call", help="comma-separated row counts: time one call at each size instead")
    ap.add_argument("--reference", help="an earlier curate/refusal/rules.py to time beside the current one")
    args = ap.parse_args()
    texts = [json.loads(line)["response"] for line in (REPO / "data/refusal_eval/labeled.jsonl").read_text(encoding="utf-8").splitlines()]
    if args.per_call:
        per_call([t or "" for t in texts], [int(n) for n in args.per_call.split(",")], args.repeats, args.reference)
        return
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
