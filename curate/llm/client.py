"""complete_frame: run a frame of chat requests against an OpenAI-compatible endpoint.

Async inside (the official `openai` SDK's client; the request and reply on the wire: curate.llm.wire),
sync outside: `complete_frame` sends its calls on the process's one LLM loop, where every caller
shares one group of clients (pools of at most 32 connections, curate.llm.connections) per endpoint.
Concurrency and rate limits come from the endpoint's process-wide budget (curate.llm.budget), so
calls running at once on other threads share them.
Every request ends as exactly one result row, in request order; failures are rows with
status "error" and a reason, never exceptions that lose the rest of the frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from curate.config import EndpointConfig
from curate.llm import connections
from curate.llm.budget import EndpointLimits, endpoint_budget, process_share
from curate.llm.cache import LLMCache
from curate.llm.limits import LoopSafeSemaphore, RateLimiter, RetryPolicy, parse_retry_after
from curate.llm.reasoning import split_reasoning
from curate.llm.requests import Call, prepare_calls, response_format
from curate.llm.schema_format import RunState
from curate.llm.structured import InvalidOutput, parse_structured
from curate.llm.wire import MalformedResponse, chat_body, post_chat, read_reply
from curate.progress import Advance
from curate.secrets import redact

if TYPE_CHECKING:
    import openai


_openai = connections.openai_sdk

log = logging.getLogger("curate.llm")
# The SDK's HTTP client logs every request at INFO; at thousands of calls that drowns the CLI.
for _noisy in ("httpx", "httpx2", "openai"):
    if logging.getLogger(_noisy).level == logging.NOTSET:
        logging.getLogger(_noisy).setLevel(logging.WARNING)

RESULT_SCHEMA = pl.Schema(
    {
        "request_id": pl.String(),
        "candidate_index": pl.Int64(),
        "model": pl.String(),
        "content": pl.String(),
        "reasoning": pl.String(),
        "finish_reason": pl.String(),
        "truncated": pl.Boolean(),
        "prompt_tokens": pl.Int64(),
        "completion_tokens": pl.Int64(),
        "status": pl.String(),
        "error": pl.String(),
        "parsed": pl.String(),
        "cached": pl.Boolean(),
        "attempts": pl.Int64(),
        "latency_s": pl.Float64(),
        "cost_usd": pl.Float64(),
    }
)


def _price(prices: dict[str, dict[str, float]] | None, model: str) -> dict[str, float] | None:
    return (prices or {}).get(model)


def cost_of(prices: dict[str, dict[str, float]] | None, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    price = _price(prices, model)
    if price is None:
        return None
    return ((prompt_tokens or 0) * price.get("usd_per_1m_prompt_tokens", 0.0)
            + (completion_tokens or 0) * price.get("usd_per_1m_completion_tokens", 0.0)) / 1e6


def _error_text(kind: str, exc: BaseException, secret: str | None) -> str:
    text = f"{kind}: {type(exc).__name__}: {exc}"
    if secret:
        text = text.replace(secret, "***")
    return redact(text)[:1000]


def _schema_unsupported(exc: openai.APIStatusError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("response_format", "json_schema", "json_object", "schema", "grammar"))


async def _run_call(
    call: Call,
    clients: connections.ClientGroup,
    endpoint: EndpointConfig,
    *,
    limiter: RateLimiter,
    slots: LoopSafeSemaphore,
    retry: RetryPolicy,
    state: RunState,
    response_schema: dict | None,
    validate: Callable[[str], Any] | None,
    secret: str | None,
) -> dict[str, Any]:
    openai = _openai()
    attempts = retries = invalid = 0
    billed_prompt = billed_completion = 0
    last: dict[str, Any] = {}
    prompt_chars = sum(len(str(m.get("content", ""))) for m in call.messages)
    estimate = prompt_chars // 3 + int(call.params.get("max_tokens") or 0)
    while True:
        params = dict(call.params)
        sent_format, probing = await state.format_to_send() if response_schema else (None, False)
        if sent_format:
            params["response_format"] = response_format(sent_format, response_schema)
        delay: float | None = None
        error: str | None = None
        attempts += 1
        answered = False
        async with slots:
            reserved = await limiter.acquire(estimate)
            started = time.perf_counter()
            used: int | None = None
            try:
                state.stats["calls"] += 1
                async with clients.lease() as client:
                    reply = await post_chat(client, chat_body(endpoint.model, call.messages, params))
                answered = True  # the server took the request as sent, response_format included
                got = read_reply(reply)
                latency = time.perf_counter() - started
                used = (got["prompt_tokens"] or 0) + (got["completion_tokens"] or 0) or None
            except openai.APIStatusError as exc:
                status = exc.status_code
                # Some servers report a request they cannot parse as a 500 (llama.cpp's does).
                refused_schema = bool(sent_format) and status in (400, 422, 500) and _schema_unsupported(exc)
                used = 0  # the server refused the request: give its token reservation back
                if refused_schema and endpoint.structured_output == "auto" and state.downgrade_schema_format(sent_format):
                    attempts -= 1
                    continue
                if refused_schema:  # json_schema was demanded and the server cannot do it: retrying won't help
                    return _error_row(call, _error_text("schema_unsupported", exc, secret), attempts,
                                      billed_prompt, billed_completion, last)
                if status == 429 or status in (408, 409) or status >= 500:
                    error = _error_text(f"http_{status}", exc, secret)
                    server_wait = parse_retry_after(exc.response.headers)
                    if server_wait is not None:
                        delay = min(server_wait, retry.max_retry_after_s)
                        if status == 429:
                            limiter.pause(delay)
                else:
                    kind = "context_length" if "context" in str(exc).lower() and status in (400, 413) else f"http_{status}"
                    return _error_row(call, _error_text(kind, exc, secret), attempts, billed_prompt, billed_completion, last)
            except openai.APITimeoutError as exc:
                error = _error_text("timeout", exc, secret)
            except openai.APIConnectionError as exc:
                error = _error_text("connection", exc, secret)
            except (MalformedResponse, openai.APIResponseValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                error = _error_text("malformed_response", exc, secret)
            finally:
                limiter.settle(reserved, used)
                if probing:  # after a refusal's downgrade above, so the waiting calls send the next format
                    state.probed(answered, sent_format)

        if error is None:
            billed_prompt += got["prompt_tokens"] or 0
            billed_completion += got["completion_tokens"] or 0
            split = split_reasoning(got["content"], got["reasoning_field"], got["finish_reason"])
            last = {
                "content": split.answer,
                "reasoning": split.reasoning,
                "finish_reason": got["finish_reason"],
                "truncated": split.truncated,
                "latency_s": latency,
            }
            if response_schema is None and validate is None:
                return _ok_row(call, last, attempts, billed_prompt, billed_completion, None)
            try:
                parsed = parse_structured(split.answer, response_schema, validate)
                return _ok_row(call, last, attempts, billed_prompt, billed_completion, parsed)
            except InvalidOutput as exc:
                invalid += 1
                if invalid > retry.max_invalid_retries:
                    return _error_row(call, redact(f"invalid_output: {exc}")[:1000], attempts, billed_prompt, billed_completion, last)
                log.info("%s: invalid output (%s); resampling %d/%d", call.request_id, exc, invalid, retry.max_invalid_retries)
                continue

        if retries >= endpoint.max_retries:
            return _error_row(call, f"{error} (gave up after {attempts} attempts)", attempts, billed_prompt, billed_completion, last)
        retries += 1
        state.stats["retries"] += 1
        if delay is None:
            delay = retry.backoff(retries - 1)
        log.warning("%s: %s; retry %d/%d in %.2fs", call.request_id, error, retries, endpoint.max_retries, delay)
        await asyncio.sleep(delay)


def _ok_row(call: Call, last: dict[str, Any], attempts: int, prompt_tokens: int, completion_tokens: int, parsed: str | None) -> dict[str, Any]:
    return {**last, "status": "ok", "error": None, "parsed": parsed, "attempts": attempts,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def _error_row(call: Call, error: str, attempts: int, prompt_tokens: int, completion_tokens: int, last: dict[str, Any]) -> dict[str, Any]:
    # The last output (if any) stays on the row so a reviewer can see why it failed.
    return {"content": last.get("content"), "reasoning": last.get("reasoning"), "finish_reason": last.get("finish_reason"),
            "truncated": last.get("truncated"), "latency_s": last.get("latency_s"), "status": "error", "error": error,
            "parsed": None, "attempts": attempts, "prompt_tokens": prompt_tokens or None,
            "completion_tokens": completion_tokens or None}


def _cached_valid(result: dict[str, Any], response_schema: dict | None, validate: Callable[[str], Any] | None) -> bool:
    if validate is None:
        return True
    try:
        parse_structured(result.get("content"), response_schema, validate)
    except InvalidOutput:
        return False  # the stage's rules changed since it was cached: ask again
    return True


@dataclass(frozen=True)
class _Options:
    """complete_frame's keyword arguments (see its CONTRACT in curate/llm/__init__.py)."""

    stage: str = "llm"
    cache: LLMCache | None = None
    refresh: bool = False
    response_schema: dict | None = None
    validate: Callable[[str], Any] | None = None
    overrides: dict[str, Any] | None = None
    progress: Advance | None = None
    prices: dict[str, dict[str, float]] | None = None
    retry: RetryPolicy | None = None


