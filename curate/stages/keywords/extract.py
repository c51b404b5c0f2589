"""Topic keywords and keyphrases from seed prompts.

Statistical mode (default), per language:
1. tokenize script-aware: Chinese with jieba; Japanese by script runs (kanji and katakana runs are
   content words, hiragana runs are particles and break phrases); Korean by space with common
   particles stripped; everything else by Unicode word characters;
2. split at punctuation and stopwords (RAKE-style) into runs and take every n-gram up to
   `max_ngram` words of each run as a candidate;
3. count in how many seeds each candidate occurs, filter (min count, min length, pure numbers,
   too common), drop a phrase subsumed by a longer one that occurs almost as often, and rank by
   count x sqrt(words) / seeds;
4. group keywords into topics by leader clustering over seed co-occurrence or embeddings.

LLM mode asks a model for each seed's keywords (a template file, JSON output) and aggregates them
the same way; a failed call is a row in `keywords/rejects`, never dropped.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.errors import ConfigError, InputError
from curate.identity import stamp
from curate.ids import content_id
from curate.llm import complete_frame, usage_summary
from curate.progress import Advance, noop
from curate.prompts import render_prompt, template_path
from curate.records import Keyword, conform
from curate.stages.declaration import Stage, reads
from curate.stages.keywords.config import KeywordsConfig, KeywordsStageConfig
from curate.stages.keywords.topics import assign_topics, embedding_model_folder
from curate.tables import BLOCKED_SEEDS, KEYWORD_REJECTS, KEYWORDS, SEEDS
from curate.text.languages import language_name
from curate.text.tokenize import CJK_CHAR, NUMBER, is_cjk, join_tokens, normalize_token, tokenize
from curate.workspace import StageOutput

STOPWORDS_DIR = Path(__file__).resolve().parents[2] / "resources" / "stopwords"
REJECT_SCHEMA = {
    "keyword": pl.String, "language": pl.String, "count": pl.Int64, "reject_reason": pl.String,
    "detail": pl.String, "seed_id": pl.String, "error": pl.String,
}


# -- stoplists ----------------------------------------------------------------------------------------
def _read_stoplist(path: Path) -> set[str]:
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            words.add(normalize_token(word))
    return words


def bundled_stopwords(language: str) -> frozenset[str]:
    path = STOPWORDS_DIR / f"{language}.txt"
    return _stoplist(*stamp(path)) if path.is_file() else frozenset()


@functools.lru_cache(maxsize=64)
def _stoplist(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    # Keyed by modification time and size too: an edited stoplist is reread (`curate serve`).
    return frozenset(_read_stoplist(Path(path)))


def stopwords_for(language: str, config: KeywordsConfig) -> set[str]:
    words = set(bundled_stopwords(language)) | {normalize_token(w) for w in config.stopwords}
    for name in config.stopword_files:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{path}: stoplist file not found (stages.keywords.stopword_files)")
        words |= _read_stoplist(path)
    return words


def candidate_phrases(text: str, language: str, stopwords: set[str], max_ngram: int) -> dict[tuple[str, ...], str]:
    """Every n-gram of non-stopword runs in `text`: normalized tokens -> surface form."""
    found: dict[tuple[str, ...], str] = {}
    for chunk in tokenize(text, language):
        run: list[tuple[str, str]] = []
        for token in [*chunk, None]:
            if token is not None and token[0] not in stopwords and not (len(token[0]) == 1 and not is_cjk(token[0])):
                run.append(token)
                continue
            for n in range(1, max_ngram + 1):
                for i in range(len(run) - n + 1):
                    gram = run[i : i + n]
                    found.setdefault(tuple(t[0] for t in gram), join_tokens([t[1] for t in gram]))
            run = []
    return found


# -- selection -------------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    tokens: tuple[str, ...]
    seed_ids: list[str] = field(default_factory=list)
    surfaces: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return len(self.seed_ids)


def select_seeds(seeds: pl.DataFrame, source: str) -> pl.DataFrame:
    for col in ("seed_id", "text", "language"):
        if col not in seeds.columns:
            raise InputError("<seeds>", f"missing column; have {seeds.columns}", field=col)
    has_blocked = "blocked" in seeds.columns and seeds["blocked"].is_not_null().any()
    if source == "blocked" and not has_blocked:
        raise InputError("<seeds>", "source = 'blocked' but no seed has `blocked` set; run the blocked stage first", field="blocked")
    if source == "blocked" or (source == "auto" and has_blocked):
        return seeds.filter(pl.col("blocked").fill_null(False))
    return seeds


def _reject(rows: list[dict], keyword: str | None, language: str, count: int | None, reason: str, detail: str | None = None,
            seed_id: str | None = None, error: str | None = None) -> None:
    rows.append({"keyword": keyword, "language": language, "count": count, "reject_reason": reason, "detail": detail,
                 "seed_id": seed_id, "error": error})


def rank_candidates(
    candidates: dict[tuple[str, ...], _Candidate], language: str, n_seeds: int, config: KeywordsConfig, rejects: list[dict]
) -> list[dict[str, Any]]:
    """Filter and score one language's candidates; rejected ones (that met min_count) go to `rejects`."""
    kept: dict[tuple[str, ...], _Candidate] = {}
    below = 0
    for tokens, cand in candidates.items():
        surface = cand.surfaces.most_common(1)[0][0]
        if cand.count < config.min_count:
            below += 1
            continue
        letters = surface.replace(" ", "")
        min_len = config.min_length_cjk if CJK_CHAR.search(letters) else config.min_length
        if config.drop_numbers and all(NUMBER.match(t) for t in tokens):
            _reject(rejects, surface, language, cand.count, "pure_number")
        elif len(letters) < min_len:
            _reject(rejects, surface, language, cand.count, "too_short")
        elif n_seeds >= 10 and cand.count / n_seeds > config.max_doc_fraction:
            _reject(rejects, surface, language, cand.count, "too_common", f"in {cand.count} of {n_seeds} seeds")
        else:
            kept[tokens] = cand
    subsumed: dict[tuple[str, ...], str] = {}
    for tokens, cand in kept.items():
        for n in range(1, len(tokens)):
            for i in range(len(tokens) - n + 1):
                sub = tokens[i : i + n]
                if sub in kept and sub not in subsumed and cand.count >= config.subsume_ratio * kept[sub].count:
                    subsumed[sub] = cand.surfaces.most_common(1)[0][0]
    ranked = []
    for tokens, cand in kept.items():
        surface = cand.surfaces.most_common(1)[0][0]
        if tokens in subsumed:
            _reject(rejects, surface, language, cand.count, "subsumed", f"by '{subsumed[tokens]}'")
            continue
        score = cand.count * math.sqrt(len(tokens)) / max(n_seeds, 1)
        ranked.append({"keyword": surface, "language": language, "count": cand.count, "score": round(score, 6),
                       "seed_ids": cand.seed_ids, "n_words": len(tokens)})
    ranked.sort(key=lambda r: (-r["score"], -r["count"], r["keyword"]))
    if config.max_keywords is not None:
        for r in ranked[config.max_keywords :]:
            _reject(rejects, r["keyword"], language, r["count"], "over_max_keywords")
        ranked = ranked[: config.max_keywords]
    if below:
        _reject(rejects, None, language, below, "below_min_count", f"{below} candidates in fewer than {config.min_count} seeds")
    return ranked


