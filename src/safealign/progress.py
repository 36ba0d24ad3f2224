"""Progress bars and status lines (rich), quiet when not on a terminal unless asked."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def progress_bar(**kw) -> Progress:
    """A progress bar on stderr: ``with progress_bar() as p: t = p.add_task("gen", total=n); p.advance(t)``."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    disable=kw.pop("disable", False), **kw)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        print(message, file=sys.stderr, flush=True)
        yield


def log(message: str) -> None:
    console.print(message, highlight=False)
