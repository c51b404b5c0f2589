"""The LLM layer: every generation, translation and judge call goes through here.

CONTRACT (other modules code against this; keep it stable):

    from curate.llm import complete_frame, LLMCache, usage_summary

    results = complete_frame(
        requests,              # pl.DataFrame: request_id (str, unique per call), and either
                               #   prompt (str: the user turn) or messages (list[struct{role: str, content: str}]);
                               #   optional candidate_index (int, default 0) to sample K distinct candidates
        endpoint,              # curate.config.EndpointConfig (base_url, model, api_key_env, limits, sampling)
        stage="answers",       # name for accounting/reporting; NOT part of the cache key (cache is shared across stages)
        cache=LLMCache(path),  # persistent cache (None = no cache); LLMCache.for_workspace(root) gives the default
        refresh=False,         # True = ignore cached results (still write new ones): the --no-cache option
        response_schema=None,  # JSON schema dict: structured output; the parsed JSON string goes to `parsed`
        validate=None,         # optional callable(content:str)->Any raising ValueError on bad output: retried, then an error row
        overrides=None,        # dict of per-stage sampling params (temperature, top_p, max_tokens, ...)
        progress=None,         # curate.progress.Advance callback
    )
    # -> pl.DataFrame, one row per request, same order, nothing dropped:
    #    request_id, candidate_index, content (answer, reasoning removed), reasoning, finish_reason,
    #    prompt_tokens, completion_tokens, status ('ok' | 'error'), error, parsed, cached, latency_s, cost_usd

    usage_summary(results, stage, prices) -> dict   # tokens and cost for a stage report
"""
