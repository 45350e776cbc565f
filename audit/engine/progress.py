"""Progress on stderr: a rich bar on a terminal, plain lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Progress:
    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.fancy = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = None

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message)
        else:
            print(f"explain-audit: {message}", file=self.stream, flush=True)

    @contextmanager
    def task(self, description: str, total: int):
        """Yield a function to call once per finished step."""
        if self.fancy:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=Console(file=self.stream),
                              transient=False) as bar:
                self._bar = bar
                task_id = bar.add_task(description, total=total)
                try:
                    yield lambda: bar.advance(task_id)
                finally:
                    self._bar = None
            return
        started = time.perf_counter()
        done = [0]

        def step() -> None:
            done[0] += 1
            if not self.quiet:
                print(f"explain-audit: {description}: {done[0]}/{total} "
                      f"({time.perf_counter() - started:.1f}s)", file=self.stream, flush=True)

        yield step
