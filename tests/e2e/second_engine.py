"""A second Docker engine of a test's own, beside the machine's, removed afterwards.

Its own data root, exec root, socket and bridge, and no iptables rules: the main
engine's images, networks and docker0 stay untouched. Without a swarm (two engines'
swarms would meet in /var/run/docker/netns).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.docker_host import DockerHost
from tests.helpers import wait_until

ENGINE_START_TIMEOUT_S = 90


@dataclass
class Engine(DockerHost):
    host: str  # DOCKER_HOST of this engine
    data_root: Path

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_root).free


def links() -> set[str]:
    """This machine's network interfaces (docker0, the bridges...)."""
    listing = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    return {line.split(":")[1].strip().split("@")[0] for line in listing.stdout.splitlines()}


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(timeout=30)


def skip_unless_possible() -> None:
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("ip"):
        pytest.skip("a second Docker engine needs root, dockerd and ip on this machine")


@contextmanager
def second_engine(
    bridge_address: str, data_root: Path | None = None, root_dir: str = "/tmp"
) -> Iterator[Engine]:
    """A second dockerd on `data_root` (default: a folder on disk of its own); everything
    it made, its data included when the folder is its own, is removed on the way out."""
    skip_unless_possible()
    # Short: a unix socket path may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="lab-e2e-engine-", dir=root_dir))
    data = data_root or root / "data"
    data.mkdir(exist_ok=True)
    bridge = f"labe2e{os.getpid() % 100000}"
    config = root / "daemon.json"
    config.write_text("{}\n", encoding="utf-8")
    engine = Engine(f"unix://{root / 'docker.sock'}", data)
    daemon: subprocess.Popen[bytes] | None = None
    with (root / "dockerd.log").open("wb") as log:
        try:
            subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", bridge_address, "dev", bridge], check=True)
            daemon = subprocess.Popen(
                [
                    "dockerd",
                    f"--config-file={config}",
                    f"--data-root={data}",
                    f"--exec-root={root / 'exec'}",
                    f"--pidfile={root / 'dockerd.pid'}",
                    f"--host={engine.host}",
                    f"--bridge={bridge}",
                    "--iptables=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            wait_until(
                lambda: engine.docker("info", timeout=30).returncode == 0,
                ENGINE_START_TIMEOUT_S,
                0.5,
                "the second engine answering",
            )
            yield engine
        finally:
            if daemon is not None:
                _stop(daemon)
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
            if data_root is None:
                # overlay2 leaves no mounts once dockerd has stopped; lazily, in case.
                for mount in _mounts_below(data):
                    subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)


def _mounts_below(folder: Path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted((p for p in points if p.startswith(f"{folder}/")), reverse=True)
