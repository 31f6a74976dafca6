"""Long steps (image builds) shown calmly: one line a step with progress and elapsed time.

The raw output of every step goes to a log file in the state dir; the terminal shows
one line per step (a live rich line on a terminal, a plain line when piped). On
failure the failing step's last lines and the log's path are shown; `verbose` shows
the raw output live instead.
"""

from __future__ import annotations

import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mlflow_lab.core.docker import ANSI_ESCAPE

TAIL_LINES = 15
# Classic builder: "Step 3/15 : RUN ..."; BuildKit: "#7 [build 3/7] RUN ...".
_CLASSIC_STEP = re.compile(r"^Step (\d+)/(\d+) :")
_BUILDKIT_STEP = re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\]")


def build_step(line: str) -> tuple[int, int] | None:
    """(done, total) when a build output line starts a Dockerfile step."""
    match = _CLASSIC_STEP.match(line) or _BUILDKIT_STEP.match(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class Step:
    """One running step: feed it output lines; it logs them and moves the progress."""

    title: str
    log: IO[str]
    on_progress: Callable[[int, int], None]
    echo: bool
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def line(self, text: str) -> None:
        self.log.write(text + "\n")
        plain = ANSI_ESCAPE.sub("", text)
        if plain.strip():
            self.tail.append(plain)
        if self.echo:
            print(text, flush=True)
        found = build_step(text)
        if found:
            self.on_progress(*found)

    def last_lines(self) -> list[str]:
        return list(self.tail)


@dataclass
class Steps:
    """A run of steps sharing one log file."""

    log_path: Path
    verbose: bool = False
    # soft_wrap: a long line (a log path, a build error) stays one line to copy, piped or not.
    console: Console = field(
        default_factory=lambda: Console(file=sys.stdout, highlight=False, soft_wrap=True)
    )

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        """A step: its line shows while it runs; on any exception its last lines and
        the log's path are printed, then the exception goes on."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n===== {title} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            live = self.console.is_terminal and not self.verbose
            progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                disable=not live,
            )
            task = progress.add_task(title, total=None)

            def moved(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            step = Step(title, log, moved, echo=self.verbose)
            try:
                with progress:
                    yield step
            except BaseException:
                elapsed = time.monotonic() - started
                self.console.print(f"✗ {title}: failed after {elapsed:.0f} s", markup=False)
                if not self.verbose:
                    for text in step.last_lines():
                        self.console.print(f"    {text}", markup=False)
                self.console.print(f"  full log: {self.log_path}", markup=False)
                raise
            elapsed = time.monotonic() - started
            self.console.print(f"✓ {title} ({elapsed:.0f} s)", markup=False)
