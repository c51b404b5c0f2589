"""One chat completion on the wire: the body `chat.completions.create` would send, and the five
fields of the reply curate keeps, read from its JSON.

`AsyncOpenAI.chat.completions.create` walks every parameter through the SDK's TypedDict transform
and builds a pydantic model of the whole reply: at C = 256 that cost about a quarter of the
client's CPU per request (docs/benchmarks.md, "Client CPU per request"). curate sends plain JSON
values and needs only content, reasoning, finish_reason and token counts, so it posts the same body
through the same client with `client.post` (the SDK's way to reach any path: the same headers,
bearer auth, timeout, status errors and exceptions) and reads the reply itself.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

CHAT_PATH = "/chat/completions"
# The auth `create` asks for: the endpoint's key as a bearer token, and nothing else the SDK could
# pick up from the environment (its default for other paths adds an admin key when one is set).
_OPTIONS: dict[str, Any] = {"security": {"bearer_auth": True}}


class MalformedResponse(Exception):
    """The server answered 200 with something that is not a chat completion."""


def chat_body(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The request body: what `create(model=, messages=, **params)` sends, SDK keyword arguments and
    server extras (`extra_body`) alike."""
    return {"model": model, "messages": messages, **params}


async def post_chat(client: openai.AsyncOpenAI, body: dict[str, Any]) -> bytes:
    """Send one chat request; the body of its 200 reply (read it with `read_reply`). HTTP errors
    raise the SDK's exceptions (APIStatusError, APITimeoutError, APIConnectionError), as `create` does."""
    return await client.post(CHAT_PATH, cast_to=bytes, body=body, options=_OPTIONS)


def read_reply(raw: bytes) -> dict[str, Any]:
    """content, reasoning_field (a separate `reasoning_content`/`reasoning`), finish_reason and
    token counts of a chat completion's first choice; MalformedResponse if it is not one."""
    try:
        data = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8 (UnicodeDecodeError is a ValueError too)
        raise MalformedResponse(f"not a chat completion: {raw[:200].decode('utf-8', 'replace')!r}") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"not a chat completion: {str(data)[:200]!r}")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return {
            "content": message.get("content"),
            "reasoning_field": reasoning if isinstance(reasoning, str) else None,
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
        }
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise MalformedResponse(f"chat completion without a usable choice: {type(exc).__name__}: {exc}") from None
