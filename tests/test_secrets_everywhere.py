"""A key in a variable with an unusual name, named by a config's `*_env`, is masked in every output;
and importing curate turns Prefect's analytics off unless the user chose otherwise."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.secrets import redact
from tests.test_release_helpers import make_workspace

KEY = "pk-live-7f3a9c2e5b1d4f6a8c0e2b4d6f8a0c1e"  # planted; not a real key
REPO = Path(__file__).resolve().parents[1]


def test_unusually_named_key_is_masked_in_logs_manifests_and_exports(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("MY_PROVIDER_KEY", KEY)
    monkeypatch.setenv("HUB_UPLOAD_CREDENTIAL", KEY[::-1])
    config = make_workspace(tmp_path)
    config.write_text(
        config.read_text() + 'hf_token_env = "HUB_UPLOAD_CREDENTIAL"\n\n[llm]\napi_key_env = "MY_PROVIDER_KEY"\n',
        encoding="utf-8",
    )
    load_config(config)
    assert redact(f"x {KEY} y {KEY[::-1]}") == "x *** y ***"

    with caplog.at_level(logging.INFO):
        logging.getLogger("curate.test").info("calling the provider with %s", KEY)
    runner = CliRunner()
    result = runner.invoke(app, ["release", "create", "-c", str(config), "--notes", f"key was {KEY}"])
    assert result.exit_code == 0, (result.output, result.exception)
    result = runner.invoke(app, ["export", "hf", str(tmp_path / "hf"), "-c", str(config), "--include-test"])
    assert result.exit_code == 0, (result.output, result.exception)
    result = runner.invoke(app, ["versions", "show", "latest", "-c", str(config), "--json"])
    assert json.loads(result.stdout)["notes"] == "key was ***"

    outputs = [caplog.text, result.output]
    outputs += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert all(KEY not in text for text in outputs)


def _prefect_settings(env: dict[str, str]) -> tuple[str, str]:
    """Prefect's analytics switch and embedded-server start timeout, as a fresh `import curate` leaves them."""
    code = (
        "import curate\n"
        "from prefect.settings import get_current_settings\n"
        "server = get_current_settings().server\n"
        "print(server.analytics_enabled, server.ephemeral.startup_timeout_seconds)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    analytics, timeout = proc.stdout.split()
    return analytics, timeout


@pytest.mark.slow
def test_importing_curate_sets_prefect_defaults_unless_set() -> None:
    """Analytics off; the embedded server (`curate run` without PREFECT_API_URL) gets 300 s to
    start, not Prefect's 20 s, which a busy 2-core machine exceeds. The user's own values win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    assert _prefect_settings(env) == ("False", "300")
    chosen = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45"}
    assert _prefect_settings(env | chosen) == ("True", "45")
