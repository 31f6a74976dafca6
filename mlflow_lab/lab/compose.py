"""The lab's compose project: compose.yaml run through the Docker gateway with the settings.

The lab's facts that compose.yaml states (its services, their images, the ports inside
the containers, the mounts) are read from compose.yaml here, not written again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml

from mlflow_lab import COMPOSE_FILE
from mlflow_lab.core import docker
from mlflow_lab.core.docker import DockerError, Result
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings

MLFLOW = "mlflow"
JUPYTER = "jupyter"
_INTERPOLATION = re.compile(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}")


@cache
def spec() -> dict[str, Any]:
    """compose.yaml as data (interpolations left as written)."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise LabError(f"{COMPOSE_FILE.name} is not a compose file: restore it from git")
    return loaded


def services() -> tuple[str, ...]:
    """The lab's services, in compose.yaml's order (MLflow first: Jupyter builds on it)."""
    return tuple(spec()["services"])


def image_repository(service: str) -> str:
    """`mlflow-lab/mlflow` for `image: mlflow-lab/mlflow:${LAB_IMAGE_TAG:-latest}`."""
    return str(spec()["services"][service]["image"]).split(":", 1)[0]


def container_port(service: str) -> int:
    """The port the service listens on inside its container (the published target)."""
    published = str(spec()["services"][service]["ports"][0])
    return int(_INTERPOLATION.sub("x", published).rsplit(":", 1)[-1])


def mount_target(service: str, volume: str) -> str:
    """Where `volume` (a named volume or a bind source's last part) is mounted."""
    for entry in spec()["services"][service]["volumes"]:
        source, target = _INTERPOLATION.sub("x", str(entry)).split(":")[:2]
        if source == volume or source.endswith(f"/{volume}"):
            return target
    raise LabError(f"compose.yaml mounts no {volume} in {service}: restore it from git")


SERVICES = services()


@dataclass(frozen=True)
class LabCompose:
    """The lab's compose project for these settings (plus build-time variables)."""

    settings: Settings
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def project(self) -> docker.Compose:
        env = {**self.settings.compose_env(), **self.extra_env}
        return docker.Compose(COMPOSE_FILE, self.settings.project, env)

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> Result:
        return self.project.run(*args, check=check, timeout=timeout)

    def services(self) -> dict[str, dict[str, str]]:
        """State, health and container name of each service."""
        return self.project.states()

    def container_ids(self) -> dict[str, str]:
        return self.project.containers(SERVICES)

    def container(self, service: str) -> str:
        container = self.container_ids().get(service)
        if container is None:
            raise LabError(
                f"the {service} container does not exist: start the lab with `invoke up`"
            )
        return container

    def exec(
        self,
        service: str,
        *argv: str,
        input: str | None = None,
        timeout: float = 300,
        workdir: str | None = None,
    ) -> Result:
        """A command in the service's running container, output captured, not checked."""
        container = self.container(service)
        return docker.exec_in(container, *argv, input=input, timeout=timeout, workdir=workdir)

    def image(self, service: str) -> str:
        return f"{image_repository(service)}:{self.settings.image_tag}"

    def running(self) -> bool:
        return self.project.running()


__all__ = ["SERVICES", "DockerError", "LabCompose"]
