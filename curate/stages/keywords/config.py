"""`[stages.keywords]` and what the keywords stage receives."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from curate.config import EndpointConfig


class KeywordsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["auto", "blocked", "all"] = Field(
        default="auto", description="auto: blocked seeds when the `blocked` column is set, else all seeds."
    )
    mode: Literal["statistical", "llm"] = "statistical"
    max_ngram: int = Field(default=3, ge=1, le=6)
    min_count: int = Field(default=2, ge=1, description="Seeds a keyword must occur in.")
    min_length: int = Field(default=3, ge=1, description="Characters (without spaces) for alphabetic keywords.")
    min_length_cjk: int = Field(default=2, ge=1, description="Characters for Chinese/Japanese/Korean keywords.")
    drop_numbers: bool = Field(default=True, description="Drop keywords that are only digits (a number inside a phrase stays).")
    max_doc_fraction: float = Field(
        default=0.5, gt=0, le=1, description="Drop keywords in more than this share of a language's seeds (if it has >= 10)."
    )
    subsume_ratio: float = Field(
        default=0.8, ge=0, le=1, description="Drop a phrase when a longer one containing it occurs in >= this share of its seeds."
    )
    max_keywords: int | None = Field(default=200, ge=1, description="Per language, best first.")
    stopwords: list[str] = Field(default_factory=list, description="Extra stopwords for every language.")
    stopword_files: list[str] = Field(default_factory=list, description="Extra stoplist files (one word a line).")
    topics: Literal["cooccurrence", "embedding", "seed", "none"] = "cooccurrence"
    topic_threshold: float | None = Field(
        default=None, ge=0, le=1,
        description="Join a topic above this similarity: Jaccard of seed sets (default 0.3) or embedding cosine (default 0.6).",
    )
    embedding_model: str | None = Field(
        default=None, description="sentence-transformers model (hub name or path); default: the bundled all-MiniLM-L6-v2."
    )
    llm_template: str = "keyword_extraction.j2"
    llm_max_keywords_per_seed: int = Field(default=5, ge=1)
    llm_require_in_text: bool = Field(default=True, description="Drop LLM keywords that do not occur in the seed (hallucinated).")
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})


class KeywordsStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: KeywordsConfig = Field(default_factory=KeywordsConfig)
    llm: EndpointConfig | None = Field(default=None, description="Only for mode = 'llm'.")
