"""Bringing the stack up and down, and telling its state."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from invoke.context import Context

from mlflow_lab.core import engine
from mlflow_lab.core import http as local_http
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import course, doctor, images, startup
from mlflow_lab.lab.compose import SERVICES, Compose

# What the lab guide's notebooks call; inside the Jupyter container it reaches MLflow.
NOTEBOOK_TRACKING_URI = "http://127.0.0.1:8080"


def preflight(settings: Settings) -> None:
    """`invoke doctor`'s checks, which must pass before anything is built or started."""
    doctor.require(settings)


def up(ctx: Context, settings: Settings, *, build: bool = True) -> None:
    preflight(settings)
    compose = Compose(ctx, settings)
    stale = images.stale_images(compose)
    if stale:
        if not build:
            raise LabError(
                f"the {' and '.join(stale)} image is missing or out of date: run `invoke build`"
            )
        images.build(ctx, settings, stale)
    # Docker would create the bind-mount sources as root if they were missing.
    settings.course_cache_dir.mkdir(parents=True, exist_ok=True)
    settings.datasets_cache_dir.mkdir(parents=True, exist_ok=True)
    bundled, has_course = _start_with_bundled_lab(compose, course.repo_name(settings.repo_url))
    print(bundled)
    # The course repo (network) waits until the lab is known to be up, and comes once:
    # later updates are `invoke clone`'s.
    for line in [] if has_course else course_lines(compose, settings):
        print(line)
    print_ready(settings)


def _start_with_bundled_lab(compose: Compose, course_name: str) -> tuple[str, bool]:
    """Start the lab; the bundled lab's line, and whether the course repo is in place.

    The bundled lab goes into the workspace as soon as Jupyter answers, while MLflow
    (the slower one to start) is still loading.
    """

    def local_placement() -> tuple[str, bool]:
        return bundled_lab_line(compose), course.workspace_has(compose, course_name)

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
        compose.run("stop", hide=True, warn=True)
        raise LabError(f"{exc}: see `invoke logs`, fix it, then `invoke up` again") from None
    return placing[0].result()


def bundled_lab_line(compose: Compose) -> str:
    return f"Bundled lab: {course.place_bundled_lab(compose)}"


def course_lines(compose: Compose, settings: Settings) -> list[str]:
    """What placing the course repo did; warnings start with 'warning:'."""
    return [
        line if line.startswith("warning:") else f"Course repo: {line}"
        for line in course.place_course_repo(compose, settings)
    ]


def place_material(compose: Compose, settings: Settings) -> None:
    """Bundled lab and course repo, fetched again (`invoke clone`)."""
    for line in [bundled_lab_line(compose), *course_lines(compose, settings)]:
        print(line)


def print_ready(settings: Settings) -> None:
    print()
    print(f"MLflow      {settings.mlflow_url}")
    print(f"JupyterLab  {settings.jupyter_url_with_token}")
    print(f'Notebooks use mlflow.set_tracking_uri("{NOTEBOOK_TRACKING_URI}").')


def down(ctx: Context, settings: Settings) -> None:
    engine.engine_version()
    # Stopped, not removed: the next `up` starts the same containers without creating
    # them again (`destroy` removes them).
    Compose(ctx, settings).run("stop")
    print("The lab is stopped; its data is kept. `invoke up` starts it again.")


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise LabError(f"{question} Nobody can answer here: add --yes to confirm")
    answer = input(f"{question} Type 'yes' to continue: ")
    return answer.strip().lower() == "yes"


def destroy(ctx: Context, settings: Settings, *, yes: bool) -> None:
    engine.engine_version()
    question = (
        f"This deletes the lab '{settings.project}' with all its runs, artifacts and the "
        "students' notebooks."
    )
    if not confirm(question, yes):
        print("Nothing was deleted.")
        return
    Compose(ctx, settings).run("down --volumes --remove-orphans")
    print("The lab's containers and volumes are deleted; the images are kept.")


def status(ctx: Context, settings: Settings) -> dict[str, Any]:
    """Each service's URL, container state, health, and whether it really answers."""
    engine.engine_version()
    compose = Compose(ctx, settings)
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


def logs(ctx: Context, settings: Settings, service: str | None, follow: bool, tail: int) -> None:
    if service is not None and service not in SERVICES:
        raise LabError(f"no service named {service!r}: use one of {', '.join(SERVICES)}")
    engine.engine_version()
    args = (
        f"logs --tail {tail}" + (" --follow" if follow else "") + (f" {service}" if service else "")
    )
    Compose(ctx, settings).run(args, pty=follow)
