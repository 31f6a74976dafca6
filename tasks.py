"""mlflow-lab: an MLflow Tracking lab (MLflow + JupyterLab) on this machine.

Start with `invoke up`; `invoke --help TASK` explains each task.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from mlflow_lab import images, settings, stack
from mlflow_lab import lock as lock_module
from mlflow_lab.compose import Compose
from mlflow_lab.errors import LabError

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(func: F) -> F:
    """A LabError becomes one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LabError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


@task(help={"service": "Build only this image: mlflow or jupyter (default: both)."})
@_one_line_errors
def build(c: Context, service: str = "") -> None:
    """Build the lab's images (and a local base image when no registry is reachable)."""
    if service and service not in ("mlflow", "jupyter"):
        raise LabError(f"no image named {service!r}: use mlflow or jupyter")
    images.build(c, settings.load(), [service] if service else None)


@task(help={"no_build": "Fail instead of building when an image is missing or out of date."})
@_one_line_errors
def up(c: Context, no_build: bool = False) -> None:
    """Start the lab (building what is missing), wait until it is ready, print the URLs."""
    stack.up(c, settings.load(), build=not no_build)


@task
@_one_line_errors
def down(c: Context) -> None:
    """Stop the lab; every run, artifact and notebook is kept."""
    stack.down(c, settings.load())


@task(help={"yes": "Do not ask for confirmation."})
@_one_line_errors
def destroy(c: Context, yes: bool = False) -> None:
    """Delete the lab's containers and volumes (all runs and notebooks); asks first."""
    stack.destroy(c, settings.load(), yes=yes)


@task(help={"json": "Print JSON (URLs, state, health, token) for scripts."})
@_one_line_errors
def status(c: Context, json_: bool = False) -> None:
    """Show each service's URL, state and health, and the Jupyter token."""
    report = stack.status(c, settings.load())
    print(json.dumps(report, indent=2) if json_ else stack.format_status(report))


@task(
    help={
        "service": "mlflow or jupyter (default: both).",
        "follow": "Keep printing new lines until Ctrl+C.",
        "tail": "How many past lines to show per service.",
    },
    positional=["service"],
)
@_one_line_errors
def logs(c: Context, service: str = "", follow: bool = False, tail: int = 200) -> None:
    """Show the services' logs."""
    stack.logs(c, settings.load(), service or None, follow, tail)


@task
@_one_line_errors
def clone(c: Context) -> None:
    """Place the course repo (LAB_REPO_URL, LAB_REPO_BRANCH) and the bundled lab in the workspace.

    Student work is never lost: their edits win, deleted files come back, and a
    diverged copy is backed up before it is replaced.
    """
    lab = settings.load()
    compose = Compose(c, lab)
    if compose.services().get("jupyter", {}).get("state") != "running":
        raise LabError("the lab is not running: start it with `invoke up`")
    stack.place_material(compose, lab, first_start_only=False)


@task
@_one_line_errors
def lock(c: Context) -> None:
    """Re-resolve docker/constraints.txt (exact versions of both images) after a change."""
    lock_module.lock(c, settings.load())


@task(
    help={
        "unit": "Only the fast tests that need no Docker.",
        "k": "Only tests whose name matches this pytest -k expression.",
    }
)
def test(c: Context, unit: bool = False, k: str = "") -> None:
    """Run the linters, the type checks and the tests (end-to-end ones need Docker)."""
    # Through this interpreter, so the venv's tools run even when it is not activated.
    python = shlex.quote(sys.executable)
    c.run(f"{python} -m ruff check .", echo=True)
    c.run(f"{python} -m ruff format --check .", echo=True)
    c.run(f"{python} -m mypy", echo=True)
    selection = " -m 'not e2e'" if unit else ""
    if k:
        selection += f" -k {k!r}"
    c.run(f"{python} -m pytest{selection}", echo=True)
