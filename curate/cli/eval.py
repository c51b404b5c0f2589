"""`curate eval`: compare endpoints on blocked-topic prompts, HarmBench and XSTest, with a report."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from curate.cli.options import ConfigOpt, console, get_config
from curate.config import Config, EndpointConfig, stage_config
from curate.errors import ConfigError, CurateError
from curate.eval import EvalConfig, load_eval_set, run_eval, select_items, write_outputs
from curate.eval.report import format_value
from curate.llm import LLMCache
from curate.refusal import RefusalConfig
from curate.release import release_config, store_uri
from curate.stages.translate import TranslateConfig

EVAL_STAGE = "eval"


def _scalar(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _endpoint(base: EndpointConfig, fields: dict[str, Any], where: str) -> EndpointConfig:
    try:
        return EndpointConfig.model_validate(base.model_dump() | fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ConfigError(f"{where}: {problems}") from exc


def parse_endpoint_spec(spec: str, base: EndpointConfig, *, named: bool = True) -> tuple[str, EndpointConfig]:
    """`name=URL[,model=..,temperature=..,...]` (or `URL[,...]` when not `named`) over `base`."""
    name = "judge"
    rest = spec
    if named:
        name, sep, rest = spec.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise ConfigError(f"--endpoint {spec!r}: expected NAME=URL[,model=...,temperature=...]")
        name = name.strip()
    url, *options = [part.strip() for part in rest.split(",")]
    fields: dict[str, Any] = {"base_url": url} if url else {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{spec!r}: option {option!r} is not KEY=VALUE")
        fields[key.strip()] = value.strip() if key.strip() in ("model", "base_url", "api_key_env") else _scalar(value.strip())
    if any(k in fields for k in ("api_key", "key", "token")):
        raise ConfigError(f"{spec!r}: pass keys through the environment (api_key_env=VAR), not on the command line")
    return name, _endpoint(base, fields, f"endpoint {name!r}")


def resolve_endpoints(cfg: Config, eval_cfg, specs: list[str]) -> dict[str, EndpointConfig]:
    """Endpoints from --endpoint, else `[stages.eval.endpoints.NAME]`, else `[llm]` as "default"."""
    if specs:
        endpoints = dict(parse_endpoint_spec(s, cfg.llm) for s in specs)
        if len(endpoints) != len(specs):
            raise ConfigError("--endpoint names must be unique")
        return endpoints
    if eval_cfg.endpoints:
        return {n: _endpoint(cfg.llm, f, f"stages.eval.endpoints.{n}") for n, f in eval_cfg.endpoints.items()}
    return {"default": cfg.llm}


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        endpoint: Annotated[list[str] | None, typer.Option("--endpoint", "-e", help="NAME=URL[,model=..,temperature=..,max_tokens=..,api_key_env=..]; repeat to compare.")] = None,
        judge: Annotated[str | None, typer.Option(help="Judge endpoint URL[,model=..]; default: stages.eval.judge over the llm section.")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="deccp, harmbench, xstest, release:VERSION or a prompt file; repeat.")] = None,
        languages: Annotated[str | None, typer.Option(help="Comma-separated languages to ask in (prompts are translated).")] = None,
        samples: Annotated[int | None, typer.Option(min=1, help="Samples per prompt, averaged.")] = None,
        limit: Annotated[int | None, typer.Option(min=1, help="At most N prompts per set.")] = None,
        max_tokens: Annotated[int | None, typer.Option(min=1, help="Generation max_tokens for every endpoint.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for prompt selection and the bootstrap.")] = None,
        out: Annotated[Path | None, typer.Option(help="Output folder (default: <workspace>/eval).")] = None,
        title: Annotated[str, typer.Option(help="Report title.")] = "curate eval report",
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached LLM results (new ones are still stored).")] = False,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
        config: ConfigOpt = None,
    ) -> None:
        """Evaluate endpoints side by side: % responses, satisfaction, HarmBench ASR, XSTest over-refusal."""
        import polars as pl


        cfg = get_config(config)
        eval_cfg: EvalConfig = stage_config(cfg, EVAL_STAGE, EvalConfig)  # type: ignore[assignment]
        updates: dict[str, Any] = {}
        if sets:
            updates["sets"] = sets
        if languages:
            updates["languages"] = [lang.strip() for lang in languages.split(",") if lang.strip()]
        for key, value in (("samples", samples), ("limit", limit), ("seed", seed)):
            if value is not None:
                updates[key] = value
        if max_tokens is not None:
            updates["generation"] = eval_cfg.generation | {"max_tokens": max_tokens}
        eval_cfg = EvalConfig.model_validate(eval_cfg.model_dump() | updates)

        endpoints = resolve_endpoints(cfg, eval_cfg, endpoint or [])
        judge_base = _endpoint(cfg.llm, eval_cfg.judge, "stages.eval.judge")
        judge_cfg = parse_endpoint_spec(judge, judge_base, named=False)[1] if judge else judge_base


        try:
            refusal_cfg = RefusalConfig.model_validate(cfg.stages.get("refusal", {}) | eval_cfg.refusal)
        except ValidationError as exc:
            raise ConfigError(f"stages.eval.refusal: {exc.errors(include_url=False)[0]['msg']}") from exc
        translate_cfg = None
        if eval_cfg.languages:

            translate_cfg = stage_config(cfg, "translate", TranslateConfig)

        release_store = None
        if any(spec.startswith("release:") for spec in eval_cfg.sets):

            release_store = store_uri(cfg, release_config(cfg))
        frames = [
            select_items(
                load_eval_set(spec, harmbench_categories=tuple(eval_cfg.harmbench_categories), release_store=release_store,
                              release_split=eval_cfg.release_split, holdout_fraction=eval_cfg.holdout_fraction,
                              seed=eval_cfg.holdout_seed, langid=cfg.langid),
                eval_cfg.limit, eval_cfg.seed,
            )
            for spec in eval_cfg.sets
        ]
        items = pl.concat(frames, how="vertical")
        console.print(f"eval: {items.height} prompts from {', '.join(eval_cfg.sets)}; "
                      f"{len(endpoints)} endpoint(s) x {eval_cfg.samples} samples")
        result = run_eval(
            items, endpoints, eval_cfg, judge=judge_cfg, translator=cfg.llm, translate_config=translate_cfg,
            refusal_config=refusal_cfg, cache=LLMCache.for_workspace(cfg.workspace_path), refresh=no_cache,
            progress_enabled=progress,
        )
        out_dir = out or cfg.workspace_path / "eval"
        paths = write_outputs(result, out_dir, title)

        table = Table(title="overall")
        for col in ("metric", "set", "endpoint", "value", "interval", "prompts", "errors"):
            table.add_column(col)
        overall = result.metrics.filter((pl.col("language") == "all") & (pl.col("category") == "all"))
        for r in overall.iter_rows(named=True):
            interval = (f"{format_value(r['metric'], r['ci_low'])}-{format_value(r['metric'], r['ci_high'])}"
                        if r["ci_low"] is not None else "")
            table.add_row(r["metric"], r["set"], r["endpoint"], format_value(r["metric"], r["value"]), interval,
                          str(r["n_prompts"]), str(r["n_errors"]))
        console.print(table)
        console.print(f"report: {paths['report']}\nmetrics: {paths['metrics_json']}")
        errors = result.errors
        if errors.height:
            console.print(f"[yellow]{errors.height} failed calls[/] (listed in the report and {paths['errors']})")
        generated = result.responses.filter(pl.col("error_stage").is_null() | (pl.col("error_stage") != "translate"))
        if generated.height and generated.filter(pl.col("status") == "ok").height == 0:
            first = errors["error"][0] if errors.height else "unknown"
            raise CurateError(f"every generation call failed (first error: {first}); see {paths['report']}")
