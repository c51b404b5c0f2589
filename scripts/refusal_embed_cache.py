"""Fill the embedding cache for scripts/refusal_experiments.py's embedding runs (EmbeddingGemma-300M).

    nice -n 10 uv run python scripts/refusal_embed_cache.py --cache /work/cache/refusal4

Embeds the SpeechMap requests, then the real SpeechMap replies (head and tail within the window) in
a seeded order: every non-answered reply and as many answered ones, shuffled together, then the
other answered replies. A reply longer than the window is embedded from its head and tail, cut by
tokens so both fit (as the fastText detector reads head and tail). Stopping at any point leaves a
random sample of each (language, label) stratum, which the experiments weight back to the full
counts. The cache is keyed by sha256 of
model key (weights and window) + prompt name + text, so a rerun computes only what is missing.

    nice -n 10 uv run python scripts/refusal_embed_cache.py --cache /work/cache/refusal4 --views

`--views` embeds the SpeechMap opening views instead (the short answered texts the detector trains
on, docs/refusal.md), in a seeded order, so stopping early leaves a random sample of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from refusal_experiments import training_frame  # noqa: E402

from curate.refusal.embed import FETCH_HINT, MAX_SEQ_LENGTH, PROMPT_NAME, window_key, window_texts  # noqa: E402
from curate.refusal.train_embed import EmbedHeadParams, view_order  # noqa: E402
from curate.stages.dedupe.cache import EmbeddingCache  # noqa: E402
from curate.stages.dedupe.embed import embed_texts  # noqa: E402
from curate.text.embeddings import GEMMA_ALIAS, load_model, resolve_model  # noqa: E402


def load_embedder(spec: str = GEMMA_ALIAS):
    """(model, cache key) for the embedding model; the key names the weights and the window."""
    resolved = resolve_model(spec, hint=FETCH_HINT, setting="[stages.refusal] embed modes")
    return load_model(str(resolved.path), max_seq_length=MAX_SEQ_LENGTH), window_key(resolved.key)


def load_tokenizer(spec: str = GEMMA_ALIAS):
    """(tokenizer, cache key) without loading the weights: enough to window texts and look them up."""
    from transformers import AutoTokenizer  # heavy; only the embedding head needs it

    resolved = resolve_model(spec, hint=FETCH_HINT, setting="[stages.refusal] embed modes")
    return AutoTokenizer.from_pretrained(str(resolved.path)), window_key(resolved.key)


def embedding_order(df: pl.DataFrame, seed: int = 3) -> np.ndarray:
    """Row numbers of the real SpeechMap replies in the order they are embedded."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero((df["source"] == "speechmap").to_numpy())
    answered = df["label"].to_numpy()[rows] == "answered"
    core_answered = rng.permutation(rows[answered])
    first = rng.permutation(np.concatenate([rows[~answered], core_answered[: (~answered).sum()]]))
    return np.concatenate([first, core_answered[(~answered).sum():]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--views", action="store_true", help="embed the SpeechMap opening views (not the replies)")
    args = parser.parse_args()
    df = training_frame()
    model, key = load_embedder()
    cache = EmbeddingCache(args.cache, key)
    if args.views:  # in the order `curate refusal train --embed-head --views N` takes the first N
        views = np.flatnonzero((df["source"] == "speechmap/opening").to_numpy())
        order = views[view_order(df["text"].gather(views).to_list(), EmbedHeadParams().seed)]
    else:
        order = embedding_order(df)
    prompts = sorted(set(df["prompt"].gather(order).to_list()))
    texts = window_texts(df["text"].gather(order).to_list(), model.tokenizer)
    started = time.perf_counter()
    embed_texts(prompts, model, model_key=key, cache=cache, batch_size=16, prompt_name=PROMPT_NAME)  # views: cached already
    print(f"{len(prompts)} prompts in {time.perf_counter() - started:.0f} s", flush=True)
    for start in range(0, len(texts), args.chunk):
        _, stats = embed_texts(texts[start : start + args.chunk], model, model_key=key, cache=cache, batch_size=16,
                               prompt_name=PROMPT_NAME)
        print(f"{start + args.chunk} {'views' if args.views else 'replies'}, {stats.computed} computed, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
