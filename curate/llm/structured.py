"""Structured output: find the JSON in a model's answer and check it against a schema.

Servers that support `response_format` with a JSON schema constrain decoding, so their output
parses; small or unconstrained models wrap JSON in prose or code fences, so we look for it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    """A checked validator per schema: `jsonschema.validate` checks the schema against its
    metaschema on every call (~0.8 ms, more than the rest of a judge reply's handling)."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


class InvalidOutput(ValueError):
    """The answer is not what the stage asked for (no JSON, wrong shape, failed validation)."""


def extract_json(text: str) -> Any:
    """The first JSON value in `text`: the whole text, a fenced block, or the first {...}/[...] span."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text, i)
                return value
            except json.JSONDecodeError:
                continue
    raise InvalidOutput("no JSON value found in the answer")


def parse_structured(answer: str | None, schema: dict | None, validate: Callable[[str], Any] | None) -> str | None:
    """Check an answer; returns what goes into the `parsed` column (a JSON string) or raises InvalidOutput."""
    if answer is None:
        raise InvalidOutput("no answer (output ended inside the reasoning or was empty)")
    parsed: str | None = None
    if schema is not None:
        value = extract_json(answer)
        # The same error `jsonschema.validate` raises (its best match), without re-checking the schema.
        exc = jsonschema.exceptions.best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
        if exc is not None:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise InvalidOutput(f"JSON does not match the schema at {where}: {exc.message}")
        parsed = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if validate is not None:
        try:
            checked = validate(answer)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidOutput(f"rejected by validator: {exc}") from None
        if parsed is None and checked is not None:
            parsed = checked if isinstance(checked, str) else json.dumps(checked, ensure_ascii=False, default=str)
    return parsed
