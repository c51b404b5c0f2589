"""The LLM layer: every generation, translation and judge call goes through here.

CONTRACT (other modules code against this; keep it stable):

    from curate.llm import complete_frame, LLMCache, usage_summary

    results = complete_frame(
        requests,              # pl.DataFrame: request_id (str), and either
                               #   prompt (str: the user turn) or messages (list[struct{role: str, content: str}]);
                               #   optional candidate_index (int, default 0) to sample K distinct candidates;
                               #   (request_id, candidate_index) must be unique. Other columns are ignored.
        endpoint,              # curate.config.EndpointConfig (base_url, model, api_key_env, limits, sampling)
        stage="answers",       # name for accounting/reporting; NOT part of the cache key (cache is shared across stages)
        cache=LLMCache(path),  # persistent cache (None = no cache); LLMCache.for_workspace(root) gives the default
        refresh=False,         # True = ignore cached results (still write new ones): the --no-cache option
        response_schema=None,  # JSON schema dict: structured output; the parsed JSON string goes to `parsed`
        validate=None,         # optional callable(content:str)->Any raising ValueError on bad output: retried, then an error row
        overrides=None,        # dict of per-stage sampling params (temperature, top_p, max_tokens, seed, stop,
                               #   server extras such as top_k ...; a None value removes a default) and
                               #   fold_system_prompt (bool, default True: system text goes into the user turn)
        progress=None,         # curate.progress.Advance callback
        prices=None,           # config.prices: fills cost_usd (None where the model has no price)
        retry=None,            # curate.llm.RetryPolicy: backoff base/cap, invalid-output resamples
    )
    # -> pl.DataFrame, one row per request, same order, nothing dropped:
    #    request_id, candidate_index, model, content (answer, reasoning removed), reasoning, finish_reason,
    #    truncated (output ended inside the reasoning: no answer), prompt_tokens, completion_tokens,
    #    status ('ok' | 'error'), error ('<kind>: ...': http_429, http_500, timeout, connection,
    #    malformed_response, context_length, http_400, invalid_output, ...), parsed, cached, attempts,
    #    latency_s, cost_usd

    usage_summary(results, stage, prices) -> dict   # tokens and cost for a stage report
                                                    # (put it in StageOutput.report["llm"])

`acomplete_frame` is the same as a coroutine. Errors are rows, not exceptions; a ValueError is
raised only for a malformed requests frame (a bug in the calling stage).
"""

from curate.llm.accounting import usage_summary
from curate.llm.cache import LLMCache, request_key
from curate.llm.client import RESULT_SCHEMA, acomplete_frame, complete_frame
from curate.llm.limits import RetryPolicy
from curate.llm.reasoning import split_reasoning

__all__ = [
    "RESULT_SCHEMA", "LLMCache", "RetryPolicy", "acomplete_frame", "complete_frame", "request_key", "split_reasoning",
    "usage_summary",
]
