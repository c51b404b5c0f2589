"""Dedupe benchmark: near-duplicate search at scale, encode overhead, labeled-set quality.

    uv run python bench/dedupe_bench.py search --rows 100000 --rows 1000000
    uv run python bench/dedupe_bench.py encode            # real texts, curate vs raw model.encode
    uv run python bench/dedupe_bench.py quality           # precision/recall on data/paraphrase_eval
    uv run python bench/dedupe_bench.py all --json bench/results/dedupe.json
    uv run python bench/dedupe_bench.py verify --model embeddinggemma --llm-base-url http://127.0.0.1:8081/v1 \
        --llm-model qwen1.5b --verify-pairs 40 --mqp <clone>/mqp.csv   # judge accuracy and cost on band pairs

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
    src, dst = plant_copies(x, rng, dup_fraction, step)
    return x, src, dst


def plant_copies(x: np.ndarray, rng: np.random.Generator, dup_fraction: float, step: int) -> tuple[np.ndarray, ...]:
    """Overwrite a random dup_fraction of rows with noisy copies of others; (originals, copies)."""
    n, dim = x.shape
    pairs = int(n * dup_fraction)
    perm = rng.permutation(n)
    src, dst = perm[:pairs], perm[pairs : 2 * pairs]
    # cosine ~ 1/sqrt(1 + sigma^2): sigma 0.1..0.48 gives 0.90..0.995
    sigma = rng.uniform(0.1, 0.48, pairs).astype(np.float32)
    for start in range(0, pairs, step):
        s, d, sg = src[start : start + step], dst[start : start + step], sigma[start : start + step]
        y = x[s].astype(np.float32) + sg[:, None] * rng.standard_normal((len(s), dim), dtype=np.float32) / np.sqrt(dim)
        x[d] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return src, dst


def real_base(cache_dir: Path) -> np.ndarray:
    """Every vector in one model's embedding-cache folder (real embeddings of real sentences)."""
    parts = [np.load(p) for p in sorted(cache_dir.glob("*.emb.npy"))]
    if not parts:
        sys.exit(f"no embeddings in {cache_dir}: run bench/dedupe_calibration.py first (it fills that cache)")
    return np.unique(np.concatenate(parts).astype(np.float32), axis=0)


def derived(n: int, base: np.ndarray, seed: int = 0, dup_fraction: float = 0.05) -> tuple[np.ndarray, ...]:
    """n float16 vectors derived from real embeddings, plus planted (original, copy) pairs.

    Each row mixes three random real embeddings with random weights (plus noise), so
    rows spread over the real embedding space instead of sitting in tight synthetic clusters
    that line up with k-means cells; copies get noise giving cosine 0.90-0.99 to their original."""
    rng = np.random.default_rng(seed)
    m, dim = base.shape
    x = np.empty((n, dim), dtype=np.float16)
    step = 50_000
    for start in range(0, n, step):
        b = min(step, n - start)
        weights = rng.dirichlet([3.0, 3.0, 3.0], b).astype(np.float32)  # no one base dominates
        idx = rng.integers(0, m, (b, 3))
        v = np.einsum("bk,bkd->bd", weights, base[idx])
        v += rng.standard_normal((b, dim), dtype=np.float32) * (0.25 / np.sqrt(dim))
        x[start : start + b] = v / np.linalg.norm(v, axis=1, keepdims=True)
    src, dst = plant_copies(x, rng, dup_fraction, step)
    return x, src, dst


def _recall(a: np.ndarray, b: np.ndarray, src: np.ndarray, dst: np.ndarray, n: int) -> float:
    found = set((np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)).tolist())
    truth = np.minimum(src, dst).astype(np.int64) * n + np.maximum(src, dst)
    return float(np.mean([t in found for t in truth.tolist()]))


def search_child(n: int, method: str, source: str = "synthetic") -> dict:
    from curate.stages.dedupe import near_pairs  # first: it sets faiss's OpenMP wait policy before faiss loads

    import faiss

    t0 = time.perf_counter()
    if source == "synthetic":
        x, src, dst = synthetic(n)
    else:  # a folder of real embeddings (an embedding-cache folder)
        base = real_base(Path(source))
        x, src, dst = derived(n, base)
        del base
    dim = x.shape[1]
    gen_s = time.perf_counter() - t0
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out = {"rows": n, "method": method, "source": "synthetic" if source == "synthetic" else "real-derived",
           "dim": dim, "dtype": str(x.dtype), "generate_s": round(gen_s, 1), "threads": faiss.omp_get_max_threads()}
    t0, cpu0 = time.perf_counter(), time.process_time()
    if method == "curate":
        pairs = near_pairs(x, min_similarity=MIN_SIM, k=10, partition_rows=20_000, probe=2)
        a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
        out["pairs"] = len(a)
    else:
        nlist = round(math.sqrt(n))
        x = x.astype(np.float32, copy=False)  # faiss takes float32 only
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
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


