"""A restore interrupted at any point leaves the lab's data from before (issue 13).

Uses the shared `lab` stack and leaves it running on the data it had.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import INVOKE, PROJECT_ROOT, Lab
from tests.e2e.lab.test_reliability import integrity, run_ids, workspace_file
from tests.e2e.lab.test_stack import round_trip

# Lines `invoke restore` prints as it goes: SIGINT lands right after each.
POINTS = {
    "after-the-safety-backup": "  kept: ",
    "during-the-db-write": "[3/4] Writing",
    "during-the-swap": "[4/4] Swapping",
}


@pytest.mark.parametrize("point", sorted(POINTS))
def test_a_restore_interrupted_at_any_point_leaves_the_data_from_before(
    lab: Lab, tmp_path: Path, point: str
) -> None:
    archive = tmp_path / "lab.tar.gz"
    round_trip(lab)
    lab.invoke("backup", "--output", str(archive), timeout=600)
    later = round_trip(lab)  # not in the backup: it must survive the interrupted restore
    workspace_file(lab, "write", "after-backup.txt", "kept")
    proc = subprocess.Popen(
        [*INVOKE, "restore", "--yes", str(archive)],
        cwd=PROJECT_ROOT,
        env={**lab.env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(POINTS[point]):
            os.kill(proc.pid, signal.SIGINT)
            break
    out, err = proc.communicate(timeout=900)
    shown = "".join(seen) + out + err
    assert proc.returncode == 1, shown
    [message] = err.strip().splitlines()
    assert "interrupted" in message and "data from before" in message, shown
    assert "Traceback" not in shown
    lab.invoke("up", timeout=600)
    assert later["run_id"] in run_ids(lab), shown
    assert workspace_file(lab, "read", "after-backup.txt") == "kept"
    assert integrity(lab) == "ok"
    safety = list((lab.state_dir / "backups").glob("before-restore-*.tar.gz"))
    assert safety, "the safety backup is kept in the state dir"
