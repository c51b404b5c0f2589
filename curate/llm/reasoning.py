"""Split a reasoning model's chain of thought from its answer.

R1-style servers return the reasoning in one of three shapes:
- a separate `reasoning_content` (or `reasoning`) field: vLLM/SGLang with a reasoning parser, DeepSeek's API;
- inline, `<think>…</think>answer`, in the content;
- inline without the opening tag, `…</think>answer`, when the chat template already put `<think>`
  into the prompt (R1's own template does).
A `<think>` block that never closes means the output stopped inside the reasoning; with
finish_reason "length" that is the truncated case: reasoning kept, no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN = "<think>"
CLOSE = "</think>"
_OPEN_RE = re.compile(r"^\s*<think>", re.IGNORECASE)


@dataclass(frozen=True)
class SplitOutput:
    answer: str | None
    reasoning: str | None
    truncated: bool


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text or None


def split_reasoning(content: str | None, reasoning_field: str | None = None, finish_reason: str | None = None) -> SplitOutput:
    """Return the answer (reasoning removed), the reasoning, and whether the output was cut off
    inside the reasoning (so there is no answer). An answer cut off after the reasoning keeps
    finish_reason "length" but is not `truncated` in this sense."""
    truncated = finish_reason == "length"
    content = content or ""
    lower = content.lower()
    close_at = lower.find(CLOSE)
    opened = _OPEN_RE.match(content) is not None

    if close_at >= 0:
        start = _OPEN_RE.match(content).end() if opened else 0
        inline = content[start:close_at]
        answer = content[close_at + len(CLOSE) :]
        reasoning = "\n".join(p for p in (_clean(reasoning_field), _clean(inline)) if p)
        # A closed block followed by an answer cut off by max_tokens is still a (short) answer.
        return SplitOutput(_clean(answer), reasoning or None, truncated and not _clean(answer))
    if opened:
        inline = content[_OPEN_RE.match(content).end() :]
        reasoning = "\n".join(p for p in (_clean(reasoning_field), _clean(inline)) if p)
        return SplitOutput(None, reasoning or None, truncated)
    if reasoning_field is not None and not content.strip():
        # Separate field, no answer yet: the model ran out of tokens while still thinking.
        return SplitOutput(None, _clean(reasoning_field), truncated)
    return SplitOutput(_clean(content), _clean(reasoning_field), False)