@dataclass
class _Plan:
    """A frame's calls, split into those the cache already answered and those to send."""

    calls: list[Call]
    found: dict[str, dict[str, Any]]
    pending: dict[str, Call]
    rows_per_key: dict[str, int]


def _plan(requests: pl.DataFrame, endpoint: EndpointConfig, opts: _Options) -> _Plan:
    calls = prepare_calls(requests, endpoint, opts.overrides, opts.response_schema)
    found = {} if (opts.cache is None or opts.refresh) else opts.cache.get_many(c.key for c in calls)
    found = {k: v for k, v in found.items() if _cached_valid(v, opts.response_schema, opts.validate)}
    pending: dict[str, Call] = {}
    rows_per_key: dict[str, int] = {}
    for c in calls:
        if c.key not in found:
            pending.setdefault(c.key, c)
        rows_per_key[c.key] = rows_per_key.get(c.key, 0) + 1
    if opts.progress is not None:
        done_now = sum(1 for c in calls if c.key in found)
        if done_now:
            opts.progress(done_now)
    return _Plan(calls, found, pending, rows_per_key)


@asynccontextmanager
async def _clients(endpoint: EndpointConfig, secret: str | None) -> AsyncIterator[connections.ClientGroup]:
    """The process's shared clients of the endpoint on its LLM loop; on any other loop, ones for this run."""
    shared = connections.shared_client(endpoint, secret)
    if shared is not None:
        yield shared
        return
    async with connections.ClientGroup(endpoint, secret) as clients:
        yield clients


