"""A class backup restored into another, new class (as after moving to a new machine).

The new class has its own secrets: another instructor password (MLflow's admin
password too) and another hub encryption key, and a hub that never saw the students
(the hub's database is not in a backup). Afterwards the instructor and the tools log in
with the new class's password and see every run; a student logs in with the password
the backup's accounts have, in the hub and in MLflow, and finds her notebook.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_lab.classroom.hub import Hub
from tests.e2e.classroom.conftest import UP_TIMEOUT_S, Classroom, class_env, cleanup
from tests.e2e.classroom.test_restore import LOG_RUN, NOTEBOOK, RUNS

USER = "erin"
ALL_RUNS = """
import json, mlflow
from mlflow import MlflowClient
found = {}
for ws in MlflowClient().list_workspaces():
    mlflow.set_workspace(ws.name)
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    found[ws.name] = sorted(r.info.run_id for r in client.search_runs(ids)) if ids else []
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def new_class(
    classroom: Classroom, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Classroom]:
    """A second class on the package's swarm, from nothing."""
    state = tmp_path_factory.mktemp("new-class-state")
    stack = f"mlflow-class-new-{os.getpid()}"
    env = class_env(state, stack)
    room = Classroom(env, stack, state / "class")
    try:
        room.invoke("classroom.up", timeout=UP_TIMEOUT_S)
        yield room
    finally:
        # The package's class keeps the swarm: only this class goes.
        cleanup(env, stack, swarm_before="active", gwbridge_before=True)


def test_a_backup_restored_into_a_new_class_keeps_every_login(
    classroom: Classroom, new_class: Classroom, tmp_path: Path
) -> None:
    roster = tmp_path / "erin.csv"
    roster.write_text(f"{USER},Erin E\n")
    classroom.invoke("classroom.students", "add", str(roster))
    password = classroom.passwords()[USER]
    session = classroom.login(USER, password)
    container = classroom.spawn(session, USER)
    status, _, _ = session.request("PUT", f"/user/{USER}/api/contents/kept.ipynb", NOTEBOOK)
    assert status in (200, 201)
    run = classroom.json_in(container, LOG_RUN)
    archive = tmp_path / "class.backup.tar.gz"
    classroom.invoke("classroom.backup", "--output", str(archive), timeout=900)

    for secret in ("instructor-password", "hub-crypt-key"):
        assert new_class.secret(secret) != classroom.secret(secret)
    assert USER not in {u["name"] for u in new_class.admin().users()}
    new_class.invoke("classroom.restore", str(archive), "--yes", timeout=1200)

    # The new class's instructor password wins: MLflow's admin sees every workspace's
    # runs, and the tools (which log in as the admin) still manage accounts.
    assert run in new_class.as_instructor(ALL_RUNS)[USER]
    assert Hub(new_class.url).login("instructor", new_class.secret("instructor-password"))
    roster.write_text("frank,Frank F\n")
    new_class.invoke("classroom.students", "add", str(roster))

    # The backup's student password works in a hub that never had her, and so does her
    # MLflow login in the server it starts.
    session = new_class.login(USER, password)
    container = new_class.spawn(session, USER)
    assert run in new_class.json_in(container, RUNS)
    assert new_class.json_in(container, LOG_RUN) in new_class.json_in(container, RUNS)
    status, _, _ = session.request("GET", f"/user/{USER}/api/contents/kept.ipynb")
    assert status == 200
