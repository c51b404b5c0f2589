"""Local Argilla stack credentials: random on first start, kept in the stack's own folder (mode
600), overridable by environment, under their own variable names, and never on a command line; and
two starts of a fresh stack at once."""

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
def test_two_concurrent_starts_of_a_fresh_stack_leave_one_healthy_stack_on_credentials_never_shown_in_ps(
        tmp_path: Path) -> None:
    """One fresh private stack for two checks, since each costs a minute or more of start-up: two starts at
    once (one starts the stack, the other waits for it and reuses it; both race to create the credentials),
    and the generated credentials (the server takes them, the legacy ones fail, no command line shows them)."""
    home, ports = second_stack_home(tmp_path)
    env = _env(home, **ports)
    run = home / "run"
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
        starts = [subprocess.Popen(["bash", str(SCRIPT), "start"], env=env, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
        errors = [p.communicate(timeout=600)[1] for p in starts]
        done.set()
        watcher.join()
        assert [p.returncode for p in starts] == [0, 0], "\n---\n".join(e[-2000:] for e in errors)
        assert sorted("already running" in e for e in errors) == [False, True]  # one started, one reused it
        assert not any("start failed" in e for e in errors)
        pids = {name: int((run / f"{name}.pid").read_text()) for name in ("redis", "osmem", "server", "worker")}
        for name, pid in pids.items():
            assert Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) is not running"
        status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, env=env, timeout=120)
        assert status.returncode == 0 and f"healthy at http://127.0.0.1:{ports['CURATE_ARGILLA_PORT']}" in status.stdout

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
        stop = subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, env=env, timeout=300)
    assert stop.returncode == 0, stop.stderr
    assert not list(run.glob("*.pid"))
