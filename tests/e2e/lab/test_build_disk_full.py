"""The disk filling up during `invoke build` (issue 5): one line, non-zero exit, nothing lost.

The build runs against a second Docker engine of its own, whose data root is a small
tmpfs that is nearly full, so the engine really runs out of space in the middle of the
build. What was on that engine before (the base image, a volume with a student's file)
must still be there after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_lab.lab import images
from tests.e2e.conftest import lab_env, run_invoke
from tests.helpers import wait_until

TMPFS_MB = 700
# A bridge of the second engine's own (from the RFC 2544 benchmarking range): with none,
# dockerd would delete the main engine's docker0 on start.
BRIDGE_ADDRESS = "198.18.254.1/24"
LEFT_FREE_MB = 16
ENGINE_START_TIMEOUT_S = 90
STUDENT_VOLUME = "students-work"


@dataclass
class Engine:
    host: str  # DOCKER_HOST of this engine
    data_root: Path

    def docker(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["docker", "-H", self.host, *args],
            input=stdin,
            capture_output=True,
            timeout=600,
            check=False,
        )

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_root).free


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(where)]
    return subprocess.run(mount, capture_output=True, check=False).returncode == 0


def _links() -> set[str]:
    listing = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    return {line.split(":")[1].strip().split("@")[0] for line in listing.stdout.splitlines()}


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(timeout=30)


@pytest.fixture
def small_engine() -> Iterator[Engine]:
    """A second dockerd whose data root is a TMPFS_MB tmpfs; torn down afterwards."""
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("ip"):
        pytest.skip("a second Docker engine needs root, dockerd and ip on this machine")
    # Short: a unix socket path may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="lab-e2e-engine-", dir="/tmp"))
    data = root / "data"
    if not _mount_tmpfs(data):
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip("cannot mount a tmpfs here")
    bridge = f"labe2e{os.getpid() % 100000}"
    config = root / "daemon.json"
    config.write_text("{}\n", encoding="utf-8")
    engine = Engine(f"unix://{root / 'docker.sock'}", data)
    daemon: subprocess.Popen[bytes] | None = None
    with (root / "dockerd.log").open("wb") as log:
        try:
            subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", BRIDGE_ADDRESS, "dev", bridge], check=True)
            # Its own bridge and no iptables rules: the main engine's networks stay untouched.
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
                lambda: engine.docker("info").returncode == 0,
                ENGINE_START_TIMEOUT_S,
                0.5,
                "the second engine answering",
            )
            yield engine
        finally:
            if daemon is not None:
                _stop(daemon)
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
            if subprocess.run(["umount", str(data)], check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(data)], check=False)
            shutil.rmtree(root, ignore_errors=True)


def test_a_disk_filling_up_during_a_build_is_one_line_and_loses_nothing(
    small_engine: Engine, tmp_path: Path
) -> None:
    links = _links()
    base = images.local_base_tag()
    if images.image_label(base) is None:
        pytest.skip(f"{base} is not on the main engine: nothing to seed the small one with")
    saved = subprocess.run(["docker", "save", base], capture_output=True, check=True).stdout
    assert small_engine.docker("load", stdin=saved).returncode == 0
    small_engine.docker("volume", "create", STUDENT_VOLUME)
    note = "a student's work, written before the build"
    wrote = small_engine.docker(
        "run", "--rm", "-i", "--network=none", "-v", f"{STUDENT_VOLUME}:/work", base,
        "sh", "-c", "cat > /work/note.txt",
        stdin=note.encode(),
    )  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    # The disk is all but full: the build context alone (the CPU PyTorch wheel among it)
    # does not fit, whatever the build step it reaches.
    ballast = small_engine.data_root / "ballast"
    with ballast.open("wb") as handle:
        chunk = b"\0" * (1 << 20)
        for _ in range(small_engine.free_bytes() // len(chunk) - LEFT_FREE_MB):
            handle.write(chunk)
    assert small_engine.free_bytes() < (LEFT_FREE_MB + 1) << 20

    env = {
        **lab_env(tmp_path / "state"),
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DOCKER_HOST": small_engine.host,
        "LAB_BASE_IMAGE": "local",
    }
    result = run_invoke(env, "build", "--service", "mlflow", check=False, timeout=900)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    # The build's own progress comes first; the verdict is one line, the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr
    assert errors[0].startswith("error: the disk is full ("), errors[0]
    assert "free space (e.g. `docker system prune`)" in errors[0]
    # Once space is freed, as the message says, what the engine held before is all there.
    ballast.unlink()
    kept = small_engine.docker(
        "run", "--rm", "--network=none", "-v", f"{STUDENT_VOLUME}:/work", base,
        "cat", "/work/note.txt",
    )  # fmt: skip
    assert kept.stdout.decode().strip() == note
    assert small_engine.docker("image", "inspect", base).returncode == 0
    assert small_engine.docker("image", "inspect", "mlflow-lab/mlflow:latest").returncode != 0
    assert links <= _links(), "the main engine's interfaces (docker0...) are all still there"
