"""`curate ingest`, `curate keywords`, `curate questions`, `curate translate`: the curation stages over a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli.options import (
    ConfigOpt,
    ForceOpt,
    NoCacheOpt,
    QuietOpt,
    get_config,
    print_report,
    print_result,
    workspace_for,
)
from curate.config import stage_config
from curate.llm.cache import LLMCache
from curate.progress import progress_bar
from curate.stages.ingest import IngestStageConfig, ingest_stage
from curate.stages.keywords import KeywordsConfig, KeywordsStageConfig, keywords_stage, select_seeds
from curate.stages.questions import QuestionsConfig, QuestionsStageConfig, questions_stage
from curate.stages.translate import TranslateConfig, TranslateStageConfig, translate_stage
from curate.workspace import Workspace


def _llm_cache(ws: Workspace):
    return LLMCache.for_workspace(ws.root)


def _has_table(ws: Workspace, ref: str) -> bool:
    stage, table = ref.split("/", 1)
    manifest = ws.manifest(stage)
    return bool(manifest and manifest.get("status") == "complete" and table in manifest.get("outputs", {}))


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        sources: Annotated[list[Path], typer.Argument(help="Seed files: .jsonl .json .csv .tsv .parquet .txt or a datasets folder.")],
        config: ConfigOpt = None,
        force: ForceOpt = False,
    ) -> None:
        """Read seed prompts into the workspace (language detected with fastText where missing)."""
        cfg = get_config(config)
        ws = workspace_for(cfg)
        stage_cfg = IngestStageConfig(ingest=cfg.ingest, langid=cfg.langid)
        with ws.locked():
            result = ws.run_stage("ingest", ingest_stage, inputs={"sources": [p.resolve() for p in sources]}, config=stage_cfg, force=force)
        print_result(result)

    @app.command()
    def keywords(
        config: ConfigOpt = None,
        force: ForceOpt = False,
        seeds: Annotated[str | None, typer.Option(help="Seed table; default blocked/seeds if it exists, else ingest/seeds.")] = None,
        no_cache: NoCacheOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Extract ranked topic keywords (with counts, scores, seed ids and topics) from the seeds."""
        cfg = get_config(config)
        ws = workspace_for(cfg)
        kw_cfg = stage_config(cfg, "keywords", KeywordsConfig)
        stage_cfg = KeywordsStageConfig(keywords=kw_cfg, llm=cfg.llm if kw_cfg.mode == "llm" else None)
        ref = seeds or ("blocked/seeds" if _has_table(ws, "blocked/seeds") else "ingest/seeds")
        with ws.locked():
            total = select_seeds(ws.read(ref), kw_cfg.source).height if _has_table(ws, ref) else None
            with progress_bar("keywords", total, enabled=not quiet) as advance:
                result = ws.run_stage(
                    "keywords", keywords_stage, inputs={"seeds": ref}, config=stage_cfg, force=force or no_cache,
                    cache=_llm_cache(ws) if kw_cfg.mode == "llm" else None, progress=advance, refresh=no_cache,
                )
        print_result(result)
        print_report(result, ("seeds_used", "keywords_per_language", "topics"))

    @app.command()
    def questions(
        config: ConfigOpt = None,
        force: ForceOpt = False,
        no_cache: NoCacheOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Expand each keyword into N diverse questions through the LLM (structured output, diversity-filtered)."""
        cfg = get_config(config)
        ws = workspace_for(cfg)
        stage_cfg = QuestionsStageConfig(questions=stage_config(cfg, "questions", QuestionsConfig), llm=cfg.llm)
        inputs = {"keywords": "keywords/keywords"}
        if stage_cfg.questions.seed_examples and _has_table(ws, "ingest/seeds"):
            inputs["seeds"] = "ingest/seeds"
        with ws.locked():
            total = ws.read("keywords/keywords").height if _has_table(ws, "keywords/keywords") else None
            if total is not None and stage_cfg.questions.max_keywords:
                total = min(total, stage_cfg.questions.max_keywords)
            with progress_bar("questions", total, enabled=not quiet) as advance:
                result = ws.run_stage(
                    "questions", questions_stage, inputs=inputs, config=stage_cfg, force=force or no_cache,
                    cache=_llm_cache(ws), progress=advance, refresh=no_cache, prices=cfg.prices,
                )
        print_result(result)
        print_report(result, ("keywords_short_of_quota", "by_style"))

    @app.command()
    def translate(
        config: ConfigOpt = None,
        force: ForceOpt = False,
        languages: Annotated[str | None, typer.Option(help="Comma-separated target languages; default: config `languages`.")] = None,
        no_cache: NoCacheOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Translate the questions into every configured language, verifying language (fastText) and faithfulness."""
        cfg = get_config(config)
        ws = workspace_for(cfg)
        tr_cfg = stage_config(cfg, "translate", TranslateConfig)
        if languages:
            tr_cfg = tr_cfg.model_copy(update={"languages": [x.strip() for x in languages.split(",") if x.strip()]})
        stage_cfg = TranslateStageConfig(translate=tr_cfg, languages=cfg.languages, llm=cfg.llm)
        with ws.locked():
            total = None
            if _has_table(ws, "questions/questions"):
                total = ws.read("questions/questions").height * len(stage_cfg.target_languages)
            with progress_bar("translate", total, enabled=not quiet) as advance:
                result = ws.run_stage(
                    "translate", translate_stage, inputs={"questions": "questions/questions"}, config=stage_cfg,
                    force=force or no_cache, cache=_llm_cache(ws), progress=advance, refresh=no_cache, prices=cfg.prices,
                )
        print_result(result)
        print_report(result, ("by_language_status",))
