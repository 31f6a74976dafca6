"""Starting the lab's containers and waiting until both services really answer.

compose.yaml's `depends_on: service_healthy` makes a plain `docker compose up` start
Jupyter only once MLflow is healthy, so the two start-ups run one after the other.
Jupyter does not need MLflow to start (its 127.0.0.1:8080 forward connects per
request), so `invoke up` lets compose create the containers and starts both at once:
the lab is ready when the slower of the two is, not after both in turn.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlflow_lab.core import docker
from mlflow_lab.core import http as local_http
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab.compose import SERVICES, LabCompose

READY_TIMEOUT_S = 300
# Readiness is seen within this of happening: the services start in about 1.5 s.
POLL_S = 0.05
# Container states cost a `docker inspect`; asked less often until both answer.
INSPECT_EVERY_S = 0.5
INSPECT_WHEN_ANSWERING_S = 0.1
STATE_FORMAT = (
    "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
)


class NotReady(LabError):
    """A service did not come up; the message says which and how."""


@dataclass(frozen=True)
class State:
    status: str  # created, running, restarting, exited, dead, ...
    exit_code: int
    health: str  # starting, healthy, unhealthy; "" for no healthcheck


def start(compose: LabCompose) -> dict[str, str]:
    """Create (or recreate what changed) with compose, then start both containers at once."""
    compose.run("up", "--no-start", "--remove-orphans")
    ids = compose.container_ids()
    missing = [service for service in SERVICES if service not in ids]
    if missing:
        raise NotReady(f"the {' and '.join(missing)} container was not created")

    def start_one(container: str) -> str | None:
        result = docker.run("start", container, check=False)
        return None if result.ok else result.last_line()

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        errors = dict(zip(ids, pool.map(start_one, ids.values()), strict=True))
    for service, error in errors.items():
        if error:
            raise NotReady(f"the {service} container did not start: {error}")
    return ids


def states(ids: dict[str, str]) -> dict[str, State]:
    result = docker.inspect(*ids.values(), fmt=STATE_FORMAT)
    lines = result.stdout.splitlines() if result.ok else []
    found: dict[str, State] = {}
    for service, line in zip(ids, lines, strict=False):
        status, code, health = [*line.split(), "", "", ""][:3]
        found[service] = State(status, int(code) if code.lstrip("-").isdigit() else 0, health)
    return found


def problem(service: str, state: State | None) -> str | None:
    """Why `service` will not come up by waiting longer; None while it still may."""
    if state is None:
        return f"the {service} container is gone"
    if state.status in ("exited", "dead"):
        return f"the {service} container stopped (exit code {state.exit_code})"
    if state.status == "restarting":
        return f"the {service} container keeps restarting"
    if state.health == "unhealthy":
        return f"the {service} service is unhealthy"
    return None


def probe_urls(compose: LabCompose) -> dict[str, str]:
    lab = compose.settings
    # Quoted: `a+b` would reach Jupyter as `a b` and readiness would never come.
    token = urllib.parse.quote(lab.jupyter_token, safe="")
    return {
        "mlflow": f"{lab.mlflow_url}/health",
        "jupyter": f"{lab.jupyter_url}/api/status?token={token}",
    }


def wait_ready(
    compose: LabCompose, ids: dict[str, str], on_answer: Callable[[str], None] | None = None
) -> None:
    """Until each service answers on its published port and Docker calls it healthy.

    Fails early, with the reason, when a container stops, restarts or turns unhealthy.
    `on_answer(service)` is called as each service first answers.
    """
    timeout = READY_TIMEOUT_S
    urls = probe_urls(compose)
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    next_inspect = 0.0
    found: dict[str, State] = {}
    while True:
        now = time.monotonic()
        for service, url in urls.items():
            if service not in answered and local_http.answers(url):
                answered.add(service)
                if on_answer is not None:
                    on_answer(service)
        all_answer = answered == set(urls)
        if all_answer or now >= next_inspect:
            found = states(ids)
            for service in ids:
                reason = problem(service, found.get(service))
                if reason:
                    raise NotReady(reason)
            if all_answer and all(s.health in ("healthy", "") for s in found.values()):
                return
            next_inspect = now + (INSPECT_WHEN_ANSWERING_S if all_answer else INSPECT_EVERY_S)
        if now > deadline:
            waiting = [s for s in SERVICES if s not in answered] or [
                s for s, state in found.items() if state.health not in ("healthy", "")
            ]
            raise NotReady(f"the {' and '.join(waiting)} service was not ready after {timeout:g} s")
        time.sleep(POLL_S)