def statistical_candidates(seeds: pl.DataFrame, config: KeywordsConfig, progress: Advance = noop) -> dict[str, dict]:
    by_language: dict[str, dict[tuple[str, ...], _Candidate]] = defaultdict(dict)
    stoplists: dict[str, set[str]] = {}
    for seed_id, text, language in seeds.select("seed_id", "text", "language").iter_rows():
        stop = stoplists.get(language) or stoplists.setdefault(language, stopwords_for(language, config))
        table = by_language[language]
        for tokens, surface in candidate_phrases(text, language, stop, config.max_ngram).items():
            cand = table.setdefault(tokens, _Candidate(tokens))
            cand.seed_ids.append(seed_id)
            cand.surfaces[surface] += 1
        progress(1)
    return by_language


# -- LLM mode ---------------------------------------------------------------------------------------------
KEYWORD_SCHEMA = {
    "type": "object",
    "properties": {"keywords": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 80}, "minItems": 1, "maxItems": 10}},
    "required": ["keywords"],
}


def parse_keyword_list(content: str) -> list[str]:
    """The `keywords` array of an LLM reply; raises ValueError (so the LLM layer retries) when malformed."""
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("keywords"), list):
        raise ValueError("expected an object with a 'keywords' array")
    words = [w.strip() for w in obj["keywords"] if isinstance(w, str) and w.strip()]
    if not words:
        raise ValueError("'keywords' has no non-empty strings")
    return words


def llm_candidates(
    seeds: pl.DataFrame, config: KeywordsConfig, endpoint: EndpointConfig, cache: Any, rejects: list[dict],
    progress: Advance = noop, refresh: bool = False,
) -> tuple[dict[str, dict], pl.DataFrame]:

    requests = pl.DataFrame({
        "request_id": seeds["seed_id"],
        "prompt": [
            render_prompt(config.llm_template, text=t, language=language_name(lang), max_keywords=config.llm_max_keywords_per_seed)
            for t, lang in seeds.select("text", "language").iter_rows()
        ],
    })
    results = complete_frame(
        requests, endpoint, stage="keywords", cache=cache, refresh=refresh, response_schema=KEYWORD_SCHEMA,
        validate=parse_keyword_list, overrides=config.overrides, progress=progress,
    )
    by_language: dict[str, dict[tuple[str, ...], _Candidate]] = defaultdict(dict)
    stoplists: dict[str, set[str]] = {}
    for (seed_id, text, language), res in zip(seeds.select("seed_id", "text", "language").iter_rows(), results.iter_rows(named=True), strict=True):
        if res["status"] != "ok":
            _reject(rejects, None, language, None, "llm_error", seed_id=seed_id, error=res["error"] or "llm error")
            continue
        stop = stoplists.get(language) or stoplists.setdefault(language, stopwords_for(language, config))
        haystack = normalize_token(text)
        seen: set[tuple[str, ...]] = set()
        for word in parse_keyword_list(res["parsed"] or res["content"])[: config.llm_max_keywords_per_seed]:
            pieces = [t for chunk in tokenize(word, language) for t in chunk]
            tokens = tuple(t[0] for t in pieces)
            if not tokens:
                _reject(rejects, word, language, 1, "not_a_word", seed_id=seed_id)
                continue
            if tokens in seen:
                continue
            surface = join_tokens([t[1] for t in pieces])
            if config.llm_require_in_text and normalize_token(surface) not in haystack:
                _reject(rejects, surface, language, 1, "not_in_seed", seed_id=seed_id)
                continue
            if all(t in stop for t in tokens):
                _reject(rejects, surface, language, 1, "stopword", seed_id=seed_id)
                continue
            seen.add(tokens)
            cand = by_language[language].setdefault(tokens, _Candidate(tokens))
            cand.seed_ids.append(seed_id)
            cand.surfaces[surface] += 1
        if not seen:
            _reject(rejects, None, language, 0, "no_keywords", "the reply had no usable keyword", seed_id=seed_id)
    return by_language, results


