"""Bringing the stack up and down, and telling its state."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from typing import Any

from invoke.context import Context

from mlflow_lab import course, doctor, engine, images
from mlflow_lab.compose import SERVICES, Compose
from mlflow_lab.errors import LabError
from mlflow_lab.settings import Settings

READY_TIMEOUT_S = 300
PROBE_TIMEOUT_S = 3
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
    # Docker would create the bind-mount source as root if it were missing.
    settings.course_cache_dir.mkdir(parents=True, exist_ok=True)
    started = compose.run(f"up --detach --wait --wait-timeout {READY_TIMEOUT_S}", warn=True)
    if started.failed:
        detail = _not_ready_detail(compose)
        # No half-started stack: stop what came up; volumes (the students' data) stay.
        compose.run("stop", hide=True, warn=True)
        raise LabError(f"{detail}: see `invoke logs`, fix it, then `invoke up` again")
    place_material(compose, settings, first_start_only=True)
    print_ready(settings)


def place_material(compose: Compose, settings: Settings, *, first_start_only: bool) -> None:
    """Bundled lab always; the course repo on first start (or always, for `clone`)."""
    print(f"Bundled lab: {course.place_bundled_lab(compose)}")
    name = course.repo_name(settings.repo_url)
    if first_start_only and course.workspace_has(compose, name):
        return
    for line in course.place_course_repo(compose, settings):
        print(line if line.startswith("warning:") else f"Course repo: {line}")


def _not_ready_detail(compose: Compose) -> str:
    states = compose.services()
    for service in SERVICES:
        info = states.get(service)
        if info is None:
            return f"the {service} container was not created"
        if info["state"] != "running":
            return f"the {service} container is {info['state']}"
        if info["health"] not in ("", "healthy"):
            return f"the {service} service is {info['health']} after {READY_TIMEOUT_S} s"
    return "the stack did not become ready"


def print_ready(settings: Settings) -> None:
    print()
    print(f"MLflow      {settings.mlflow_url}")
    print(f"JupyterLab  {settings.jupyter_url_with_token}")
    print(f'Notebooks use mlflow.set_tracking_uri("{NOTEBOOK_TRACKING_URI}").')


def down(ctx: Context, settings: Settings) -> None:
    engine.engine_version()
    Compose(ctx, settings).run("down --remove-orphans")
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


def _probe(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def status(ctx: Context, settings: Settings) -> dict[str, Any]:
    """Each service's URL, container state, health, and whether it really answers."""
    engine.engine_version()
    states = Compose(ctx, settings).services()
    probes = {
        "mlflow": f"{settings.mlflow_url}/health",
        "jupyter": f"{settings.jupyter_url}/api/status?token={settings.jupyter_token}",
    }
    report: dict[str, Any] = {"project": settings.project, "services": {}}
    for service in SERVICES:
        info = states.get(service, {})
        entry: dict[str, Any] = {
            "url": settings.mlflow_url if service == "mlflow" else settings.jupyter_url,
            "state": info.get("state") or "absent",
            "health": info.get("health") or "unknown",
            "responding": info.get("state") == "running" and _probe(probes[service]),
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
