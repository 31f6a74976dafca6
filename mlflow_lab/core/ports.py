"""Whether the lab's host ports are free, and who holds one when it is not."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

from mlflow_lab.core import docker
from mlflow_lab.core.settings import Settings


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _ss(args: list[str]) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def container_on_port(port: int) -> tuple[str, str] | None:
    """(container name, compose project) of a running container publishing `port`."""
    fmt = f'{{{{.Names}}}}\t{{{{.Label "{docker.PROJECT_LABEL}"}}}}\t{{{{.Ports}}}}'
    for line in docker.containers({}, fmt, all=False):
        name, project, ports = [*line.split("\t"), "", ""][:3]
        if re.search(rf":{port}->", ports):
            return name, project
    return None


def process_on_port(port: int) -> str | None:
    """'name (pid N)' of a local process listening on `port`, where `ss` can tell."""
    if not shutil.which("ss"):
        return None
    listing = _ss(["ss", "-H", "-ltnp", f"sport = :{port}"])
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', listing)
    return f"{match.group(1)} (pid {match.group(2)})" if match else None


def port_problems(settings: Settings) -> list[str]:
    """One line per lab port held by something other than this lab's own stack."""
    problems = []
    for name, port in (
        ("LAB_MLFLOW_PORT", settings.mlflow_port),
        ("LAB_JUPYTER_PORT", settings.jupyter_port),
    ):
        if is_free(settings.bind_address, port):
            continue
        container = container_on_port(port)
        if container and container[1] == settings.project:
            continue  # our own running stack: `up` again changes nothing
        if container:
            holder = f"container {container[0]}"
        else:
            holder = process_on_port(port) or "another program"
        problems.append(
            f"port {port} ({name}) on {settings.bind_address} is in use by {holder}: stop "
            f"it, or set {name} to a free port in .env"
        )
    return problems


def unreachable(host: str, port: int, timeout: float) -> str:
    """Why a TCP connection to host:port cannot be opened; "" when it can."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except socket.gaierror:
        return "no such host name"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