def run_search(sizes: list[int], baseline: bool, source: str = "synthetic") -> list[dict]:
    results = []
    for n in sizes:
        for method in ["curate"] + (["faiss-ivf"] if baseline else []):
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "_search_child", str(n), method, source],
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


def run_encode(model_spec: str, batch_size: int, rounds: int, limit: int | None = None) -> dict:
    from curate.stages.dedupe import DedupeConfig, EmbeddingCache, embed_texts, resolve_model
    from curate.stages.dedupe.device import load_for_config

    texts = list(dict.fromkeys(real_texts()))[:limit]  # unique: curate encodes a repeated text only once
    resolved = resolve_model(model_spec)
    # The model as the stage loads it (device, dtype, calibrated prompt); raw encode uses the same.
    model, prompt_name = load_for_config(DedupeConfig(model=model_spec, batch_size=batch_size), resolved)
    model.encode(texts[:64], batch_size=batch_size, prompt_name=prompt_name)  # warm-up
    raw_s, ours_s, cached_s = [], [], []
    for _ in range(rounds):  # alternate, so load changes hit both sides alike
        t0 = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     prompt_name=prompt_name)
        raw_s.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(tmp, resolved.key)
            t0 = time.perf_counter()
            embed_texts(texts, model, model_key=resolved.key, cache=cache, batch_size=batch_size,
                        prompt_name=prompt_name)
            ours_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, stats = embed_texts(texts, model, model_key=resolved.key, cache=cache, batch_size=batch_size,
                                   prompt_name=prompt_name)
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


