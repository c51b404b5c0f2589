"""Throughput of the trained refusal detector (model mode) vs raw fastText predict on the same texts.

    uv run python bench/refusal_bench.py [--rows 20000] [--repeats 3]

Rows are real replies (SpeechMap compliance data, en/zh/fi, cut to their first 4,000 characters)
repeated to --rows. Ours: `classify_refusals(mode="model")`, the whole path a caller pays: window
(head + tail), tokenisation in polars, fastText over four classes, calibration, kind, output frame.
Baseline: the same fastText model's `predict(k=4)` on the same texts with only the newline
replacement fastText needs (no windowing, no tokenisation, no calibration, no frame), so the
baseline does strictly less work. Best of --repeats, same process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import polars as pl

from curate.refusal import RefusalConfig, classify_refusals, load_detector

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "refusal_train" / "speechmap_compliance.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    lines = gzip.decompress(DATA.read_bytes()).decode("utf-8").splitlines()
    texts = [json.loads(line)["response"][:4000] for line in lines]
    texts = (texts * (args.rows // len(texts) + 1))[: args.rows]
    df = pl.DataFrame({"response": texts})
    cfg = RefusalConfig(mode="model")
    detector = load_detector()
    classify_refusals(df.head(10), cfg)  # load the model once, outside the timing
    ours, raw = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        classify_refusals(df, cfg)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        detector.model.predict([" ".join(x.split()) for x in texts], k=4)
        raw.append(time.perf_counter() - t)
    mean_chars = sum(map(len, texts)) / len(texts)
    best_ours, best_raw = min(ours), min(raw)
    print(json.dumps({
        "rows": args.rows, "mean_chars": round(mean_chars), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
        "model": detector.version, "ours_best_s": round(best_ours, 3), "ours_rows_per_s": round(args.rows / best_ours),
        "raw_fasttext_best_s": round(best_raw, 3), "raw_rows_per_s": round(args.rows / best_raw),
        "ours_all_s": [round(x, 3) for x in ours], "raw_all_s": [round(x, 3) for x in raw],
    }, indent=1))


if __name__ == "__main__":
    main()
