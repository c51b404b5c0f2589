"""The whole config, checked before anything runs.

`curate run`, `curate serve`, every stage command and the flows call `check_config` first: every
`[stages.*]` section is validated, also those of stages this command does not run, so a typo in
`[stages.answers]` fails before `ingest` has spent an hour. Unknown sections and keys are errors
naming the file, the section and the key, with a "did you mean" when one is close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.config import RENAMED, Config, EndpointConfig, did_you_mean, validate_section, with_endpoint_defaults
from curate.errors import ConfigError
from curate.eval.run import EvalConfig
from curate.orchestrate import orchestration_config
from curate.pipeline import CURATION, SAFETY
from curate.refusal import RefusalConfig
from curate.release.create import release_config
from curate.review.sync import review_config
from curate.runner import stage_settings
from curate.sampling_overrides import check_sampling_overrides


def _refusal_judge(cfg: Config) -> Any:
    return validate_section(EndpointConfig, with_endpoint_defaults(cfg.llm, {"judge": cfg.stages.get("refusal_judge", {})}, "judge")["judge"],
                            "stages.refusal_judge", cfg.source)


def _eval(cfg: Config) -> Any:
    eval_cfg = validate_section(EvalConfig, cfg.stages.get("eval", {}), "stages.eval", cfg.source)
    for name, fields in eval_cfg.endpoints.items():
        validate_section(EndpointConfig, cfg.llm.model_dump() | fields, f"stages.eval.endpoints.{name}", cfg.source)
    validate_section(EndpointConfig, cfg.llm.model_dump() | eval_cfg.judge, "stages.eval.judge", cfg.source)
    validate_section(RefusalConfig, cfg.stages.get("refusal", {}) | eval_cfg.refusal, "stages.eval.refusal", cfg.source)
    return eval_cfg


# Every [stages.<name>] section a config may have, and how to check it. The curation stages come
# from the pipeline table; the rest belong to the commands and flows around it.
SECTIONS: dict[str, Callable[[Config], Any]] = {
    # First: blocked and answers inherit [stages.refusal], so a bad key there is named where it is.
    "refusal": lambda cfg: validate_section(RefusalConfig, cfg.stages.get("refusal", {}), "stages.refusal", cfg.source),
    **{stage.name: (lambda cfg, stage=stage: stage_settings(stage, cfg)) for stage in (*CURATION, *SAFETY)
       if stage.section is None and stage.shares_section is None},
    "orchestrate": orchestration_config,
    "refusal_judge": _refusal_judge,
    "review": review_config,
    "release": release_config,
    "eval": _eval,
}
# A section's sampling overrides, sent in each request's body (curate.sampling_overrides).
_SAMPLING_OVERRIDES = ("overrides", "judge_overrides", "satisfaction_overrides", "generation")


def _check_overrides(cfg: Config, name: str, raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        if key in _SAMPLING_OVERRIDES and isinstance(value, dict):
            check_sampling_overrides(value, f"stages.{name}.{key}", cfg.source)
        elif isinstance(value, dict):
            _check_overrides(cfg, f"{name}.{key}", value)


def check_config(cfg: Config) -> Config:
    """`cfg` if every section is known and valid, else a ConfigError naming the file and each problem."""
    where = cfg.source or "config"
    for name in cfg.stages:
        if f"stages.{name}" in RENAMED:
            raise ConfigError(f"{where}: [stages.{name}]: renamed to [{RENAMED[f'stages.{name}']}]")
        if name not in SECTIONS:
            raise ConfigError(f"{where}: [stages.{name}]: unknown section{did_you_mean(name, SECTIONS)}")
    for name, check in SECTIONS.items():
        check(cfg)
        _check_overrides(cfg, name, dict(cfg.stages.get(name, {})))
    return cfg
