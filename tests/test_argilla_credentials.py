"""Local Argilla stack credentials: random on first start, kept in the stack's own folder (mode
600), overridable by environment, under their own variable names, and never on a command line."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.fixtures.argilla_stack import LEGACY, SCRIPT, read_credentials, second_stack_home

SECRETS = ("CURATE_ARGILLA_OWNER_API_KEY", "CURATE_ARGILLA_OWNER_PASSWORD", "CURATE_ARGILLA_ANNOTATOR_PASSWORD")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE_ARGILLA") and k != "ARGILLA_API_KEY"}
    return env | {"CURATE_HOME": str(home)} | extra


def credentials(home: Path, **extra: str) -> dict[str, str]:
    proc = subprocess.run(["bash", str(SCRIPT), "credentials"], capture_output=True, text=True,
                          env=_env(home, **extra), timeout=60)
    assert proc.returncode == 0, proc.stderr
    pairs = [shlex.split(line)[1].split("=", 1) for line in proc.stdout.splitlines()]
    return dict(pairs)


def test_first_use_generates_random_credentials_kept_in_the_stack_folder(tmp_path: Path) -> None:
    first = credentials(tmp_path / "a")
    file = tmp_path / "a" / "argilla" / "credentials.env"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    for name in SECRETS:
        assert len(first[name]) == 32 and first[name] != LEGACY[name]
    assert read_credentials(file) | {"CURATE_ARGILLA_WORKSPACE": "curate"} == first  # what the fixture reads
    assert credentials(tmp_path / "a") == first  # kept, not regenerated
    assert credentials(tmp_path / "b")["CURATE_ARGILLA_OWNER_API_KEY"] != first["CURATE_ARGILLA_OWNER_API_KEY"]
    # A value the user sets wins, and a production ARGILLA_API_KEY is not the local owner's key.
    chosen = credentials(tmp_path / "a", CURATE_ARGILLA_OWNER_PASSWORD="chosen-password", ARGILLA_API_KEY="prod-key-1")
    assert chosen["CURATE_ARGILLA_OWNER_PASSWORD"] == "chosen-password"
    assert chosen["CURATE_ARGILLA_OWNER_API_KEY"] == first["CURATE_ARGILLA_OWNER_API_KEY"]


@pytest.mark.slow
@pytest.mark.argilla
@pytest.mark.xdist_group("private-argilla-stacks")  # no shared stack: see tests/fixtures/session_services.py
def test_a_fresh_stack_uses_its_generated_credentials_and_never_shows_them_in_ps(tmp_path: Path) -> None:
    home, ports = second_stack_home(tmp_path)
    env = _env(home, **ports)
    seen: list[str] = []
    done = threading.Event()

    def watch_command_lines() -> None:
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen.append(cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
                except OSError:
                    pass

    watcher = threading.Thread(target=watch_command_lines, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=400)
        done.set()
        watcher.join()
        assert proc.returncode == 0, proc.stderr[-3000:]
        creds = read_credentials(home / "argilla" / "credentials.env")
        url = f"http://127.0.0.1:{ports['CURATE_ARGILLA_PORT']}"
        me = httpx.get(f"{url}/api/v1/me", headers={"X-Argilla-Api-Key": creds["CURATE_ARGILLA_OWNER_API_KEY"]}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "owner"
        legacy = httpx.get(f"{url}/api/v1/me", headers={"X-Argilla-Api-Key": LEGACY["CURATE_ARGILLA_OWNER_API_KEY"]}, timeout=10)
        assert legacy.status_code == 401
        signin = httpx.post(f"{url}/api/v1/token", data={"username": "annotator1",
                            "password": creds["CURATE_ARGILLA_ANNOTATOR_PASSWORD"]}, timeout=10)
        assert signin.status_code == 201, signin.text  # Argilla answers a new token with 201
        assert seen and not [line for line in seen for name in SECRETS if creds[name] in line]
    finally:
        done.set()
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, env=env, timeout=120)
