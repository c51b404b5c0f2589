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
on, docs/refusal.md), in a seeded order that depends only on their texts (`view_order`), so
stopping early leaves a random sample of them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from refusal_experiments import training_frame  # noqa: E402

from curate.stages.dedupe.cache import EmbeddingCache  # noqa: E402
from curate.stages.dedupe.embed import embed_texts  # noqa: E402
from curate.text.embeddings import GEMMA_ALIAS, load_model, resolve_model  # noqa: E402

MAX_SEQ_LENGTH = 128
PROMPT_NAME = "Classification"
# Content tokens kept from a long reply: head and tail (the prompt and special tokens take the rest).
HEAD_TOKENS = 88
TAIL_TOKENS = 30
VIEW_SEED = 1
EMBED_HINT = "run scripts/fetch-embeddinggemma.py (setup does) to assemble EmbeddingGemma-300M"


def load_embedder(spec: str = GEMMA_ALIAS):
    """(model, cache key) for the embedding model; the key names the weights and the window."""
    resolved = resolve_model(spec, hint=EMBED_HINT, setting="[stages.refusal] embed_model")
    model = load_model(str(resolved.path), max_seq_length=MAX_SEQ_LENGTH)
    return model, cache_key(resolved.key)


def load_tokenizer(spec: str = GEMMA_ALIAS):
    """(tokenizer, cache key) without loading the weights: enough to window texts and look them up."""
    from transformers import AutoTokenizer  # heavy; only the embedding head needs it

    resolved = resolve_model(spec, hint=EMBED_HINT, setting="[stages.refusal] embed_model")
    return AutoTokenizer.from_pretrained(str(resolved.path)), cache_key(resolved.key)


def cache_key(model_key: str) -> str:
    return f"{model_key}@seq{MAX_SEQ_LENGTH}:h{HEAD_TOKENS}t{TAIL_TOKENS}"


def window_texts(texts: Sequence[str], tokenizer, head: int = HEAD_TOKENS, tail: int = TAIL_TOKENS) -> list[str]:
    """Each text, or its first `head` and last `tail` tokens when it is longer than both."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = []
    for text, toks in zip(texts, ids, strict=True):
        if len(toks) <= head + tail:
            out.append(text)
        else:
            out.append(tokenizer.decode(toks[:head]) + " … " + tokenizer.decode(toks[-tail:]))
    return out


def view_order(texts: Sequence[str], seed: int = VIEW_SEED) -> np.ndarray:
    """A seeded order of opening views that depends only on their texts, not on the frame's rows."""
    keys = [hashlib.sha256(f"{seed}\x1f{t}".encode("utf-8")).digest() for t in texts]
    return np.array(sorted(range(len(texts)), key=keys.__getitem__), dtype=np.int64)


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
    if args.views:
        views = np.flatnonzero((df["source"] == "speechmap/opening").to_numpy())
        order = views[view_order(df["text"].gather(views).to_list())]
    else:
        order = embedding_order(df)
    prompts = sorted(set(df["prompt"].gather(order).to_list()))
    texts = window_texts(df["text"].gather(order).to_list(), model.tokenizer)
    started = time.perf_counter()
    embed_texts(prompts, model, model_key=key, cache=cache, batch_size=16, prompt_name=PROMPT_NAME)
    print(f"{len(prompts)} prompts in {time.perf_counter() - started:.0f} s", flush=True)
    for start in range(0, len(texts), args.chunk):
        _, stats = embed_texts(texts[start : start + args.chunk], model, model_key=key, cache=cache, batch_size=16,
                               prompt_name=PROMPT_NAME)
        print(f"{start + args.chunk} {'views' if args.views else 'replies'}, {stats.computed} computed, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