async def _send(plan: _Plan, endpoint: EndpointConfig, opts: _Options) -> dict[str, dict[str, Any]]:
    """Every pending call's result row, by request key (each committed to the cache as it lands)."""
    results: dict[str, dict[str, Any]] = {}
    cache, progress, response_schema, validate = opts.cache, opts.progress, opts.response_schema, opts.validate
    retry = opts.retry or RetryPolicy()
    secret = endpoint.api_key()
    state = RunState.start(endpoint, response_schema)
    # Concurrency and rate limits are the endpoint's, shared with every other run in the process.
    budget = endpoint_budget(endpoint)
    async with _clients(endpoint, secret) as clients:

        async def one(call: Call) -> None:
            try:
                row = await _run_call(call, clients, endpoint, limiter=budget.rates, slots=budget.slots, retry=retry, state=state,
                                      response_schema=response_schema, validate=validate, secret=secret)
            except Exception as exc:  # a bug or an unforeseen SDK error must not lose the other rows
                log.exception("%s: unexpected error", call.request_id)
                row = _error_row(call, _error_text("unexpected", exc, secret), 1, 0, 0, {})
            results[call.key] = row
            if cache is not None:
                # Committed now, not at the end: a killed run keeps every call finished so far.
                if row["status"] == "ok":
                    cache.put(call.key, endpoint.model, opts.stage, row)
                else:
                    cache.record_error(call.key, endpoint.model, opts.stage, row["error"], row["attempts"])
            if progress is not None:
                progress(plan.rows_per_key[call.key])

        with budget.use(EndpointLimits.of(endpoint, process_share())):
            await asyncio.gather(*(one(c) for c in plan.pending.values()))
    return results


def _assemble(plan: _Plan, results: dict[str, dict[str, Any]], endpoint: EndpointConfig, opts: _Options) -> pl.DataFrame:
    prices = opts.prices
    out: list[dict[str, Any]] = []
    first_use: set[str] = set()
    for c in plan.calls:
        if c.key in plan.found:
            row, cached = plan.found[c.key], True
        else:
            row = results[c.key]
            cached = c.key in first_use  # a second row with the same request reuses the first's call
            first_use.add(c.key)
        out.append({
            **{k: row.get(k) for k in RESULT_SCHEMA if k in row},
            "request_id": c.request_id,
            "candidate_index": c.candidate_index,
            "model": endpoint.model,
            "cached": cached,
            "cost_usd": cost_of(prices, endpoint.model, row.get("prompt_tokens"), row.get("completion_tokens")),
        })
    return pl.DataFrame(out, schema=RESULT_SCHEMA) if out else pl.DataFrame(schema=RESULT_SCHEMA)


async def acomplete_frame(requests: pl.DataFrame, endpoint: EndpointConfig, **options: Any) -> pl.DataFrame:
    """The async form of `complete_frame` (same keyword arguments and result), on the caller's loop
    with a client of its own."""
    opts = _Options(**options)
    plan = _plan(requests, endpoint, opts)
    results = await _send(plan, endpoint, opts) if plan.pending else {}
    return _assemble(plan, results, endpoint, opts)


def complete_frame(
    requests: pl.DataFrame,
    endpoint: EndpointConfig,
    *,
    stage: str = "llm",
    cache: LLMCache | None = None,
    refresh: bool = False,
    response_schema: dict | None = None,
    validate: Callable[[str], Any] | None = None,
    overrides: dict[str, Any] | None = None,
    progress: Advance | None = None,
    prices: dict[str, dict[str, float]] | None = None,
    retry: RetryPolicy | None = None,
) -> pl.DataFrame:
    """Run every request; see the CONTRACT in curate/llm/__init__.py. Safe to call from any thread,
    inside a running event loop too. The requests are prepared and the result frame is built on the
    caller's thread; the calls go out on the process's LLM loop (curate.llm.connections), whose
    one connection pool per endpoint every caller in the process shares."""
    opts = _Options(stage, cache, refresh, response_schema, validate, overrides, progress, prices, retry)
    plan = _plan(requests, endpoint, opts)
    results = {}
    if plan.pending:
        with connections.held():
            results = connections.run(_send(plan, endpoint, opts))
    return _assemble(plan, results, endpoint, opts)
