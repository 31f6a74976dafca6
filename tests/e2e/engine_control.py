"""Restarting the Docker engine the tests run on, where that is safe and possible.

A restart stops every container on the machine, so it is done only when the test
project's containers are the only ones running. The engine is restarted the way it
was started: through systemd when systemd runs it, else by stopping the `dockerd`
process and starting it again with the same command line, environment and log file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import wait_until

ENGINE_STOP_TIMEOUT_S = 90
ENGINE_START_TIMEOUT_S = 90


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)


def _engine_answers() -> bool:
    try:
        return _docker("info", "--format", "{{.ServerVersion}}").returncode == 0
    except subprocess.TimeoutExpired:
        return False


def other_running_containers(project: str) -> list[str]:
    listing = _docker("ps", "--format", '{{.Names}}\t{{.Label "com.docker.compose.project"}}')
    return [
        name
        for name, _, owner in (line.partition("\t") for line in listing.stdout.splitlines())
        if owner != project
    ]


def _systemd_restart() -> Callable[[], None] | None:
    if not shutil.which("systemctl") or os.geteuid() != 0:
        return None
    active = subprocess.run(
        ["systemctl", "is-active", "--quiet", "docker"], capture_output=True, check=False
    )
    if active.returncode != 0:
        return None

    def restart() -> None:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=180)
        wait_until(_engine_answers, ENGINE_START_TIMEOUT_S, 0.5, "the engine answering")

    return restart


def _dockerd_pid() -> int | None:
    found = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    return pids[0] if len(pids) == 1 else None


def _process_restart() -> Callable[[], None] | None:
    pid = _dockerd_pid()
    if pid is None:
        return None
    proc = Path(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        environ = dict(
            item.decode().partition("=")[::2]
            for item in (proc / "environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        cwd = os.readlink(proc / "cwd")
        log = os.readlink(proc / "fd" / "1")
        if not Path(cwd).is_dir():
            # Its folder was deleted after it started (Linux shows "PATH (deleted)"): the
            # engine does not need it, and a restart must not fail on it.
            cwd = "/"
    except (PermissionError, FileNotFoundError, ProcessLookupError):
        return None

    def restart() -> None:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not proc.exists(), ENGINE_STOP_TIMEOUT_S, 0.2, "the engine stopping")
        output = open(log, "ab") if log.startswith("/") and Path(log).is_file() else None  # noqa: SIM115
        try:
            subprocess.Popen(
                argv,
                env=environ,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output or subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this test run, as the engine did before
            )
        finally:
            if output:
                output.close()
        wait_until(_engine_answers, ENGINE_START_TIMEOUT_S, 0.5, "the engine answering")

    return restart


def engine_restart(project: str) -> tuple[Callable[[], None] | None, str]:
    """A function that restarts the engine, or None and the reason it must not or cannot."""
    others = other_running_containers(project)
    if others:
        return None, f"other containers are running ({', '.join(others[:3])}): not stopping them"
    restart = _systemd_restart() or _process_restart()
    if restart is None:
        return None, "this engine is not run by systemd or by a dockerd process this user controls"
    return restart, ""
