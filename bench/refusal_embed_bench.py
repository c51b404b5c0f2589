"""Throughput of the refusal detector's embed modes vs raw EmbeddingGemma `model.encode` on the same replies.

    nice -n 10 uv run python bench/refusal_embed_bench.py [--rows 512] [--repeats 2]

Rows: a seeded sample of real SpeechMap replies (en/zh/fi), each cut to its first 4,000 characters.
Ours: `classify_refusals` in `model+embed` (only replies whose model score is in the uncertain band
are embedded) and `embed` (every reply is), the whole path a caller pays (final-answer cut,
fastText, token window, embedding, head, stacker, calibration, output frame); `model` for
reference. Baseline: the same EmbeddingGemma's `encode` (prompt `Classification`, normalized, batch
16) on the same replies' token windows, every reply: what any embedding classifier must pay at least.
Best of --repeats, same process, models loaded before timing. Needs scripts/fetch-embeddinggemma.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from curate.refusal import RefusalConfig, classify_refusals
from curate.refusal.embed import PROMPT_NAME, load_embedder, window_texts

DATA = Path(__file__).resolve().parent.parent / "data" / "refusal_train" / "speechmap_compliance.jsonl.gz"


def best(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), [round(t, 2) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    lines = gzip.decompress(DATA.read_bytes()).decode("utf-8").splitlines()
    texts = [json.loads(line)["response"][:4000] for line in lines]
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))[: args.rows]]
    df = pl.DataFrame({"response": texts})
    model, _ = load_embedder()
    for mode in ("model", "model+embed", "embed"):  # load everything once, outside the timing
        classify_refusals(df.head(4), RefusalConfig(mode=mode))
    load_before = os.getloadavg()
    out: dict = {"rows": len(texts), "cpus": os.cpu_count(), "torch_threads": __import__("torch").get_num_threads()}
    for mode in ("model", "model+embed", "embed"):
        seconds, runs = best(lambda m=mode: classify_refusals(df, RefusalConfig(mode=m)), args.repeats)
        out[mode] = {"best_s": round(seconds, 2), "rows_per_s": round(len(texts) / seconds, 1), "all_s": runs}
    share = classify_refusals(df, RefusalConfig(mode="model+embed"))["detector"].eq("embed").mean()
    out["model+embed"]["embedded_share"] = round(float(share), 3)
    windows = window_texts(texts, model.tokenizer)
    seconds, runs = best(lambda: model.encode(windows, batch_size=16, prompt_name=PROMPT_NAME, normalize_embeddings=True,
                                              show_progress_bar=False), args.repeats)
    out["raw_encode_all_rows"] = {"best_s": round(seconds, 2), "rows_per_s": round(len(texts) / seconds, 1), "all_s": runs}
    out["load_avg_before_after"] = [load_before, os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
