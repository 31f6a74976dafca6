"""The disk filling up during `invoke build` (issue 5): one line, non-zero exit, nothing lost.

The build runs against a second Docker engine of its own, whose data root is a small
tmpfs that is nearly full, so the engine really runs out of space in the middle of the
build. What was on that engine before (the base image, a volume with a student's file)
must still be there after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_lab.lab import images
from tests.e2e.conftest import lab_env, run_invoke
from tests.e2e.second_engine import Engine, links, second_engine, skip_unless_possible

TMPFS_MB = 700
# A bridge of the second engine's own (from the RFC 2544 benchmarking range): with none,
# dockerd would delete the main engine's docker0 on start.
BRIDGE_ADDRESS = "198.18.254.1/24"
LEFT_FREE_MB = 16
STUDENT_VOLUME = "students-work"


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(where)]
    return subprocess.run(mount, capture_output=True, check=False).returncode == 0


@pytest.fixture
def small_engine() -> Iterator[Engine]:
    """A second dockerd whose data root is a TMPFS_MB tmpfs; torn down afterwards."""
    skip_unless_possible()
    # Short: a unix socket path may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="lab-e2e-small-", dir="/tmp"))
    data = root / "data"
    try:
        if not _mount_tmpfs(data):
            pytest.skip("cannot mount a tmpfs here")
        with second_engine(BRIDGE_ADDRESS, data_root=data) as engine:
            yield engine
    finally:
        if data.is_mount() and subprocess.run(["umount", str(data)], check=False).returncode:
            subprocess.run(["umount", "--lazy", str(data)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_a_disk_filling_up_during_a_build_is_one_line_and_loses_nothing(
    small_engine: Engine, tmp_path: Path
) -> None:
    before = links()
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
    assert kept.stdout.strip() == note
    assert small_engine.docker("image", "inspect", base).returncode == 0
    assert small_engine.docker("image", "inspect", "mlflow-lab/mlflow:latest").returncode != 0
    assert before <= links(), "the main engine's interfaces (docker0...) are all still there"
