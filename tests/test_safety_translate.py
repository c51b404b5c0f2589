"""Optional translation of safety prompts: off by default (no LLM call), and with languages set,
each turn translated through the real local server with subset, category and expectation kept."""

from __future__ import annotations

import polars as pl
import pytest

from curate.llm import LLMCache
from curate.stages.safety_prompts import SafetyPromptsConfig, SafetySource, safety_prompts_stage
from curate.stages.safety_translate import STAGE, SafetyTranslateConfig, safety_translate_stage
from tests.test_safety_prompts import COCONOT_CONTRAST


def prompts() -> pl.DataFrame:
    return safety_prompts_stage(SafetyPromptsConfig(sources=[COCONOT_CONTRAST.model_copy(update={"limit": 1})]))["prompts"]


def test_translation_is_off_by_default_and_passes_prompts_through():
    config = SafetyTranslateConfig()
    assert not STAGE.calls_llm(config)
    out = safety_translate_stage(prompts(), config, cache=None).tables["prompts"]
    assert out.drop("status", "error").equals(prompts())
    assert out["status"].to_list() == ["ok"]


def test_unknown_language_codes_are_config_errors():
    with pytest.raises(ValueError):
        SafetyTranslateConfig(languages=["klingon"])


@pytest.mark.slow
@pytest.mark.llm
def test_translation_with_languages_keeps_lineage_and_the_source(llm_server, tmp_path):
    source = SafetySource(name="s", path=COCONOT_CONTRAST.path, expect="benign", limit=1)
    original = safety_prompts_stage(SafetyPromptsConfig(sources=[source]))["prompts"]
    config = SafetyTranslateConfig(languages=["fr"], translator=llm_server.endpoint.model_copy(update={"max_tokens": 48}))
    out = safety_translate_stage(original, config, cache=LLMCache(tmp_path / "c.sqlite")).tables["prompts"]
    assert out.height == 2 and sorted(out["language"]) == ["en", "fr"]
    fr = out.filter(pl.col("language") == "fr").row(0, named=True)
    assert fr["subset"] == "s" and fr["expected"] == "benign" and fr["category"] == original["category"][0]
    assert fr["prompt_id"] != original["prompt_id"][0]
    # A translation or an error row, never a silent drop.
    assert (fr["status"] == "ok" and fr["prompt"] == fr["messages"][-1]["content"]) or fr["error"]
