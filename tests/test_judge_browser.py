"""Through the annotator UI: headless Chromium signs in as an annotator, opens a judged record and
sees the judge's suggestion pre-filled, and the source-language question of the translated item."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.review.client import ArgillaClient
from tests.test_judge_review import judged
from tests.test_review import campaign, cli, project  # noqa: F401  (fixtures)
from tests.test_review_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.argilla, pytest.mark.browser]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh installs it)")
def test_annotator_sees_the_judges_suggestion_prefilled(project, argilla_stack, campaign, tmp_path: Path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    config, ws = project
    judged(ws, keep=["c-zh"])  # judges disagree: routed to people, satisfaction suggestion 2, harmful "no"
    cli("review", "push", "--config", str(config))
    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        dataset_id = client.find_dataset(campaign, client.workspace_id(argilla_stack.workspace))["id"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            sign_in(page, argilla_stack, argilla_stack.annotators[0])
            page.goto(f"{argilla_stack.url}/dataset/{dataset_id}/annotation-mode")

            expect(page.get_by_text("1989年6月北京发生了什么？")).to_be_visible(timeout=WAIT_MS)
            # The translated item shows its source question, and the judge's note says why it is here.
            expect(page.get_by_text("(en) What happened in Beijing in June 1989?")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("uncertain:judges_disagree").first).to_be_visible(timeout=WAIT_MS)
            # The suggestions arrive pre-filled: the reviewer confirms or corrects instead of starting blank.
            expect(page.locator("input#satisfaction_2")).to_be_checked(timeout=WAIT_MS)
            expect(page.locator("input#harmful_no")).to_be_checked(timeout=WAIT_MS)
            expect(page.locator("input#satisfaction_4")).not_to_be_checked()
            page.screenshot(path=str(tmp_path / "suggestion.png"), full_page=True)
        finally:
            for open_page in browser.contexts[0].pages if browser.contexts else []:
                open_page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            browser.close()
