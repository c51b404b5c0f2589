"""Dedupe benchmark: near-duplicate search at scale, encode overhead, labeled-set quality.

    uv run python bench/dedupe_bench.py search --rows 100000 --rows 1000000
    uv run python bench/dedupe_bench.py encode            # real texts, curate vs raw model.encode
    uv run python bench/dedupe_bench.py quality           # precision/recall on data/paraphrase_eval
    uv run python bench/dedupe_bench.py all --json bench/results/dedupe.json

`search` runs each size in a child process so peak RSS (ru_maxrss) is per size. The data are
synthetic L2-normalized 384-d vectors with topic structure (points scattered around topic
centres, pairwise cosine ~0.5 inside a topic) and 5% planted near-duplicates (cosine 0.90-0.99),
so recall is known. The baseline is raw faiss doing the same job (IndexIVFFlat, nlist=sqrt(n),
k=10 search of every row, then the same threshold); at 1M rows its query time is measured on a
10% sample of queries and scaled up (said so in the output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DIM = 384
MIN_SIM = 0.85  # threshold 0.88 minus a 0.03 report margin


def synthetic(n: int, seed: int = 0, dup_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors plus the planted (original, copy) row pairs."""
    rng = np.random.default_rng(seed)
    topics = max(1, n // 500)
    centres = rng.standard_normal((topics, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):  # in blocks: no second n x d temporary
        m = min(step, n - start)
        block = centres[rng.integers(0, topics, m)] + rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM)
        x[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    pairs = int(n * dup_fraction)
    perm = rng.permutation(n)
    src, dst = perm[:pairs], perm[pairs : 2 * pairs]
    # cosine ~ 1/sqrt(1 + sigma^2): sigma 0.1..0.48 gives 0.90..0.995
    sigma = rng.uniform(0.1, 0.48, pairs).astype(np.float32)
    for start in range(0, pairs, step):
        s, d, sg = src[start : start + step], dst[start : start + step], sigma[start : start + step]
        y = x[s] + sg[:, None] * rng.standard_normal((len(s), DIM), dtype=np.float32) / np.sqrt(DIM)
        x[d] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return x, src, dst


def _recall(a: np.ndarray, b: np.ndarray, src: np.ndarray, dst: np.ndarray, n: int) -> float:
    found = set((np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)).tolist())
    truth = np.minimum(src, dst).astype(np.int64) * n + np.maximum(src, dst)
    return float(np.mean([t in found for t in truth.tolist()]))


def search_child(n: int, method: str) -> dict:
    import faiss

    from curate.stages.dedupe import near_pairs

    t0 = time.perf_counter()
    x, src, dst = synthetic(n)
    gen_s = time.perf_counter() - t0
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out = {"rows": n, "method": method, "generate_s": round(gen_s, 1), "threads": faiss.omp_get_max_threads()}
    t0, cpu0 = time.perf_counter(), time.process_time()
    if method == "curate":
        pairs = near_pairs(x, min_similarity=MIN_SIM, k=10, partition_rows=20_000, probe=2)
        a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
        out["pairs"] = len(a)
    else:
        nlist = round(math.sqrt(n))
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(1)
        index.train(x[rng.choice(n, min(n, nlist * 64), replace=False)])
        index.add(x)
        index.nprobe = 2
        train_add_s = time.perf_counter() - t0
        sample = n if n <= 200_000 else n // 10
        queries = np.arange(n) if sample == n else np.sort(rng.choice(n, sample, replace=False))
        t1 = time.perf_counter()
        sims, ids = index.search(x[queries], 11)
        query_s = time.perf_counter() - t1
        keep = (sims >= MIN_SIM) & (ids != queries[:, None]) & (ids >= 0)
        qa = np.repeat(queries, 11).reshape(-1, 11)[keep]
        qb = ids[keep]
        out["train_add_s"] = round(train_add_s, 1)
        out["query_sample"] = int(sample)
        out["query_s_measured"] = round(query_s, 1)
        if sample != n:
            # Recall only over planted pairs whose either end was queried.
            mask = np.isin(src, queries) | np.isin(dst, queries)
            src, dst = src[mask], dst[mask]
            out["search_s_extrapolated"] = round(train_add_s + query_s * n / sample, 1)
        a, b = qa, qb
    out["search_s"] = round(time.perf_counter() - t0, 1)
    out["search_cpu_s"] = round(time.process_time() - cpu0, 1)  # all threads; wall is inflated by a busy machine
    out["recall_planted"] = round(_recall(a, b, src, dst, n), 4)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    out["data_rss_gb"] = round(rss_data, 2)
    return out


def run_search(sizes: list[int], baseline: bool) -> list[dict]:
    results = []
    for n in sizes:
        for method in ["curate"] + (["faiss-ivf"] if baseline else []):
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "_search_child", str(n), method],
                                  capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1]) | {"load_before": round(load, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def real_texts() -> list[str]:
    """About 1,150 real prompts (English and Chinese) from the data shipped in the repo."""
    import csv

    data = REPO / "data"
    texts: list[str] = []
    for name in ("censored.txt", "uncensored.txt", "other.txt"):
        texts += [t.strip() for t in (data / "deccp" / name).read_text(encoding="utf-8").splitlines() if t.strip()]
    for name in ("en-US.txt", "zh-CN.txt"):
        path = data / "china_politics_eval" / name
        if path.exists():
            texts += [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    for path, col in ((data / "harmbench" / "harmbench_behaviors_text_all.csv", "Behavior"),
                      (data / "xstest" / "xstest_prompts.csv", "prompt")):
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                texts += [row[col] for row in csv.DictReader(f) if row[col].strip()]
    return texts


def run_encode(model_spec: str, batch_size: int, rounds: int) -> dict:
    from curate.stages.dedupe import EmbeddingCache, embed_texts, load_model, resolve_model

    texts = list(dict.fromkeys(real_texts()))  # unique: curate encodes a repeated text only once
    resolved = resolve_model(model_spec)
    model = load_model(str(resolved.path))
    model.encode(texts[:64], batch_size=batch_size)  # warm-up
    raw_s, ours_s, cached_s = [], [], []
    for _ in range(rounds):  # alternate, so load changes hit both sides alike
        t0 = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        raw_s.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(tmp, resolved.key)
            t0 = time.perf_counter()
            embed_texts(texts, model, model_key=resolved.key, cache=cache, batch_size=batch_size)
            ours_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, stats = embed_texts(texts, model, model_key=resolved.key, cache=cache, batch_size=batch_size)
            cached_s.append(time.perf_counter() - t0)
            assert stats.computed == 0
    raw, ours = min(raw_s), min(ours_s)
    out = {
        "model": resolved.name, "texts": len(texts), "batch_size": batch_size, "rounds": rounds,
        "raw_encode_texts_per_s": round(len(texts) / raw, 1), "curate_texts_per_s": round(len(texts) / ours, 1),
        "curate_vs_raw": round(raw / ours, 3), "cached_rerun_s": round(min(cached_s), 3),
        "raw_s": [round(s, 2) for s in raw_s], "curate_s": [round(s, 2) for s in ours_s],
    }
    print(json.dumps(out), flush=True)
    return out


def run_real_dedupe(model_spec: str) -> dict:
    import polars as pl

    from curate.stages.dedupe import DedupeConfig, dedupe_frame
    from curate.text.langid import detect_languages

    texts = real_texts()
    df = pl.DataFrame({"text": texts, "language": detect_languages(texts)[0]})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = dedupe_frame(df, DedupeConfig(model=model_spec), group_col=None, cache_dir=Path(tmp))
        seconds = time.perf_counter() - t0
    stats = out.report["dedupe"]
    result = {"rows": len(texts), "model": stats["model"], "seconds_incl_model_load": round(seconds, 1),
              "exact_duplicates": stats["exact_duplicates"], "semantic_duplicates": stats["semantic_duplicates"],
              "exact_only_languages": stats.get("exact_only_languages"),
              "examples": out.tables["clusters"].filter(pl.col("duplicate_reason") == "semantic").head(3)["text"].to_list()}
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return result


def run_quality(model_spec: str, prompt_name: str | None, thresholds: list[float]) -> dict:
    from curate.stages.dedupe import DedupeConfig, load_model, resolve_model

    pairs_file = REPO / "data" / "paraphrase_eval" / "pairs.jsonl"
    rows = [json.loads(line) for line in pairs_file.read_text(encoding="utf-8").splitlines()]
    resolved = resolve_model(model_spec)
    model = load_model(str(resolved.path))
    kw = {"normalize_embeddings": True, "prompt_name": prompt_name, "batch_size": 64}
    a = model.encode([r["a"] for r in rows], **kw)
    b = model.encode([r["b"] for r in rows], **kw)
    sims = (a * b).sum(axis=1)
    is_dup = np.array([r["label"] == "duplicate" for r in rows])
    is_en = np.array([r["language"] == "en" for r in rows])
    table = []
    for t in thresholds:
        for subset, mask in (("en", is_en), ("non-en", ~is_en), ("all", np.ones_like(is_en))):
            pred = sims[mask] >= t
            tp = int((pred & is_dup[mask]).sum())
            fp = int((pred & ~is_dup[mask]).sum())
            fn = int((~pred & is_dup[mask]).sum())
            table.append({"threshold": t, "subset": subset, "pairs": int(mask.sum()),
                          "precision": round(tp / max(1, tp + fp), 3), "recall": round(tp / max(1, tp + fn), 3)})
    out = {"model": resolved.name, "prompt_name": prompt_name, "default_threshold": DedupeConfig().threshold,
           "table": table}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_search_child":
        print(json.dumps(search_child(int(sys.argv[2]), sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["search", "encode", "quality", "real", "all"])
    parser.add_argument("--rows", type=int, action="append", help="search sizes (default 100000 and 1000000)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw faiss baseline")
    parser.add_argument("--model", default="minilm-bundled")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write all results here")
    args = parser.parse_args()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.what in ("search", "all"):
        results["search"] = run_search(args.rows or [100_000, 1_000_000], not args.no_baseline)
    if args.what in ("encode", "all"):
        results["encode"] = run_encode(args.model, args.batch_size, args.rounds)
    if args.what in ("real", "all"):
        results["real"] = run_real_dedupe(args.model)
    if args.what in ("quality", "all"):
        thresholds = [0.8, 0.84, 0.86, 0.88, 0.9, 0.92]
        results["quality"] = [run_quality("minilm-bundled", None, thresholds)]
        from curate.stages.dedupe import embeddinggemma_path

        if (embeddinggemma_path() / "modules.json").is_file():
            results["quality"].append(run_quality("embeddinggemma", "STS", thresholds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
