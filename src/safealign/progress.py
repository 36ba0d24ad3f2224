"""Progress bars and status lines (rich). On a terminal a live bar; elsewhere (a stage's log file, a pipe) rich draws
a bar only when it ends, so each task also writes a plain line at most every ``LOG_EVERY`` seconds: a long run
under ``nohup`` or in ``safealign run``'s logs/ shows how far it is."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
LOG_EVERY = 60.0  # seconds between two plain progress lines of one task when stderr is not a terminal


class _Progress(Progress):
    """rich's ``Progress`` that, off a terminal, writes "<task>: <done>/<total> (<elapsed>)" per task at most every
    ``LOG_EVERY`` seconds (the first one interval after the task's first update)."""

    def __init__(self, *columns, **kw) -> None:
        super().__init__(*columns, **kw)
        self._logged: dict = {}  # task id -> when its last line was written (first: when it was first updated)

    def update(self, task_id, **kw) -> None:
        super().update(task_id, **kw)
        self._log_line(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log_line(task_id)

    def _log_line(self, task_id) -> None:
        if self.disable or self.console.is_terminal:
            return
        now = time.monotonic()
        if now - self._logged.setdefault(task_id, now) < LOG_EVERY:
            return
        self._logged[task_id] = now
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            total = f"/{int(task.total)}" if task.total is not None else ""
            elapsed = int(task.elapsed or 0)
            line = f"{task.description}: {int(task.completed)}{total} ({elapsed // 60}:{elapsed % 60:02d})"
        print(line, file=sys.stderr, flush=True)


def progress_bar(**kw) -> Progress:
    """A progress bar on stderr: ``with progress_bar() as p: t = p.add_task("gen", total=n); p.advance(t)``."""
    return _Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
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
