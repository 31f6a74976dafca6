"""The build display: one line a step, the failing step's tail, the log file."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from mlflow_lab.core import progress
from mlflow_lab.core.progress import Steps, build_step


def piped() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, highlight=False, soft_wrap=True), out


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("Step 3/15 : RUN pip install -r requirements.txt", (3, 15)),
        ("#7 [build 3/7] RUN python3 -m venv /opt/venv", (3, 7)),
        ("#12 [2/4] COPY docker/mlflow /opt/lab", (2, 4)),
        ("#9 [lab-final 11/12] USER student", (11, 12)),
        ("#7 [internal] load build definition from Dockerfile", None),
        ("#7 0.512 Collecting mlflow==3.1.0", None),
        ("Successfully built 0123abcd", None),
        (" Step 3/15 : indented is not a step line", None),
    ],
)
def test_step_lines_of_both_builders_are_recognised(
    line: str, step: tuple[int, int] | None
) -> None:
    assert build_step(line) == step


def test_each_step_is_one_line_with_a_tick_and_its_time(tmp_path: Path) -> None:
    console, out = piped()
    steps = Steps(tmp_path / "state" / "build.log", console=console)
    with steps.step("The mlflow image") as step:
        step.line("Step 1/2 : FROM python:3.11-slim")
        step.line("Step 2/2 : RUN pip install mlflow")
    with steps.step("The jupyter image"):
        pass
    assert out.getvalue().splitlines() == [
        "✓ The mlflow image (0 s)",
        "✓ The jupyter image (0 s)",
    ], "the raw output stays out of the terminal"


def test_the_elapsed_time_is_the_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 163.4])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    console, out = piped()
    with Steps(tmp_path / "build.log", console=console).step("Base image"):
        pass
    assert out.getvalue() == "✓ Base image (63 s)\n"


def test_the_log_file_gets_every_line_of_every_step(tmp_path: Path) -> None:
    log = tmp_path / "state" / "build.log"
    console, _ = piped()
    steps = Steps(log, console=console)
    with steps.step("first") as step:
        step.line("one")
        step.line("")
        step.line("\x1b[1mtwo\x1b[0m")
    with steps.step("second") as step:
        step.line("three")
    text = log.read_text(encoding="utf-8")
    assert re.search(r"^===== first \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)$", text, re.M)
    body = [line for line in text.splitlines() if not line.startswith("=====")]
    assert body == ["", "one", "", "\x1b[1mtwo\x1b[0m", "", "three"], "raw, as the build said it"
    with Steps(log, console=console).step("third"):
        pass
    assert text in log.read_text(encoding="utf-8"), "a later run appends"


def test_a_failed_step_shows_its_last_lines_and_the_log_and_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "a folder with a rather long name to make the path long" / "build.log"
    console, out = piped()
    steps = Steps(log, console=console)
    with pytest.raises(RuntimeError, match="the build failed"), steps.step("The mlflow image") as s:
        for n in range(progress.TAIL_LINES + 5):
            s.line(f"line {n}")
        s.line("   ")
        s.line("\x1b[31mERROR: process did not complete successfully: exit code: 1\x1b[0m")
        raise RuntimeError("the build failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "✗ The mlflow image: failed after 0 s"
    shown = lines[1:-1]
    assert len(shown) == progress.TAIL_LINES
    assert shown[0] == "    line 6", "the last lines only, blank ones left out"
    assert shown[-1] == "    ERROR: process did not complete successfully: exit code: 1"
    assert lines[-1] == f"  full log: {log}", "the path on one line, to copy"
    assert "line 0" in log.read_text(encoding="utf-8")


def test_an_interrupt_is_reported_and_goes_on_too(tmp_path: Path) -> None:
    console, out = piped()
    with pytest.raises(KeyboardInterrupt), Steps(tmp_path / "b.log", console=console).step("x"):
        raise KeyboardInterrupt
    assert out.getvalue().startswith("✗ x: failed after 0 s\n")


def test_verbose_echoes_the_raw_lines_as_they_come(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console, out = piped()
    steps = Steps(tmp_path / "build.log", verbose=True, console=console)
    with steps.step("The mlflow image") as step:
        step.line("Step 1/1 : FROM x")
        step.line("\x1b[32mdone\x1b[0m")
    assert capsys.readouterr().out == "Step 1/1 : FROM x\n\x1b[32mdone\x1b[0m\n"
    assert out.getvalue() == "✓ The mlflow image (0 s)\n"
    with pytest.raises(ValueError), steps.step("again") as step:
        step.line("the error")
        raise ValueError
    assert "    the error" not in out.getvalue(), "already on screen: not shown twice"
    assert out.getvalue().endswith(f"  full log: {tmp_path / 'build.log'}\n")


def test_progress_moves_with_the_step_lines(tmp_path: Path) -> None:
    moved: list[tuple[int, int]] = []
    console, _ = piped()
    with Steps(tmp_path / "b.log", console=console).step("x") as step:
        step.on_progress = lambda done, total: moved.append((done, total))
        for line in ("#5 [build 1/3] FROM x", "#5 DONE 0.1s", "#6 [build 2/3] RUN y", "Step 3/3 :"):
            step.line(line)
    assert moved == [(1, 3), (2, 3), (3, 3)]


def test_the_default_console_keeps_long_lines_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / ("x" * 120) / "build.log"
    with pytest.raises(OSError), Steps(log).step("y" * 90) as step:
        step.line("z" * 150)
        raise OSError
    out = capsys.readouterr().out.splitlines()
    assert out == [f"✗ {'y' * 90}: failed after 0 s", f"    {'z' * 150}", f"  full log: {log}"]
