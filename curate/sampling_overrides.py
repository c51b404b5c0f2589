"""Which keys a stage's sampling `overrides` may set, and their types.

An override goes into each request's body as it is (curate.llm.requests.build_params, then
curate.llm.wire): OpenAI's parameters and anything else (top_k, min_p, chat_template_kwargs, a
server's own sampler settings) alike. So the check is open: a parameter whose type is known is
type-checked, keys curate sets itself and endpoint settings (which would silently go into the body
and do nothing) are errors, a key close to a known one is taken for a typo, and any other key is
sent to the server as it is. The same check runs on a config's overrides tables (curate.validate) and
on the `overrides` a Python caller passes to `complete_frame` (curate.llm.requests.build_params).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate.config import EndpointConfig
from curate.errors import ConfigError


class SamplingOverrides(BaseModel):
    """The request parameters whose types are known (a `None` drops a default, from Python)."""

    # Strict: a seed of "7", 7.5 or true, or a top_k of "20", is an error rather than coerced.
    model_config = ConfigDict(strict=True, extra="allow")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    # With a seed, candidate k is sent seed + k (curate.llm.requests.prepare_calls).
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0)
    # Not OpenAI's, but common to vLLM, SGLang and llama.cpp's servers.
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    min_tokens: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = None  # vLLM, SGLang
    repeat_penalty: float | None = None  # llama.cpp
    chat_template_kwargs: dict[str, Any] | None = None
    # Curate's own: shapes the messages, never sent.
    fold_system_prompt: bool | None = None


# What a value of each union-typed parameter should be (pydantic reports one error per member).
_EXPECTED = {"stop": "a string or a list of strings", "logit_bias": "a table of token id = bias"}

# Keys curate sets on every request itself.
MANAGED = {
    "model": "set by the endpoint's `model`",
    "messages": "built from the stage's prompts",
    "n": "curate sends one request per candidate; set the stage's number of candidates instead "
         "(from Python: one requests row per candidate_index)",
    "stream": "curate reads whole replies",
    "stream_options": "curate reads whole replies",
    "response_format": "set by curate from the stage's schema and the endpoint's `structured_output`",
}
# Endpoint settings that are not request parameters: in overrides they would go into the body.
ENDPOINT_ONLY = sorted(set(EndpointConfig.model_fields) - set(SamplingOverrides.model_fields) - set(MANAGED))


def _normal(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _typo_of(key: str) -> str | None:
    """The known key `key` is probably a misspelling of, if any: same letters up to case, `-` and
    `_` (top-k, maxTokens), or very close (temprature); a server parameter such as top_a or
    typical_p is not close enough to be taken for one."""
    known = [*SamplingOverrides.model_fields, *ENDPOINT_ONLY, *MANAGED]
    same = [name for name in known if _normal(name) == _normal(key)]
    close = same or difflib.get_close_matches(key, known, n=1, cutoff=0.85)
    return close[0] if close else None


def _type_errors(values: dict[str, Any], where: str) -> list[str]:
    try:
        SamplingOverrides.model_validate(values)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for err in exc.errors(include_url=False):
            key = str(err["loc"][0])
            if key in _EXPECTED:
                problems[key] = f"{where}.{key}: should be {_EXPECTED[key]}, got {values[key]!r}"
            else:
                problems.setdefault(key, f"{where}.{key}: {err['msg']}, got {values[key]!r}")
        return list(problems.values())
    return []


def check_sampling_overrides(values: dict[str, Any], where: str, source: Path | None = None) -> None:
    """Raise a ConfigError naming the config file and each bad `where.key` of an overrides table."""
    problems = override_problems(values, where)
    if problems:
        raise ConfigError(f"{source or 'config'}: {'; '.join(problems)}")


def override_problems(values: dict[str, Any], where: str) -> list[str]:
    """Each bad `where.key` of an overrides table, with why (empty when every key may be sent).

    The config check and `complete_frame(overrides=...)` from Python (curate.llm.requests) both use it."""
    problems: list[str] = []
    known = ", ".join(sorted(SamplingOverrides.model_fields))
    for key in values:
        if key in MANAGED:
            problems.append(f"{where}.{key}: not an override: {MANAGED[key]}")
        elif key in ENDPOINT_ONLY:
            problems.append(f"{where}.{key}: an endpoint setting, not a request parameter: set it on the endpoint "
                            "([llm], or the stage's own endpoint table)")
        elif key not in SamplingOverrides.model_fields and (typo := _typo_of(key)):
            problems.append(f"{where}.{key}: unknown key; did you mean '{typo}'? (known: {known}; a key unlike "
                            "these is sent to the server as it is)")
    problems += _type_errors({k: v for k, v in values.items() if k in SamplingOverrides.model_fields}, where)
    return problems
