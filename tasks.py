"""mlflow-lab: an MLflow Tracking lab (MLflow + JupyterLab) on this machine.

Start with `invoke up`; `invoke --help TASK` explains each task.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from mlflow_lab.classroom import tasks as classroom_tasks
from mlflow_lab.core import docker, settings
from mlflow_lab.core.errors import LabError, one_line_errors
from mlflow_lab.lab import backup as lab_backup
from mlflow_lab.lab import bundle as bundle_module
from mlflow_lab.lab import datasets as datasets_module
from mlflow_lab.lab import doctor as doctor_module
from mlflow_lab.lab import images, stack
from mlflow_lab.lab import lock as lock_module
from mlflow_lab.lab import screenshots as screenshots_module
from mlflow_lab.lab import verify as verify_module
from mlflow_lab.lab.compose import JUPYTER, SERVICES, LabCompose

# One line, exit code 1, no traceback: shared with the classroom's tasks.
_one_line_errors = one_line_errors


VERBOSE_HELP = "Show the raw build log as it comes (it is always kept in the state dir)."


@task(
    help={
        "service": f"Build only this image: {' or '.join(SERVICES)} (default: all).",
        "verbose": VERBOSE_HELP,
    }
)
@_one_line_errors
def build(c: Context, service: str = "", verbose: bool = False) -> None:
    """Build the lab's images (and a local base image when no registry is reachable)."""
    if service and service not in SERVICES:
        raise LabError(f"no image named {service!r}: use {' or '.join(SERVICES)}")
    images.build(settings.load(), [service] if service else None, verbose=verbose)


@task(
    help={
        "no_build": "Fail instead of building when an image is missing or out of date.",
        "verbose": VERBOSE_HELP,
    }
)
@_one_line_errors
def up(c: Context, no_build: bool = False, verbose: bool = False) -> None:
    """Start the lab (building what is missing), wait until it is ready, print the URLs.

    Exit code 0 once both services answer, also when lab material could not be placed:
    a `warning:` line names it, and `invoke clone` places it later.
    """
    stack.up(settings.load(), build=not no_build, verbose=verbose)


@task
@_one_line_errors
def down(c: Context) -> None:
    """Stop the lab; every run, artifact and notebook is kept."""
    stack.down(settings.load())


@task(help={"yes": "Do not ask for confirmation."})
@_one_line_errors
def destroy(c: Context, yes: bool = False) -> None:
    """Delete the lab's containers and volumes (all runs and notebooks); asks first."""
    stack.destroy(settings.load(), yes=yes)


@task(help={"json": "Print JSON (URLs, state, health, token) for scripts."})
@_one_line_errors
def status(c: Context, json_: bool = False) -> None:
    """Show each service's URL, state and health, and the Jupyter token."""
    report = stack.status(settings.load())
    print(json.dumps(report, indent=2) if json_ else stack.format_status(report))


@task(
    help={
        "service": f"{' or '.join(SERVICES)} (default: all).",
        "follow": "Keep printing new lines until Ctrl+C.",
        "tail": "How many past lines to show per service.",
    },
    positional=["service"],
)
@_one_line_errors
def logs(c: Context, service: str = "", follow: bool = False, tail: int = 200) -> None:
    """Show the services' logs."""
    stack.logs(settings.load(), service or None, follow, tail)


@task
@_one_line_errors
def clone(c: Context) -> None:
    """Place the course repo (LAB_REPO_URL, LAB_REPO_BRANCH) and the bundled lab in the workspace.

    Student work is never lost: their edits win, deleted files come back, and a
    diverged copy is backed up before it is replaced.
    """
    lab = settings.load()
    compose = LabCompose(lab)
    if compose.services().get(JUPYTER, {}).get("state") != "running":
        raise LabError("the lab is not running: start it with `invoke up`")
    stack.place_material(compose, lab)


@task
@_one_line_errors
def datasets(c: Context) -> None:
    """Fetch the datasets notebooks download at run time (LAB_DATASETS_FILE), for offline use.

    Also done by `invoke build` and `invoke bundle`; a running lab gets them at once.
    """
    lab = settings.load()
    compose = LabCompose(lab)
    image = compose.image(JUPYTER)
    if docker.image_id(image) is None:
        raise LabError(f"the image {image} is missing: run `invoke build` first")
    for line in datasets_module.fetch(lab, image):
        print(line)
    datasets_module.sync_running(lab, compose.container_ids().get(JUPYTER))
    print(f"Datasets: {datasets_module.describe(lab)}")


@task(
    help={
        "rounds": "Rounds per measure; medians are reported (at least 3 for real figures).",
        "smoke": "A light load for a quick check (5 clients; with --classroom: 3 students).",
        "cold": "Also time a cold build from nothing (no images, no cache): ~5 minutes.",
        "classroom": "Benchmark the classroom server instead: N students at once (--classroom "
        "alone: 20) on a class of its own, against one all-in-one container per student.",
        "soak": "With --classroom: the soak instead, this many minutes (10 for a real figure) "
        "of N/2 students logging in and out; hub and MLflow memory each minute, no lost run.",
    },
    optional=["classroom"],
)
@_one_line_errors
def bench(
    c: Context,
    rounds: int = 3,
    smoke: bool = False,
    cold: bool = False,
    classroom: str = "",
    soak: int = 0,
) -> None:
    """Benchmark the lab against a bare `mlflow server`; prints a table of figures and ratios.

    With --classroom, the classroom server (own stack, never your class) against one
    all-in-one container per student; `--classroom --soak 10` for its soak.
    """
    if classroom:
        from mlflow_lab.classroom import bench as class_bench
        from mlflow_lab.classroom import settings as class_settings

        print(
            class_bench.run(
                class_settings.load(),
                students=class_bench.students_wanted(classroom),
                smoke=smoke,
                soak_minutes=soak,
            )
        )
        return
    if soak:
        raise LabError("--soak measures the classroom server: add --classroom")
    from mlflow_lab.lab import bench as bench_module

    print(bench_module.run(settings.load(), rounds=rounds, smoke=smoke, cold=cold))


