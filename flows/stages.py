"""Which library function runs each curation stage, with which inputs and config.

This is wiring only: every function and config model comes from the stage's own module. A stage
whose rows are independent names its `shard_input` so the flow can fan it out by shard.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curate.config import Config, stage_config
from curate.orchestrate import CURATION_STAGES, OrchestrationConfig, StageSpec, dedupe_fanned_out
from curate.stages.ingest import IngestStageConfig, ingest_stage
from curate.workspace import Workspace

log = logging.getLogger(__name__)


def _load(module: str, *names: str) -> tuple[Any, ...]:
    """The named objects of a stage module, imported when the stage is wired (keeps `import flows` light)."""
    mod = importlib.import_module(module)
    return tuple(getattr(mod, n) for n in names)


def _llm_cache(ws: Workspace):
    from curate.llm.cache import LLMCache

    return LLMCache.for_workspace(ws.root)


def ingest_spec(cfg: Config, ws: Workspace, sources: list[Path]) -> StageSpec:
    return StageSpec(
        "ingest", ingest_stage, inputs={"sources": sources}, config=IngestStageConfig(ingest=cfg.ingest, langid=cfg.langid)
    )


def blocked_spec(cfg: Config, ws: Workspace, seeds_ref: str) -> StageSpec:
    (blocked_stage,) = _load("curate.stages.blocked", "blocked_stage")
    (blocked_config,) = _load("curate.cli.refusals", "blocked_config")
    return StageSpec(
        "blocked", blocked_stage, inputs={"seeds": seeds_ref}, config=blocked_config(cfg),
        kwargs={"cache": _llm_cache(ws)}, shard_input="seeds", uses_llm=True,
    )


def keywords_spec(cfg: Config, ws: Workspace, seeds_ref: str) -> StageSpec:
    keywords_stage, KeywordsStageConfig, KeywordsConfig = _load("curate.stages.keywords", "keywords_stage", "KeywordsStageConfig", "KeywordsConfig")
    kcfg = stage_config(cfg, "keywords", KeywordsConfig)
    llm = kcfg.mode == "llm"
    return StageSpec(
        "keywords", keywords_stage, inputs={"seeds": seeds_ref},
        config=KeywordsStageConfig(keywords=kcfg, llm=cfg.llm if llm else None),
        kwargs={"cache": _llm_cache(ws) if llm else None}, progress_input="seeds", uses_llm=llm,
    )


def questions_spec(cfg: Config, ws: Workspace, keywords_ref: str) -> StageSpec:
    questions_stage, QuestionsStageConfig, QuestionsConfig = _load("curate.stages.questions", "questions_stage", "QuestionsStageConfig", "QuestionsConfig")
    config = QuestionsStageConfig(questions=stage_config(cfg, "questions", QuestionsConfig), llm=cfg.llm)
    inputs: dict[str, Any] = {"keywords": keywords_ref}
    if config.questions.seed_examples:
        inputs["seeds"] = "ingest/seeds"
    # Not fanned out: the diversity filter compares questions with each other.
    return StageSpec(
        "questions", questions_stage, inputs=inputs, config=config, kwargs={"cache": _llm_cache(ws), "prices": cfg.prices},
        progress_input="keywords", uses_llm=True,
    )


def translate_spec(cfg: Config, ws: Workspace, questions_ref: str) -> StageSpec:
    translate_stage, TranslateStageConfig, TranslateConfig = _load("curate.stages.translate", "translate_stage", "TranslateStageConfig", "TranslateConfig")
    config = TranslateStageConfig(translate=stage_config(cfg, "translate", TranslateConfig), languages=cfg.languages, llm=cfg.llm)
    return StageSpec(
        "translate", translate_stage, inputs={"questions": questions_ref}, config=config,
        kwargs={"cache": _llm_cache(ws), "prices": cfg.prices}, shard_input="questions", uses_llm=True,
    )


def dedupe_spec(cfg: Config, ws: Workspace, translations_ref: str, runner: Any, orch: OrchestrationConfig) -> StageSpec:
    dedupe_config, embedding_cache_dir, stage_version = _load("curate.cli.dedupe", "dedupe_config", "embedding_cache_dir", "stage_version")
    config = dedupe_config(cfg)
    return StageSpec(
        "dedupe", dedupe_fanned_out, inputs={"translations": translations_ref}, config=config, version=stage_version(config),
        kwargs={"cache_dir": embedding_cache_dir(ws), "runner": runner, "retries": orch.retries, "retry_delay_s": orch.retry_delay_s},
    )


def answers_spec(cfg: Config, ws: Workspace, translations_ref: str) -> StageSpec:
    (answers_stage,) = _load("curate.stages.answers", "answers_stage")
    (answers_config,) = _load("curate.cli.refusals", "answers_config")
    return StageSpec(
        "answers", answers_stage, inputs={"translations": translations_ref}, config=answers_config(cfg),
        kwargs={"cache": _llm_cache(ws), "prices": cfg.prices}, shard_input="translations", uses_llm=True,
    )


def curation_specs(
    cfg: Config, ws: Workspace, sources: list[Path], *, orch: OrchestrationConfig, runner: Any = None,
    until: str | None = None,
) -> Iterator[StageSpec]:
    """The curation stages in order (through `until`, leaving out `skip`), each reading the
    latest table its predecessor wrote."""
    refs = {"seeds": "ingest/seeds", "translations": "translate/translations"}
    builders = {
        "ingest": lambda: ingest_spec(cfg, ws, sources),
        "blocked": lambda: blocked_spec(cfg, ws, refs["seeds"]),
        "keywords": lambda: keywords_spec(cfg, ws, refs["seeds"]),
        "questions": lambda: questions_spec(cfg, ws, "keywords/keywords"),
        "translate": lambda: translate_spec(cfg, ws, "questions/questions"),
        "dedupe": lambda: dedupe_spec(cfg, ws, refs["translations"], runner, orch),
        "answers": lambda: answers_spec(cfg, ws, refs["translations"]),
    }
    produces = {"blocked": ("seeds", "blocked/seeds"), "dedupe": ("translations", "dedupe/translations")}
    wired: set[str] = set()
    for name in CURATION_STAGES:
        build = builders.get(name)
        spec = build() if build is not None and name not in orch.skip else None
        missing = [ref for ref in (spec.inputs.values() if spec else ()) if isinstance(ref, str) and ref.split("/")[0] not in wired]
        if spec is not None and missing:
            log.warning("stage %s left out: its inputs %s come from stages not in this flow", name, missing)
        elif spec is not None:
            wired.add(name)
            yield spec
            if name in produces:
                key, ref = produces[name]
                refs[key] = ref
        if name == until:
            return


# -- review (Argilla) -----------------------------------------------------------------------------------------
def _review(cfg: Config):
    from curate.review.client import ArgillaClient
    from curate.review.config import ReviewConfig

    review_cfg = stage_config(cfg, "review", ReviewConfig)
    client = ArgillaClient.from_config(cfg.argilla, timeout_s=review_cfg.timeout_s, max_retries=review_cfg.max_retries)
    return review_cfg, client


def push_for_review(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Send new or changed candidates to the campaign's Argilla dataset (what `curate review push` does);
    returns a stage-like summary."""
    from curate.review.config import effective_min_submitted
    from curate.review.push import push_workspace
    from curate.review.settings import load_review_settings

    review_cfg, client = _review(cfg)
    settings = load_review_settings(review_cfg.settings)
    min_submitted = effective_min_submitted(cfg.argilla, settings.min_submitted)
    with client:
        report = push_workspace(
            ws, client, settings, campaign=review_cfg.campaign, workspace=cfg.argilla.workspace,
            min_submitted=min_submitted, source=review_cfg.source, run=review_cfg.run, batch_size=review_cfg.batch_size,
        )
    # Shaped like a stage summary (curate.orchestrate.summarize_result) for the run's table.
    return {
        "stage": "review_push", "skipped": report.pushed == 0, "rows": {"pushed": report.pushed},
        "duration_s": report.seconds, "shards": None, "report": report.as_dict() | {"argilla_url": cfg.argilla.api_url},
    }


def pull_reviews(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Fetch submitted responses into review/reviews with agreement and decisions (`curate review pull`)."""
    from curate.review.pull import pull_workspace

    review_cfg, client = _review(cfg)
    with client:
        result = pull_workspace(ws, client, campaign=review_cfg.campaign, workspace=cfg.argilla.workspace, policy=review_cfg.policy)
    report = result.manifest["report"]
    return {"campaign": review_cfg.campaign, "rows": result.rows, "pull": report["pull"], "decisions": report["decisions"]}
