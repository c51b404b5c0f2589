"""Requests frames into calls: messages, sampling parameters and the cache key of each distinct request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.llm.cache import request_key
from curate.sampling_overrides import override_problems

# Settings that shape the request but are not sent as parameters.
FOLD_SYSTEM_KEY = "fold_system_prompt"


@dataclass
class Call:
    """One distinct request (rows with the same cache key share it)."""

    key: str
    request_id: str
    candidate_index: int
    messages: list[dict[str, Any]]
    params: dict[str, Any]


# How a JSON schema is sent, best first. OpenAI/vLLM/SGLang take "json_schema"; llama.cpp's
# Python server takes the schema inside "json_object"; anything else gets no response_format and
# its output is parsed, validated and resampled.
SCHEMA_FORMATS = ("json_schema", "json_object", None)


def response_format(kind: str | None, schema: dict) -> dict | None:
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    if kind == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def _fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DeepSeek recommends no system prompt for R1: system text goes at the top of the first user turn."""
    system = [m["content"] for m in messages if m.get("role") == "system" and m.get("content")]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    prefix = "\n\n".join(system)
    for m in rest:
        if m.get("role") == "user":
            m["content"] = f"{prefix}\n\n{m.get('content') or ''}"
            return rest
    return [{"role": "user", "content": prefix}, *rest]


def _row_messages(row: dict[str, Any], position: int) -> list[dict[str, Any]]:
    messages = row.get("messages")
    if messages:
        out = []
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"requests row {position} (request_id={row['request_id']!r}): messages need role and content")
            out.append({k: v for k, v in m.items() if v is not None})
        return out
    prompt = row.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise ValueError(f"requests row {position} (request_id={row['request_id']!r}): no prompt and no messages")
    return [{"role": "user", "content": prompt}]


def build_params(endpoint: EndpointConfig, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """Sampling parameters: R1 defaults from the endpoint, then the stage's overrides."""
    # The config's check, for Python callers too: a managed key or an endpoint setting would go into
    # the body and be ignored or override what curate set (model, response_format, stream).
    problems = override_problems(overrides or {}, "overrides")
    if problems:
        raise ValueError("; ".join(problems))
    params: dict[str, Any] = {"temperature": endpoint.temperature, "top_p": endpoint.top_p, "max_tokens": endpoint.max_tokens}
    fold = True
    for key, value in (overrides or {}).items():
        if key == FOLD_SYSTEM_KEY:
            fold = bool(value)
        elif value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params, fold


def prepare_calls(
    requests: pl.DataFrame, endpoint: EndpointConfig, overrides: dict[str, Any] | None, response_schema: dict | None
) -> list[Call]:
    if "request_id" not in requests.columns:
        raise ValueError("requests frame needs a request_id column")
    if "prompt" not in requests.columns and "messages" not in requests.columns:
        raise ValueError("requests frame needs a prompt or a messages column")
    params, fold = build_params(endpoint, overrides)
    calls: list[Call] = []
    seen: set[tuple[str, int]] = set()
    for position, row in enumerate(requests.iter_rows(named=True), start=1):
        request_id = row["request_id"]
        if request_id is None:
            raise ValueError(f"requests row {position}: request_id is null")
        index = int(row.get("candidate_index") or 0)
        if (request_id, index) in seen:
            raise ValueError(f"requests row {position}: duplicate request_id {request_id!r} with candidate_index {index}")
        seen.add((request_id, index))
        messages = _row_messages(row, position)
        if fold:
            messages = _fold_system(messages)
        call_params = dict(params)
        if "seed" in call_params:
            # A fixed seed would make every candidate identical; offset it per candidate instead.
            call_params["seed"] = int(call_params["seed"]) + index
        key_params = call_params | ({"response_schema": response_schema} if response_schema else {})
        calls.append(Call(request_key(endpoint.model, messages, key_params, index), str(request_id), index, messages, call_params))
    return calls
