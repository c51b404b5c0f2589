"""The chat request curate puts on the wire is the one the SDK's `chat.completions.create` sends,
and the reply is read the same way (curate.llm.wire). Requests are seen on the server side by the
fault injector (tests/fault_server.py, a stand-in that records request bodies; never a model)."""

from __future__ import annotations

import asyncio
import json

import openai
import polars as pl
import pytest

from curate.llm import complete_frame
from curate.llm.wire import MalformedResponse, read_reply
from tests import test_llm_budget
from tests.test_llm_budget import endpoint

faults = test_llm_budget.faults  # the fault injector fixture, shared with the budget tests

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}}, "required": ["verdict"]}


def sdk_body(base_url: str, key: str, **create) -> None:
    async def send() -> None:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
            await client.chat.completions.create(**create)

    asyncio.run(send())


@pytest.mark.parametrize("schema", [None, SCHEMA])
def test_the_body_and_key_sent_are_those_of_the_sdks_create(faults, monkeypatch, schema):
    monkeypatch.setenv("WIRE_TEST_KEY", "sk-wire-test")
    faults.config.reply = '{"verdict": "fine"}'
    ep = endpoint(faults, api_key_env="WIRE_TEST_KEY", structured_output="json_schema" if schema else "auto")
    overrides = {"seed": 7, "stop": ["\n\n"], "top_k": 20, "chat_template_kwargs": {"enable_thinking": False},
                 "fold_system_prompt": False}
    messages = [{"role": "system", "content": "Be brief. «ünïcode» 中文"}, {"role": "user", "content": "Say fine."}]
    out = complete_frame(pl.DataFrame({"request_id": ["w"], "candidate_index": [1], "messages": [messages]}), ep,
                         overrides=overrides, response_schema=schema)
    assert out["status"].to_list() == ["ok"], out["error"].to_list()
    ours, our_auth = json.loads(faults.bodies[-1]), faults.last_authorization

    sdk = {"seed": 8, "stop": ["\n\n"], "temperature": ep.temperature, "top_p": ep.top_p, "max_tokens": ep.max_tokens}
    if schema:
        sdk["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    sdk_body(faults.base_url, "sk-wire-test", model=ep.model, messages=messages,
             extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}, **sdk)
    assert ours == json.loads(faults.bodies[-1])  # same keys and values (candidate 1: seed + 1)
    assert our_auth == faults.last_authorization == "Bearer sk-wire-test"


def test_a_reply_is_read_as_the_sdk_reads_it():
    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "finish_reason": "length",
                          "message": {"role": "assistant", "content": "answer", "reasoning_content": "thoughts"}}],
             "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}}
    assert read_reply(json.dumps(reply).encode()) == {
        "content": "answer", "reasoning_field": "thoughts", "finish_reason": "length", "prompt_tokens": 11,
        "completion_tokens": 22}
    # vLLM's newer field name, no usage, a null content: all tolerated.
    reply["choices"][0]["message"] = {"role": "assistant", "content": None, "reasoning": "only thinking"}
    del reply["usage"]
    assert read_reply(json.dumps(reply).encode()) == {
        "content": None, "reasoning_field": "only thinking", "finish_reason": "length", "prompt_tokens": None,
        "completion_tokens": None}


@pytest.mark.parametrize("raw", [b"<html>\x00\xff not json", b'{"choices": [ {"message": ', b"[1, 2]", b'"text"',
                                 b'{"choices": []}', b'{"error": {"message": "x"}}', b'{"choices": [{"message": null}]}'])
def test_what_is_not_a_chat_completion_is_malformed(raw):
    with pytest.raises(MalformedResponse):
        read_reply(raw)
