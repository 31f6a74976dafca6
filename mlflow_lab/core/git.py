"""The one way the host runs git: argv only, never a prompt, always bounded in time."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

TIMEOUT_S = 300.0


def run(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """`git ARGS`, output captured, not checked (FileNotFoundError without git)."""
    # A credential prompt would hang a task that nobody is watching.
    full_env = {**(os.environ if env is None else env), "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = TIMEOUT_S,
) -> str:
    """`git ARGS`'s output; CalledProcessError when it fails."""
    result = run(*args, cwd=cwd, env=env, input=input, timeout=timeout)
    result.check_returncode()
    return result.stdout.strip()


def reason(result: subprocess.CompletedProcess[str]) -> str:
    """The line of git's errors that says why (its `fatal:` line when there is one)."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("fatal:")]
    return (fatal or lines or [f"git exit code {result.returncode}"])[-1].removeprefix("fatal: ")
