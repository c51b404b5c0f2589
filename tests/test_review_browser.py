"""End to end through the annotator UI: headless Chromium (Debian's) signs in as an annotator,
opens the campaign's dataset, submits a review; then `curate review pull` reads it back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_review import campaign, cli, project, write_candidates  # noqa: F401  (fixtures)
from tests.test_review_units import candidates

pytestmark = [pytest.mark.slow, pytest.mark.argilla, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's assertions wait 5 s by default; a loaded 2-core machine needs longer.
WAIT_MS = 30_000
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def sign_in(page, stack, annotator: str) -> None:
    """Sign in through the login form, as a person would."""
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{stack.url}/sign-in")
    page.get_by_label("Username").fill(annotator)
    page.get_by_label("Password").fill(stack.annotator_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "sign-in" not in url)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/setup.sh installs it)")
def test_annotator_submits_in_the_browser_and_pull_reads_it(project, argilla_stack, campaign, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    config, ws = project
    write_candidates(ws, candidates(1, prompt=["What happened in Beijing in June 1989?"],
                                    answer=["Student-led protests were suppressed by the army on 4 June."]))
    cli("review", "push", "--config", str(config))
    # A first pull stores the state the next one is incremental against.
    assert "(full): 0 responses" in cli("review", "pull", "--config", str(config))
    annotator = argilla_stack.annotators[0]
    from curate.review.client import ArgillaClient

    with ArgillaClient(argilla_stack.url, argilla_stack.api_key) as client:
        dataset_id = client.find_dataset(campaign, client.workspace_id(argilla_stack.workspace))["id"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            sign_in(page, argilla_stack, annotator)

            # The annotator finds the dataset from the home page, as a person would.
            page.get_by_text(campaign).first.click()
            page.wait_for_url(f"**/dataset/{dataset_id}/annotation-mode**")
            expect(page.get_by_text("What happened in Beijing in June 1989?")).to_be_visible(timeout=WAIT_MS)

            page.locator("label[for='accept_accept']").click()
            page.locator("label[for='satisfaction_3']").click()
            page.locator("label[for='harmful_no']").click()
            comment = page.get_by_label("Question: comment").locator("[contenteditable='true']")
            comment.click()
            comment.type("checked in the browser")
            page.screenshot(path=str(tmp_path / "review-form.png"), full_page=True)
            submit = page.locator("button.button--submit")
            expect(submit).to_be_enabled(timeout=WAIT_MS)
            submit.click()
            # The only pending record is done: the queue is empty and no error toast appeared. Argilla
            # words an empty queue either way, depending on whether the dataset's distribution has
            # caught up with the submission yet.
            done = re.compile(r"The task is completed|no pending records to annotate")
            expect(page.get_by_text(done).first).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Submitted").first).to_be_visible(timeout=WAIT_MS)
            page.screenshot(path=str(tmp_path / "review-submitted.png"), full_page=True)
            expect(page.get_by_text("An error occurred")).to_have_count(0)
        finally:
            # What the annotator saw last, for diagnosing a failure (kept in the test's tmp dir).
            for open_page in browser.contexts[0].pages if browser.contexts else []:
                open_page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            browser.close()

    out = cli("review", "pull", "--config", str(config))
    # Found by an incremental pull: the UI's save does not touch the record's indexed updated_at.
    assert "(incremental): 1 responses, 1 new" in out
    row = ws.read("review/reviews").row(0, named=True)
    assert row["candidate_id"] == "cand-0" and row["annotator"] == annotator
    assert (row["accept"], row["satisfaction"], row["harmful"], row["status"]) == (True, 3, False, "submitted")
    assert row["comment"] == "checked in the browser"
    decision = ws.read("review/decisions").row(0, named=True)
    assert decision["decision"] == "accepted"
