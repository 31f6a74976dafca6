"""`classroom.backup` / `classroom.restore` round trip on the session's class.

A student (carol) has a run and a notebook; after the backup she logs another run and
deletes the notebook; the restore brings back exactly what the backup had, after a
safety backup. A damaged backup is refused in one line and changes nothing.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.e2e.classroom.conftest import Classroom

NOTEBOOK = {
    "type": "notebook",
    "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
}
LOG_RUN = """
import json, mlflow
mlflow.set_tracking_uri("http://127.0.0.1:8080")
mlflow.set_experiment("restore-check")
with mlflow.start_run() as run:
    mlflow.log_text("kept", "kept.txt")
print(json.dumps(run.info.run_id))
"""
RUNS = """
import json, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri("http://127.0.0.1:8080")
client = MlflowClient()
exp = client.get_experiment_by_name("restore-check")
runs = client.search_runs([exp.experiment_id]) if exp else []
print(json.dumps(sorted(r.info.run_id for r in runs)))
"""


@pytest.fixture(scope="module")
def carol(classroom: Classroom, tmp_path_factory: pytest.TempPathFactory) -> str:
    roster = tmp_path_factory.mktemp("roster") / "carol.csv"
    roster.write_text("carol,Carol C\n")
    classroom.invoke("classroom.students", "add", str(roster))
    return classroom.passwords()["carol"]


def test_backup_and_restore_round_trip(classroom: Classroom, carol: str, tmp_path: Path) -> None:
    session = classroom.login("carol", carol)
    container = classroom.spawn(session, "carol")
    status, _, _ = session.request("PUT", "/user/carol/api/contents/kept.ipynb", NOTEBOOK)
    assert status in (200, 201)
    first = classroom.json_in(container, LOG_RUN)

    archive = tmp_path / "class.backup.tar.gz"
    out = classroom.invoke("classroom.backup", "--output", str(archive), timeout=900).stdout
    assert str(archive) in out
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        names = set(tar.getnames())
    assert {"db-mlflow.sql", "db-mlflow_auth.sql", "artifacts.tar", "roster.json"} <= names
    assert "workspace-carol.tar" in names and "carol" in manifest["students"]
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"].values())
    assert not list(tmp_path.glob(".*partial"))

    # Changes after the backup: another run, the notebook deleted.
    second = classroom.json_in(container, LOG_RUN)
    status, _, _ = session.request("DELETE", "/user/carol/api/contents/kept.ipynb")
    assert status == 204

    done = classroom.invoke("classroom.restore", str(archive), "--yes", timeout=1200)
    assert "Safety backup" in done.stdout
    assert list((classroom.state_dir / "backups").glob("safety-*.tar.gz"))
    # Her session from before the restore is over (it held the MLflow password of that
    # login): she logs in again.
    status, _, _ = session.request("GET", "/hub/api/user")
    assert status == 403, status

    session = classroom.login("carol", carol)
    container = classroom.spawn(session, "carol")
    runs = classroom.json_in(container, RUNS)
    assert first in runs and second not in runs
    status, _, _ = session.request("GET", "/user/carol/api/contents/kept.ipynb")
    assert status == 200


def test_a_damaged_backup_is_refused_and_changes_nothing(
    classroom: Classroom, carol: str, tmp_path: Path
) -> None:
    archive = tmp_path / "class.backup.tar.gz"
    classroom.invoke("classroom.backup", "--output", str(archive), timeout=900)
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(damaged, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member)
            assert data is not None
            body = data.read()
            if member.name == "db-mlflow.sql":
                body = body.replace(b"restore-check", b"restore-chekk")
            member.size = len(body)
            target.addfile(member, io.BytesIO(body))
    safety_before = set((classroom.state_dir / "backups").glob("*"))
    done = classroom.invoke("classroom.restore", str(damaged), "--yes", check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "db-mlflow.sql does not match its sha256" in lines[0], lines
    assert set((classroom.state_dir / "backups").glob("*")) == safety_before
