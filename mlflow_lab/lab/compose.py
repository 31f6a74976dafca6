"""Running Docker Compose on the lab's compose.yaml with the lab's settings."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from invoke.context import Context
from invoke.runners import Result

from mlflow_lab import COMPOSE_FILE
from mlflow_lab.core import engine
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings

SERVICES = ("mlflow", "jupyter")


@dataclass
class Compose:
    ctx: Context
    settings: Settings
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**self.settings.compose_env(), **self.extra_env}

    def command(self, args: str) -> str:
        return (
            f"{engine.compose_command()} -f {shlex.quote(str(COMPOSE_FILE))} "
            f"-p {self.settings.project} {args}"
        )

    def run(
        self, args: str, *, hide: bool = False, warn: bool = False, pty: bool = False
    ) -> Result:
        result = self.ctx.run(self.command(args), env=self.env, hide=hide, warn=True, pty=pty)
        assert result is not None  # invoke returns None only for disown=True
        if result.failed and not warn:
            raise LabError(_failure_line(args, result))
        return result

    def services(self) -> dict[str, dict[str, str]]:
        """State and health of each service's container, from `compose ps`."""
        result = self.run("ps --all --format json", hide=True)
        found: dict[str, dict[str, str]] = {}
        for item in _json_items(result.stdout):
            found[str(item.get("Service"))] = {
                "state": str(item.get("State", "")),
                "health": str(item.get("Health", "")),
                "container": str(item.get("Name", "")),
            }
        return found

    def container_ids(self) -> dict[str, str]:
        """Container ID of each service (this project's, no one-off runs).

        Asks the engine directly: a `compose ps` costs compose's start-up, and this is on
        the path of every `invoke up`.
        """
        fmt = '{{.Label "com.docker.compose.service"}} {{.ID}}'
        result = self.ctx.run(
            "docker ps --all --no-trunc"
            f" --filter label=com.docker.compose.project={self.settings.project}"
            " --filter label=com.docker.compose.oneoff=False"
            f" --format {shlex.quote(fmt)}",
            hide=True,
            warn=True,
        )
        found: dict[str, str] = {}
        for line in (result.stdout if result is not None and result.ok else "").splitlines():
            service, _, container = line.strip().partition(" ")
            if service in SERVICES and container:
                found[service] = container
        return found

    def exec(self, service: str, command: str) -> Result:
        """Run a shell-quoted command in the service's running container, output captured."""
        container = self.container_ids().get(service)
        if container is None:
            raise LabError(
                f"the {service} container does not exist: start the lab with `invoke up`"
            )
        result = self.ctx.run(f"docker exec {container} {command}", hide=True, warn=True)
        assert result is not None  # invoke returns None only for disown=True
        return result

    def image(self, service: str) -> str:
        return f"mlflow-lab/{service}:{self.settings.image_tag}"


def _json_items(text: str) -> list[dict[str, object]]:
    # Compose v2.21+ prints one JSON object per line; older v2 printed one array.
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        loaded = json.loads(text)
        return [item for item in loaded if isinstance(item, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def says_disk_full(result: Result) -> bool:
    return "no space left on device" in f"{result.stderr}\n{result.stdout}".lower()


def disk_full_line(detail: str = "") -> str:
    return (
        f"the disk is full{detail}: free space (e.g. `docker system prune`) and run the "
        "command again; no lab data was touched"
    )


def last_line(result: Result) -> str:
    """The last line that says something, from the errors first (progress colours removed)."""
    for stream in (result.stderr, result.stdout):
        lines = [line.strip() for line in ANSI_ESCAPE.sub("", stream or "").splitlines()]
        said = [line for line in lines if line]
        if said:
            return said[-1]
    return f"exit code {result.exited}"


def _failure_line(args: str, result: Result) -> str:
    if says_disk_full(result):
        return disk_full_line()
    return f"`docker compose {args.split()[0]}` failed: {last_line(result)}"