@task(
    help={
        "check": "Only check that requirements*.txt match pyproject.toml (exit 1 when not).",
        "with_images": "Also re-resolve docker/constraints.txt (both images; uses the base image).",
        "classroom": "Lock the classroom's images instead (docker/classroom-constraints.txt, "
        "the student servers' additions and the proxy's package-lock.json).",
        "mlflow_version": "With --classroom: move the class's MLflow server to this version.",
    }
)
@_one_line_errors
def lock(
    c: Context,
    check: bool = False,
    with_images: bool = False,
    classroom: bool = False,
    mlflow_version: str = "",
) -> None:
    """Re-resolve the exact versions: requirements*.txt from pyproject.toml (uv).

    With --with-images, also docker/constraints.txt after changing an image's requirements.txt;
    with --classroom, the classroom's images instead.
    """
    if mlflow_version and not classroom:
        raise LabError("--mlflow-version moves the classroom's MLflow only: add --classroom")
    if classroom:
        lock_module.lock_classroom(settings.load(), mlflow_version)
        return
    if check:
        stale = lock_module.lock_host(check=True)
        if stale:
            raise LabError(f"{' and '.join(stale)} do not match pyproject.toml: run `invoke lock`")
        print("requirements.txt and requirements-dev.txt match pyproject.toml.")
        return
    lock_module.lock_host()
    print("Wrote requirements.txt and requirements-dev.txt from pyproject.toml.")
    if with_images:
        lock_module.lock(settings.load())


@task(help={"json": "Print the results as JSON for scripts."})
@_one_line_errors
def verify(c: Context, json_: bool = False) -> None:
    """Check the running lab the way students use it (under 15 s); it leaves no trace.

    MLflow's API through the notebooks' address, a run with an artifact logged and read
    back, the UI, Jupyter and its kernel, the artifact store, the lab material, the
    ports. Exit code 0 only when every check passes.
    """
    verify_module.show(settings.load(), as_json=json_)


@task(help={"json": "Print the results as JSON for scripts."})
@_one_line_errors
def doctor(c: Context, json_: bool = False) -> None:
    """Check this machine's prerequisites (engine, compose, ports, disk, memory...).

    `invoke up` runs the same checks first. Exit code 0 only when every check passes.
    """
    doctor_module.show(doctor_module.run(settings.load()), as_json=json_, command="invoke doctor")


@task(
    help={
        "output": "The file to write, e.g. mlflow-lab.bundle (replaced when it exists).",
        "classroom": "Also carry the class's images (hub, mlflow, db, notebook) for an "
        "offline `invoke classroom.up --no-build`.",
    }
)
@_one_line_errors
def bundle(c: Context, output: str, classroom: bool = False) -> None:
    """Write one file with all `invoke up` needs offline: images, lab material, manifest.

    Builds the images first when they are out of date and fetches the course repo
    when the network allows. On each classroom machine: `invoke load FILE`, then `up`
    (or, with --classroom, `classroom.up --no-build` on the class's server).
    """
    bundle_module.create(settings.load(), Path(output), classroom=classroom)


@task(
    help={
        "file": "The bundle written by `invoke bundle`.",
        "sha256": "Refuse the file unless its sha256 is this (as `invoke bundle` printed it).",
    }
)
@_one_line_errors
def load(c: Context, file: str, sha256: str = "") -> None:
    """Check a bundle's every checksum, then load its images and course repo.

    A damaged bundle changes nothing. Afterwards `invoke up` (and, for a bundle made
    with --classroom, `classroom.up --no-build`) needs no network and builds nothing.
    A bundle is code: load only one from someone you trust.
    """
    bundle_module.load(settings.load(), Path(file), sha256=sha256 or None)


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
    for path in screenshots_module.take(lab, folder, run_lab=run_lab):
        print(f"wrote {path}")


@task(help={"output": "The backup file to write (a .tar.gz); an existing file is replaced."})
@_one_line_errors
def backup(c: Context, output: str = "") -> None:
    """Snapshot the running lab's runs, artifacts and notebooks into one file."""
    if not output:
        raise LabError("say where the backup goes: `invoke backup --output FILE`")
    lab_backup.backup(settings.load(), Path(output))


@task(
    help={"file": "The backup file written by `invoke backup`.", "yes": "Do not ask first."},
    positional=["file"],
)
@_one_line_errors
def restore(c: Context, file: str, yes: bool = False) -> None:
    """Replace the lab's runs, artifacts and notebooks with a backup's; asks first."""
    lab_backup.restore(settings.load(), Path(file), yes=yes)


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
    stale = lock_module.lock_host(check=True)
    if stale:
        raise Exit(f"error: {' and '.join(stale)} do not match pyproject.toml: run `invoke lock`")
    selection = " -m 'not e2e'" if unit else ""
    if k:
        selection += f" -k {k!r}"
    c.run(f"{python} -m pytest{selection}", echo=True)


# The lab's tasks at the top (`invoke up`), the classroom's under `classroom.`
# (`invoke classroom.up`, defined in mlflow_lab/classroom/tasks.py).
ns = Collection.from_module(sys.modules[__name__])
ns.add_collection(classroom_tasks.ns)
