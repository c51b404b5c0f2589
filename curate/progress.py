"""Rich progress bars for long work. Stages take an optional `progress` callback so they stay
plain functions; the CLI and flows pass one in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Advance = Callable[[int], None]
console = Console(stderr=True)


def noop(_: int = 1) -> None:
    return None


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Advance]:
    if not enabled:
        yield noop
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
