"""Sample K candidate answers with reasoning: the generation step the blocked-topic answers stage
and the safety answers stage share (same cache, resume and error rows through `complete_frame`).
"""

from __future__ import annotations

import polars as pl

from curate.config import EndpointConfig
from curate.llm.client import complete_frame
from curate.progress import Advance

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


def sample_candidates(
    requests: pl.DataFrame,
    endpoint: EndpointConfig,
    *,
    stage: str,
    system_prompt: str | None = None,
    overrides: dict | None = None,
    cache=None,
    refresh: bool = False,
    progress: Advance | None = None,
    prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(requests plus reasoning, answer, finish_reason, truncated_in_reasoning, prompt_tokens,
    completion_tokens, status, error; the LLM layer's results for usage accounting).

    `requests` has candidate_id (the request id), candidate_index and either `prompt` (one user
    turn) or `messages` (a whole conversation ending in the user turn to answer). A system prompt,
    when given, goes first. Failed calls stay as rows with status error."""
    call = requests.select(pl.col("candidate_id").alias("request_id"), "candidate_index")
    if "messages" in requests.columns:
        conversations = [list(turns) for turns in requests["messages"].to_list()]
        if system_prompt:
            conversations = [[{"role": "system", "content": system_prompt}, *turns] for turns in conversations]
        call = call.with_columns(pl.Series("messages", conversations, dtype=pl.List(MESSAGE)))
    elif system_prompt:
        system = pl.struct(role=pl.lit("system"), content=pl.lit(system_prompt))
        user = pl.struct(role=pl.lit("user"), content=requests["prompt"])
        call = call.with_columns(requests.select(pl.concat_list(system, user).alias("messages")))
    else:
        call = call.with_columns(requests["prompt"])
    results = complete_frame(call, endpoint, stage=stage, cache=cache, refresh=refresh, overrides=overrides,
                             progress=progress, prices=prices)
    raw = requests.join(
        results.select(
            pl.col("request_id").alias("candidate_id"), "reasoning", pl.col("content").alias("answer"), "finish_reason",
            pl.col("truncated").fill_null(False).alias("truncated_in_reasoning"), "prompt_tokens", "completion_tokens",
            "status", "error",
        ),
        on="candidate_id", how="left",
    )
    return raw, results
