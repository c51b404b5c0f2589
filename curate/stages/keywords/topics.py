"""Keywords grouped into topics: leader clustering over seed co-occurrence or embeddings."""

from __future__ import annotations

from collections import Counter

import polars as pl

from curate.stages.keywords.config import KeywordsConfig
from curate.text.embeddings import BUNDLED_ALIAS, load_configured_model, resolve_model

# -- topics --------------------------------------------------------------------------------------------------
EMBEDDING_MODEL_HINT = (
    "set [stages.keywords] embedding_model to a local sentence-transformers folder, a Hugging Face model in the "
    f"local cache, or '{BUNDLED_ALIAS}' (the default); or use topics = 'cooccurrence'"
)


def _leader_topics(labels: list[str], similar) -> list[str]:
    """Each item joins the first (best-ranked) leader it is similar to, else leads a new topic."""
    leaders: list[int] = []
    topic = []
    for i, label in enumerate(labels):
        leader = next((j for j in leaders if similar(j, i)), None)
        if leader is None:
            leaders.append(i)
            topic.append(label)
        else:
            topic.append(labels[leader])
    return topic


def assign_topics(keywords: pl.DataFrame, seeds: pl.DataFrame, config: KeywordsConfig) -> pl.Series:
    """A topic label (the leading keyword of its group) per keyword row, grouping within a language."""
    if keywords.height == 0 or config.topics == "none":
        return pl.Series("topic", [None] * keywords.height, dtype=pl.String)
    topics: list[str | None] = [None] * keywords.height
    rows = keywords.with_row_index("_i")
    if config.topics == "seed":
        seed_topic = dict(seeds.select("seed_id", "topic").iter_rows()) if "topic" in seeds.columns else {}
        for i, ids in rows.select("_i", "seed_ids").iter_rows():
            votes = Counter(seed_topic[s] for s in ids if seed_topic.get(s))
            topics[i] = votes.most_common(1)[0][0] if votes else None
        return pl.Series("topic", topics, dtype=pl.String)
    for (_lang,), group in rows.group_by("language", maintain_order=True):
        labels = group["keyword"].to_list()
        if config.topics == "cooccurrence":
            threshold = 0.3 if config.topic_threshold is None else config.topic_threshold
            sets = [set(ids) for ids in group["seed_ids"]]
            # Jaccard, not overlap: a frequent keyword ("China") must not swallow every rarer one.
            group_topics = _leader_topics(
                labels, lambda a, b, sets=sets, t=threshold: len(sets[a] & sets[b]) / max(1, len(sets[a] | sets[b])) >= t
            )
        else:
            import numpy as np

            threshold = 0.6 if config.topic_threshold is None else config.topic_threshold
            encoder = load_configured_model(
                config.embedding_model or BUNDLED_ALIAS, hint=EMBEDDING_MODEL_HINT, setting="embedding_model",
                device="cpu",
            )
            vectors = encoder.encode(labels, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            sims = np.asarray(vectors) @ np.asarray(vectors).T
            group_topics = _leader_topics(labels, lambda a, b, sims=sims, t=threshold: float(sims[a, b]) >= t)
        for i, t in zip(group["_i"], group_topics, strict=True):
            topics[i] = t
    return pl.Series("topic", topics, dtype=pl.String)


def embedding_model_folder(config: KeywordsConfig):
    """The local folder of the model `topics = "embedding"` uses (its identity enters the fingerprint)."""
    return resolve_model(config.embedding_model or BUNDLED_ALIAS, hint=EMBEDDING_MODEL_HINT, setting="embedding_model").path
