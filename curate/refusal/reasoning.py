"""The final answer of a reply that carries a reasoning section: what the refusal detector judges.

Reasoning models write their chain of thought before the answer, inline in the reply:
`<think>…</think>answer` (DeepSeek-R1 and most open models), `…</think>answer` when the chat
template already opened the block, `◁think▷…◁/think▷answer` (Kimi-VL thinking), `<thinking>` or
`<reasoning>` blocks. A refusal is decided by the answer, not by the thinking: a reasoning section
that weighs refusing and then answers in full is an answer, and a long, neutral-sounding reasoning
section followed by "I can't help with that" is a refusal. So every detector mode reads only the
text after the last closing marker.

A reply that opens a reasoning block at its start and never closes it (the output stopped while
still thinking), or that closes it and writes nothing after, has no final answer: no verdict, with
the reason `NO_ANSWER_REASON`, like an empty reply. (The project's own LLM client already splits
reasoning from answers, curate/llm/reasoning.py; this is for replies that arrive with it inline.)
"""

from __future__ import annotations

import polars as pl

# Closing markers: the answer is whatever follows the last one.
_CLOSE = r"</think>|</thinking>|</reasoning>|◁/think▷"
_OPEN = r"<think>|<thinking>|<reasoning>|◁think▷"
_THROUGH_LAST_CLOSE = rf"(?is)^.*(?:{_CLOSE})"
_HAS_CLOSE = rf"(?i)(?:{_CLOSE})"
_OPENS_AT_START = rf"(?i)^\s*(?:{_OPEN})"

NO_ANSWER_REASON = "no final answer (reasoning only)"


def final_answers(texts: pl.Series) -> pl.Series:
    """The answer part of each reply: after the last closing reasoning marker; null when a
    reasoning block leaves no answer; the reply unchanged when it has no reasoning markers."""
    texts = texts.cast(pl.String)
    closed = texts.str.contains(_HAS_CLOSE).fill_null(False)
    opened_only = texts.str.contains(_OPENS_AT_START).fill_null(False) & ~closed
    # The cut runs only on rows with a closing marker: on every row it would cost more than the
    # model itself (bench/refusal_bench.py).
    if not (closed.any() or opened_only.any()):
        return texts
    cut = texts.filter(closed).str.replace(_THROUGH_LAST_CLOSE, "").str.strip_chars()
    cut = pl.select(pl.when(cut.str.len_chars() > 0).then(cut)).to_series()
    out = texts.scatter(closed.arg_true(), cut) if cut.len() else texts
    return out.scatter(opened_only.arg_true(), None) if opened_only.any() else out

