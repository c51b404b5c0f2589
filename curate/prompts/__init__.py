"""Prompt templates: Jinja2 files in curate/prompts/, or any template file named by path in a config."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from curate.errors import ConfigError
from curate.identity import stamp

PROMPTS_DIR = Path(__file__).resolve().parent


def template_path(name: str) -> Path:
    """The file a template setting names: a path, else a bundled template by file name (`translate.j2`)."""
    path = Path(name)
    if not path.is_file():
        path = PROMPTS_DIR / name
    if not path.is_file():
        raise ConfigError(f"{name}: prompt template not found (looked in {PROMPTS_DIR} and as a path)")
    return path


@functools.lru_cache(maxsize=32)
def _compile(path: str, mtime_ns: int, size: int) -> jinja2.Template:
    # Keyed by modification time and size too: an edited template is recompiled, also in a
    # long-running `curate serve`.
    # StrictUndefined: a misspelt variable is an error, not a silently empty prompt.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    try:
        return env.from_string(Path(path).read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from exc


def load_prompt(name: str) -> jinja2.Template:
    """A bundled template by file name (`translate.j2`) or a user template by path."""
    return _compile(*stamp(template_path(name)))


def render_prompt(name: str, **variables: object) -> str:
    try:
        return load_prompt(name).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{name}: {exc.message}") from exc