# -- the stage ------------------------------------------------------------------------------------------------
def extract_keywords(
    seeds: pl.DataFrame,
    config: KeywordsConfig,
    *,
    endpoint: EndpointConfig | None = None,
    cache: Any = None,
    progress: Advance | None = None,
    refresh: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(Keyword table, rejects table, report extras) from a Seed table."""
    selected = select_seeds(seeds, config.source)
    advance = progress or noop
    rejects: list[dict] = []
    report: dict[str, Any] = {"seeds_used": selected.height, "seeds_total": seeds.height, "mode": config.mode}
    if config.mode == "llm":
        if endpoint is None:
            raise ConfigError("stages.keywords.mode = 'llm' needs an LLM endpoint ([llm])")
        by_language, results = llm_candidates(selected, config, endpoint, cache, rejects, advance, refresh)

        report["llm_usage"] = usage_summary(results, "keywords", {})
    else:
        by_language = statistical_candidates(selected, config, advance)
    seeds_per_language = dict(selected.group_by("language").len().iter_rows())
    ranked: list[dict[str, Any]] = []
    for language in sorted(by_language):
        ranked.extend(rank_candidates(by_language[language], language, seeds_per_language[language], config, rejects))
    keywords = pl.DataFrame(
        ranked, schema={"keyword": pl.String, "language": pl.String, "count": pl.Int64, "score": pl.Float64,
                        "seed_ids": pl.List(pl.String), "n_words": pl.Int64},
    ).with_columns(
        pl.struct("keyword", "language").map_elements(
            lambda r: content_id("keyword", r["keyword"], r["language"]), return_dtype=pl.String
        ).alias("keyword_id")
    )
    keywords = keywords.with_columns(assign_topics(keywords, selected, config)).sort(
        ["score", "count", "keyword"], descending=[True, True, False]
    )
    report["keywords_per_language"] = dict(keywords.group_by("language").len().sort("language").iter_rows())
    report["topics"] = keywords.filter(pl.col("topic").is_not_null())["topic"].n_unique()
    report["top_keywords"] = {
        lang: g["keyword"].head(20).to_list() for (lang,), g in keywords.group_by("language", maintain_order=True)
    }
    return conform(keywords, Keyword), pl.DataFrame(rejects, schema=REJECT_SCHEMA), report


def keywords_stage(
    seeds: pl.DataFrame, config: KeywordsStageConfig, *, cache: Any = None, progress: Advance | None = None, refresh: bool = False
) -> StageOutput:
    keywords, rejects, report = extract_keywords(
        seeds, config.keywords, endpoint=config.llm, cache=cache, progress=progress, refresh=refresh
    )
    return StageOutput(tables={"keywords": keywords, "rejects": rejects}, report=report)


def _keywords_files(settings: KeywordsStageConfig) -> list[Path | str | None]:
    config = settings.keywords
    files: list[Path | str | None] = [STOPWORDS_DIR, *config.stopword_files]
    if config.mode == "llm":
        files.append(template_path(config.llm_template))
    if config.topics == "embedding":
        files.append(embedding_model_folder(config))
    return files


STAGE = Stage(
    name="keywords", run=keywords_stage, config=KeywordsConfig,
    summary="Extract ranked topic keywords (with counts, scores, seed ids and topics) from the seeds.",
    reads={"seeds": reads(BLOCKED_SEEDS, SEEDS)}, writes=(KEYWORDS, KEYWORD_REJECTS),
    settings=lambda cfg, section: KeywordsStageConfig(keywords=section, llm=cfg.llm if section.mode == "llm" else None),
    depends_on=_keywords_files, uses_llm=lambda settings: settings.keywords.mode == "llm",
    progress_total=lambda inputs, settings: select_seeds(inputs["seeds"], settings.keywords.source).height,
    report_keys=("seeds_used", "keywords_per_language", "topics"),
)