def band_sample(model_spec: str, cache_dir: Path, max_pairs: int, mqp: Path | None) -> tuple[list[tuple], dict]:
    """Up to `max_pairs` band pairs of the public TEST splits, half paraphrases and half same-topic
    different pairs, spread evenly over the sources (Medical Question Pairs test when `mqp` is
    given, STS-B test of the 11 languages), each scored against its language's band.
    Returns (source, text a, text b, is duplicate, cosine) rows and the band counts per source."""
    import bench.dedupe_calibration as calibration
    from bench.dedupe_calibration import DEFAULT_LANGUAGES, Scorer, mqp_pairs, stsb_pairs
    from curate.stages.dedupe import calibration_for, resolve_model

    cal = calibration_for(resolve_model(model_spec).name)
    scorer = Scorer(model_spec, cal.prompt_name, cache_dir, 32)
    # The STS-B test pairs of the shipped calibration command (docs/dedupe.md), so a calibrated cache serves them.
    calibration.MAX_DUPLICATE, calibration.MAX_DISTINCT = 81, 64
    sources = ([("mqp-en", mqp_pairs(mqp, "test"))] if mqp else []) + [
        (f"stsb-{lang}", stsb_pairs(lang, "test")) for lang in DEFAULT_LANGUAGES]
    pools: dict[bool, list[tuple]] = {True: [], False: []}
    counts = {}
    for name, pairs in sources:
        lang = name.split("-")[1]
        low, high = cal.verify_above_for(lang), cal.threshold_for(lang)
        sims = scorer.cosines([p[0] for p in pairs], [p[1] for p in pairs])
        band = [(name, a, b, dup, float(s)) for (a, b, dup), s in zip(pairs, sims, strict=True) if low <= s < high]
        counts[name] = {"pairs": len(pairs), "in_band": len(band)}
        for row in band:
            pools[row[3]].append(row)
    sample = []
    for dup, pool in pools.items():  # every k-th, so each source contributes in proportion to its band
        want = max_pairs // 2
        step = max(1, len(pool) // want) if want else 1
        sample += pool[::step][:want]
    return sample, counts


def run_verify(model_spec: str, base_url: str, llm_model: str, max_pairs: int, mqp: Path | None = None,
               cache_dir: Path = REPO / ".cache" / "calibration-embeddings") -> dict:
    """The verification band with a real local LLM judge: accuracy on band pairs of the public
    test splits (half paraphrases, half same-topic different pairs), seconds per pair through the
    stage's verify path, and how many band pairs real prompts produce per 100k rows."""
    import polars as pl

    from curate.config import EndpointConfig
    from curate.stages.dedupe import DedupeConfig, PairVerifier, calibration_for, dedupe_frame, resolve_model, verify_pairs

    resolved = resolve_model(model_spec)
    cal = calibration_for(resolved.name)
    sample, counts = band_sample(model_spec, cache_dir, max_pairs, mqp)
    frame = pl.DataFrame({"a": list(range(len(sample))), "b": list(range(len(sample))),
                          "similarity": np.array([r[4] for r in sample], dtype=np.float32),
                          "a_text": [r[1] for r in sample], "b_text": [r[2] for r in sample]})
    endpoint = EndpointConfig(base_url=base_url, model=llm_model, max_tokens=32, timeout_s=300, max_concurrency=2)
    t0 = time.perf_counter()
    verdicts = verify_pairs(frame, PairVerifier(endpoint))
    seconds = time.perf_counter() - t0
    labels = np.array([r[3] for r in sample])
    ok = verdicts["status"].to_numpy() == "ok"
    said = verdicts["same_question"].fill_null(False).to_numpy()
    by_source: dict[str, list[int]] = {}
    for r, s in zip(sample, said, strict=True):
        by_source.setdefault(r[0], [0, 0])[0 if s == r[3] else 1] += 1
    out = {"embedding_model": resolved.name, "judge": llm_model, "band": [cal.verify_above, cal.threshold],
           "band_counts": counts, "band_pairs": len(sample), "band_duplicates": int(labels.sum()), "ok": int(ok.sum()),
           "judge_said_same_on_duplicates": round(float(said[labels].mean()), 3) if labels.any() else None,
           "judge_said_same_on_distinct": round(float(said[~labels].mean()), 3) if (~labels).any() else None,
           "accuracy": round(float((said == labels).mean()), 3) if len(sample) else None,
           "right_wrong_by_source": by_source,
           "seconds_per_pair": round(seconds / max(1, len(sample)), 2)}
    print(json.dumps(out), flush=True)
    # Band pairs per row on real prompts (the repo's public prompt sets), to price 100k rows.
    texts = real_texts()
    df = pl.DataFrame({"text": texts})
    dd = dedupe_frame(df, DedupeConfig(model=model_spec, verify=True), group_col=None, language_col=None,
                      cache_dir=cache_dir,
                      verifier=PairVerifier(endpoint.model_copy(update={"base_url": "http://127.0.0.1:9/v1",
                                                                         "max_retries": 0, "timeout_s": 2})))
    per_row = dd.tables["verifications"].height / len(texts)
    out |= {"real_rows": len(texts), "band_pairs_per_row": round(per_row, 4),
            "band_pairs_per_100k_rows": round(per_row * 100_000),
            "judge_hours_per_100k_rows": round(per_row * 100_000 * out["seconds_per_pair"] / 3600, 2)}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_search_child":
        print(json.dumps(search_child(int(sys.argv[2]), sys.argv[3], sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["search", "encode", "quality", "real", "verify", "all"])
    parser.add_argument("--llm-base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--llm-model", default="smollm2")
    parser.add_argument("--verify-pairs", type=int, default=40)
    parser.add_argument("--rows", type=int, action="append", help="search sizes (default 100000 and 1000000)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw faiss baseline")
    parser.add_argument("--real", type=Path, help="search vectors derived from the real embeddings in this "
                        "embedding-cache folder (e.g. .cache/calibration-embeddings/<model>) instead of synthetic ones")
    parser.add_argument("--model", default="minilm-bundled")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, help="encode: only the first N unique texts")
    parser.add_argument("--mqp", type=Path, help="verify: also draw band pairs from Medical Question Pairs test "
                        "(mqp.csv of a clone of curai/medical-question-pair-dataset)")
    parser.add_argument("--cache", type=Path, help="verify: embedding cache folder (default .cache/calibration-embeddings)")
    parser.add_argument("--json", type=Path, help="also write all results here")
    args = parser.parse_args()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.what in ("search", "all"):
        results["search"] = run_search(args.rows or [100_000, 1_000_000], not args.no_baseline,
                                       str(args.real) if args.real else "synthetic")
    if args.what in ("encode", "all"):
        results["encode"] = run_encode(args.model, args.batch_size, args.rounds, args.limit)
    if args.what in ("real", "all"):
        results["real"] = run_real_dedupe(args.model)
    if args.what == "verify":
        results["verify"] = run_verify(args.model, args.llm_base_url, args.llm_model, args.verify_pairs, args.mqp,
                                       args.cache or REPO / ".cache" / "calibration-embeddings")
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
