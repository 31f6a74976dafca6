"""mlflow-lab: an MLflow Tracking lab (MLflow + JupyterLab) on this machine.

Start with `invoke up`; `invoke --help TASK` explains each task.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import backup as lab_backup
from mlflow_lab.lab import bundle as bundle_module
from mlflow_lab.lab import datasets as datasets_module
from mlflow_lab.lab import doctor as doctor_module
from mlflow_lab.lab import images, stack
from mlflow_lab.lab import lock as lock_module
from mlflow_lab.lab import screenshots as screenshots_module
from mlflow_lab.lab import verify as verify_module
from mlflow_lab.lab.compose import Compose

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
    stack.place_material(compose, lab)


@task
@_one_line_errors
def datasets(c: Context) -> None:
    """Fetch the datasets notebooks download at run time (LAB_DATASETS_FILE), for offline use.

    Also done by `invoke build` and `invoke bundle`; a running lab gets them at once.
    """
    lab = settings.load()
    compose = Compose(c, lab)
    image = compose.image("jupyter")
    if images.image_id(image) is None:
        raise LabError(f"the image {image} is missing: run `invoke build` first")
    for line in datasets_module.fetch(lab, image):
        print(line)
    datasets_module.sync_running(lab, compose.container_ids().get("jupyter"))
    print(f"Datasets: {datasets_module.describe(lab)}")


@task(
    help={
        "rounds": "Rounds per measure; medians are reported (at least 3 for real figures).",
        "smoke": "A light load (5 clients) for a quick check, e.g. in CI.",
        "cold": "Also time a cold build from nothing (no images, no cache): ~5 minutes.",
    }
)
@_one_line_errors
def bench(c: Context, rounds: int = 3, smoke: bool = False, cold: bool = False) -> None:
    """Benchmark the lab against a bare `mlflow server`; prints a table of figures and ratios."""
    from mlflow_lab.lab import bench as bench_module

    print(bench_module.run(c, settings.load(), rounds=rounds, smoke=smoke, cold=cold))


@task
@_one_line_errors
def lock(c: Context) -> None:
    """Re-resolve docker/constraints.txt (exact versions of both images) after a change."""
    lock_module.lock(c, settings.load())


@task(help={"json": "Print the results as JSON for scripts."})
@_one_line_errors
def verify(c: Context, json_: bool = False) -> None:
    """Check the running lab the way students use it (under 15 s); it leaves no trace.

    MLflow's API through the notebooks' address, a run with an artifact logged and read
    back, the UI, Jupyter and its kernel, the artifact store, the lab material, the
    ports. Exit code 0 only when every check passes.
    """
    verify_module.show(c, settings.load(), as_json=json_)


@task(help={"json": "Print the results as JSON for scripts."})
@_one_line_errors
def doctor(c: Context, json_: bool = False) -> None:
    """Check this machine's prerequisites (engine, compose, ports, disk, memory...).

    `invoke up` runs the same checks first. Exit code 0 only when every check passes.
    """
    doctor_module.show(doctor_module.run(settings.load()), as_json=json_, command="invoke doctor")


@task(help={"output": "The file to write, e.g. mlflow-lab.bundle (replaced when it exists)."})
@_one_line_errors
def bundle(c: Context, output: str) -> None:
    """Write one file with all `invoke up` needs offline: images, lab material, manifest.

    Builds the images first when they are out of date and fetches the course repo
    when the network allows. On each classroom machine: `invoke load FILE`, then `up`.
    """
    bundle_module.create(c, settings.load(), Path(output))


@task(help={"file": "The bundle written by `invoke bundle`."})
@_one_line_errors
def load(c: Context, file: str) -> None:
    """Check a bundle's every checksum, then load its images and course repo.

    A damaged bundle changes nothing. Afterwards `invoke up` needs no network and
    builds nothing.
    """
    bundle_module.load(settings.load(), Path(file))


@task(
    help={
        "out": "Folder for the PNGs (default: docs/, where the README shows them).",
        "run_lab": "When MLflow has no runs of the lab yet, run the bundled lab script first.",
    }
)
@_one_line_errors
def screenshots(c: Context, out: str = "", run_lab: bool = False) -> None:
    """Take screenshots of the running lab's two UIs (headless Chromium, dev requirements).

    The MLflow runs table, a run's metric chart and a PNG artifact, and JupyterLab with
    the lab notebook open. The student's JupyterLab layout is left as it was.
    """
    lab = settings.load()
    folder = Path(out) if out else screenshots_module.DOCS_DIR
    for path in screenshots_module.take(c, lab, folder, run_lab=run_lab):
        print(f"wrote {path}")


@task(help={"output": "The backup file to write (a .tar.gz); an existing file is replaced."})
@_one_line_errors
def backup(c: Context, output: str = "") -> None:
    """Snapshot the running lab's runs, artifacts and notebooks into one file."""
    if not output:
        raise LabError("say where the backup goes: `invoke backup --output FILE`")
    lab_backup.backup(c, settings.load(), Path(output))


@task(
    help={"file": "The backup file written by `invoke backup`.", "yes": "Do not ask first."},
    positional=["file"],
)
@_one_line_errors
def restore(c: Context, file: str, yes: bool = False) -> None:
    """Replace the lab's runs, artifacts and notebooks with a backup's; asks first."""
    lab_backup.restore(c, settings.load(), Path(file), yes=yes)


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
