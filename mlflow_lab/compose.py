"""Running Docker Compose on the lab's compose.yaml with the lab's settings."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from invoke.context import Context
from invoke.runners import Result

from mlflow_lab import COMPOSE_FILE, engine
from mlflow_lab.errors import LabError
from mlflow_lab.settings import Settings

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


def _failure_line(args: str, result: Result) -> str:
    output = f"{result.stderr}\n{result.stdout}"
    if "no space left on device" in output.lower():
        return (
            "the disk is full: free space (e.g. `docker system prune`) and run the "
            "command again; no lab data was touched"
        )
    last = next(
        (line.strip() for line in reversed(output.splitlines()) if line.strip()),
        f"exit code {result.exited}",
    )
    return f"`docker compose {args.split()[0]}` failed: {last}"
