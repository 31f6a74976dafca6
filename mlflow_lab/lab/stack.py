"""Bringing the stack up and down, and telling its state."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mlflow_lab.core import docker
from mlflow_lab.core import http as local_http
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import course, doctor, images, startup
from mlflow_lab.lab.compose import SERVICES, LabCompose
from mlflow_lab.lab.layout import NOTEBOOK_TRACKING_URI


def preflight(settings: Settings) -> None:
    """`invoke doctor`'s checks, which must pass before anything is built or started."""
    doctor.require(settings)


def up(settings: Settings, *, build: bool = True, verbose: bool = False) -> None:
    preflight(settings)
    compose = LabCompose(settings)
    stale = images.stale_images(compose)
    if stale:
        if not build:
            raise LabError(
                f"the {' and '.join(stale)} image is missing or out of date: run `invoke build`"
            )
        images.build(settings, stale, verbose=verbose)
    # Docker would create the bind-mount sources as root if they were missing.
    settings.course_cache_dir.mkdir(parents=True, exist_ok=True)
    settings.datasets_cache_dir.mkdir(parents=True, exist_ok=True)
    name = course.repo_name(settings.repo_url)
    bundled, has_course = _start_with_bundled_lab(compose, name)
    print(bundled)
    # The course repo (network) waits until the lab is known to be up, and comes once:
    # later updates are `invoke clone`'s.
    if not has_course:
        try:
            lines = course_lines(compose, settings)
        except LabError as exc:
            lines = [not_placed_line(f"the course repo ({name}/)", exc)]
        for line in lines:
            print(line)
    # The stack runs and answers whatever the material did: the URLs are printed and
    # `up` exits 0; a warning names what is missing and `invoke clone` places it later.
    print_ready(settings)


def not_placed_line(what: str, exc: LabError) -> str:
    return (
        f"warning: the lab is up, but {what} was not placed ({exc}): run `invoke clone` to place it"
    )


def _start_with_bundled_lab(compose: LabCompose, course_name: str) -> tuple[str, bool]:
    """Start the lab; the bundled lab's line, and whether the course repo is in place.

    The bundled lab goes into the workspace as soon as Jupyter answers, while MLflow
    (the slower one to start) is still loading.
    """

    def local_placement() -> tuple[str, bool]:
        try:
            line = bundled_lab_line(compose)
        except LabError as exc:  # e.g. a student's git lock in the workspace copy
            line = not_placed_line(f"the bundled lab ({course.BUNDLED_LAB_DIR}/)", exc)
        try:
            return line, course.workspace_has(compose, course_name)
        except LabError:
            return line, False  # the course placement that follows says what is wrong

    placing: list[Future[tuple[str, bool]]] = []
    try:
        ids = startup.start(compose)
        with ThreadPoolExecutor(max_workers=1) as pool:

            def on_answer(service: str) -> None:
                if service == "jupyter":
                    placing.append(pool.submit(local_placement))

            startup.wait_ready(compose, ids, on_answer)
    except startup.NotReady as exc:
        # No half-started stack: stop what came up; volumes (the students' data) stay.
        compose.run("stop", check=False)
        raise LabError(f"{exc}: see `invoke logs`, fix it, then `invoke up` again") from None
    return placing[0].result()


def bundled_lab_line(compose: LabCompose) -> str:
    return f"Bundled lab: {course.place_bundled_lab(compose)}"


def course_lines(compose: LabCompose, settings: Settings) -> list[str]:
    """What placing the course repo did; warnings start with 'warning:'."""
    return [
        line if line.startswith("warning:") else f"Course repo: {line}"
        for line in course.place_course_repo(compose, settings)
    ]


def place_material(compose: LabCompose, settings: Settings) -> None:
    """Bundled lab and course repo, fetched again (`invoke clone`)."""
    for line in [bundled_lab_line(compose), *course_lines(compose, settings)]:
        print(line)


def print_ready(settings: Settings) -> None:
    print()
    print(f"MLflow      {settings.mlflow_url}")
    print(f"JupyterLab  {settings.jupyter_url_with_token}")
    print(f'Notebooks use mlflow.set_tracking_uri("{NOTEBOOK_TRACKING_URI}").')


def down(settings: Settings) -> None:
    docker.engine_version()
    # Stopped, not removed: the next `up` starts the same containers without creating
    # them again (`destroy` removes them).
    LabCompose(settings).run("stop")
    print("The lab is stopped; its data is kept. `invoke up` starts it again.")


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise LabError(f"{question} Nobody can answer here: add --yes to confirm")
    answer = input(f"{question} Type 'yes' to continue: ")
    return answer.strip().lower() == "yes"


def destroy(settings: Settings, *, yes: bool) -> None:
    docker.engine_version()
    question = (
        f"This deletes the lab '{settings.project}' with all its runs, artifacts and the "
        "students' notebooks."
    )
    if not confirm(question, yes):
        print("Nothing was deleted.")
        return
    LabCompose(settings).run("down", "--volumes", "--remove-orphans")
    print("The lab's containers and volumes are deleted; the images are kept.")


def status(settings: Settings) -> dict[str, Any]:
    """Each service's URL, container state, health, and whether it really answers."""
    docker.engine_version()
    compose = LabCompose(settings)
    states = compose.services()
    probes = startup.probe_urls(compose)
    report: dict[str, Any] = {"project": settings.project, "services": {}}
    for service in SERVICES:
        info = states.get(service, {})
        entry: dict[str, Any] = {
            "url": settings.mlflow_url if service == "mlflow" else settings.jupyter_url,
            "state": info.get("state") or "absent",
            "health": info.get("health") or "unknown",
            "responding": info.get("state") == "running" and local_http.answers(probes[service]),
        }
        if service == "jupyter":
            entry["token"] = settings.jupyter_token
            entry["url_with_token"] = settings.jupyter_url_with_token
        report["services"][service] = entry
    report["ready"] = all(s["responding"] for s in report["services"].values())
    return report


def format_status(report: dict[str, Any]) -> str:
    lines = [f"Lab '{report['project']}': {'ready' if report['ready'] else 'not ready'}"]
    for service, entry in report["services"].items():
        answer = "answers" if entry["responding"] else "does not answer"
        lines.append(
            f"  {service:8} {entry['state']:9} {entry['health']:10} {answer:16} {entry['url']}"
        )
    jupyter = report["services"]["jupyter"]
    lines.append(f"  Jupyter token: {jupyter['token']}")
    return "\n".join(lines)


def logs(settings: Settings, service: str | None, follow: bool, tail: int) -> None:
    if service is not None and service not in SERVICES:
        raise LabError(f"no service named {service!r}: use one of {', '.join(SERVICES)}")
    docker.engine_version()
    args = [
        "logs",
        "--tail",
        str(tail),
        *(["--follow"] if follow else []),
        *filter(None, [service]),
    ]
    code = LabCompose(settings).project.attached(*args)
    if code not in (0, 130):
        raise LabError(f"`docker compose logs` failed (exit code {code}): see the lines above")
