"""The keywords stage: topic keywords and keyphrases from seed prompts (see `extract`)."""

from curate.stages.keywords.config import KeywordsConfig, KeywordsStageConfig
from curate.stages.keywords.extract import (
    STAGE,
    STOPWORDS_DIR,
    bundled_stopwords,
    candidate_phrases,
    extract_keywords,
    keywords_stage,
    llm_candidates,
    parse_keyword_list,
    rank_candidates,
    select_seeds,
    statistical_candidates,
    stopwords_for,
)
from curate.stages.keywords.topics import assign_topics
from curate.text.tokenize import tokenize

__all__ = [
    "STAGE", "STOPWORDS_DIR", "KeywordsConfig", "KeywordsStageConfig", "assign_topics", "bundled_stopwords",
    "candidate_phrases", "extract_keywords", "keywords_stage", "llm_candidates", "parse_keyword_list",
    "rank_candidates", "select_seeds", "statistical_candidates", "stopwords_for", "tokenize",
]
