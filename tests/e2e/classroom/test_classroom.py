"""The class as students and the instructor use it, on one stack for the whole module.

Order matters (module-scoped stack): accounts, two students running the lab at once,
isolation, a restarted server, then down/up.
"""

from __future__ import annotations

import json
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom.hub import Hub
from tests.e2e.classroom.conftest import Classroom, docker
from tests.helpers import container_module, wait_until

AUTH_CACHE_TTL_S = container_module("class-mlflow", "class_serve").AUTH_CACHE_TTL_S

LAB_SCRIPT = "/home/student/workspace/mlflow-tracking-lab/mlflow_tracking_lab.py"
STUDENTS = ("alice", "bob")

RUNS_BY_WORKSPACE = """
import json, mlflow
from mlflow import MlflowClient
found = {}
for ws in ("alice", "bob"):
    mlflow.set_workspace(ws)
    client = MlflowClient()
    exp = client.get_experiment_by_name("mlflow-tracking-lab")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    # The lab's run that logs files as run artifacts (its models are logged models).
    shown = [r for r in runs if r.data.tags.get("mlflow.runName") == "artifacts-demo"]
    found[ws] = {
        "experiment": exp.experiment_id if exp else None,
        "runs": sorted(r.info.run_id for r in runs),
        "artifacts": len(client.list_artifacts(shown[0].info.run_id)) if shown else 0,
    }
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def enrolled(classroom: Classroom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    roster = tmp_path_factory.mktemp("roster") / "class.csv"
    roster.write_text("username,name\nalice,Alice A\nbob,Bob B\n")
    out = classroom.invoke("classroom.students", "add", str(roster)).stdout
    passwords = classroom.passwords()
    for user in STUDENTS:
        assert user in out and passwords[user] in out
    return passwords


def test_up_prints_the_hub_url_and_the_instructors_password_file(classroom: Classroom) -> None:
    out = classroom.up_output.stdout  # type: ignore[attr-defined]
    assert classroom.url.replace("127.0.0.1", "127.0.0.1") in out
    assert "secrets/instructor-password" in out
    assert "warning: the hub serves plain HTTP" in out
    report = json.loads(classroom.invoke("classroom.status", "--json").stdout)
    assert {s["health"] for s in report["services"].values()} == {"healthy"}
    assert report["api_token"] == classroom.secret("hub-api-token")


def test_students_get_accounts_with_a_private_passwords_file(
    classroom: Classroom, enrolled: dict[str, str]
) -> None:
    assert stat.S_IMODE((classroom.state_dir / "passwords.csv").stat().st_mode) == 0o600
    listing = classroom.invoke("classroom.students", "list").stdout
    assert "alice" in listing and "Bob B" in listing


def test_two_students_run_the_lab_at_once_each_in_their_workspace(
    classroom: Classroom, enrolled: dict[str, str]
) -> None:
    containers = {
        user: classroom.spawn(classroom.login(user, enrolled[user]), user) for user in STUDENTS
    }

    def run_lab(user: str) -> tuple[int, str]:
        done = docker("exec", containers[user], "python3", LAB_SCRIPT, check=False, timeout=900)
        return done.returncode, done.stdout[-2000:] + done.stderr[-3000:]

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(STUDENTS, pool.map(run_lab, STUDENTS), strict=True))
    for user, (code, output) in results.items():
        assert code == 0, f"{user}'s lab run failed:\n{output}"
    # The instructor's MLflow login sees both students' runs, each in their workspace.
    found = classroom.as_instructor(RUNS_BY_WORKSPACE)
    for user in STUDENTS:
        assert found[user]["runs"], found
        assert found[user]["artifacts"] > 0, found
    assert found["alice"]["experiment"] != found["bob"]["experiment"]
    # The student's server holds their own MLflow login only.
    env = docker("exec", containers["alice"], "env").stdout
    assert "MLFLOW_TRACKING_USERNAME=alice" in env and "MLFLOW_WORKSPACE=alice" in env
    assert enrolled["bob"] not in env
    assert (
        "/var/run/docker.sock"
        not in docker("inspect", "--format", "{{json .Mounts}}", containers["alice"]).stdout
    )


# The class's own isolation probe (docker/class-notebook/class_probe.py), run in Alice's
# server with her login: what her MLflow client may do to Bob's run and in his workspace.
PROBE = "/usr/local/lib/mlflow-lab/class_probe.py"


def test_a_student_cannot_touch_another_students_runs(
    classroom: Classroom, enrolled: dict[str, str]
) -> None:
    bob_run = classroom.as_instructor(RUNS_BY_WORKSPACE)["bob"]["runs"][0]
    alice = classroom.server_container("alice")
    outcome = probe_in(alice, "attack", bob_run)
    # Alice's login pointed at Bob's workspace (the lab's 3.13 client reads MLFLOW_WORKSPACE):
    # MLflow answers a search with only what she may read (nothing), creating is refused.
    browse = probe_in(alice, "browse", env={"MLFLOW_WORKSPACE": "bob"})
    assert browse.pop("list their workspace") == "sees nothing", browse
    outcome.update(browse)
    assert "allowed" not in outcome.values(), outcome
    assert set(outcome.values()) <= {"PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST"}, outcome


def probe_in(container: str, *args: str, env: dict[str, str] | None = None) -> Any:
    flags = [a for key, value in (env or {}).items() for a in ("--env", f"{key}={value}")]
    done = subprocess.run(
        ["docker", "exec", *flags, container, "python3", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_wrong_password_gets_no_server(classroom: Classroom, enrolled: dict[str, str]) -> None:
    assert not Hub(classroom.url).login("alice", enrolled["alice"] + "x")
    assert not Hub(classroom.url).login("mallory", "whatever")
    users = {u["name"] for u in classroom.admin().users()}
    assert "mallory" not in users


NOTEBOOK = {
    "type": "notebook",
    "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
}


def test_a_restarted_server_keeps_a_saved_notebook(
    classroom: Classroom, enrolled: dict[str, str]
) -> None:
    session = classroom.login("alice", enrolled["alice"])
    status, _, _ = session.request("PUT", "/user/alice/api/contents/saved.ipynb", NOTEBOOK)
    assert status in (200, 201)
    session.api("DELETE", "/users/alice/server")
    classroom.spawn(session, "alice")
    status, _, text = session.request("GET", "/user/alice/api/contents/saved.ipynb")
    assert status == 200, text


MLFLOW_LOGIN_STATUS = """
import base64, json, os, urllib.error, urllib.request
user, password = os.environ["WHO"], os.environ["PASSWORD"]
request = urllib.request.Request(
    "http://127.0.0.1:8080/api/2.0/mlflow/experiments/search?max_results=1",
    headers={
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
        "X-MLFLOW-WORKSPACE": user,
    },
)
try:
    status = urllib.request.urlopen(request, timeout=30).status
except urllib.error.HTTPError as exc:
    status = exc.code
print(json.dumps(status))
"""


def test_reset_password_retires_the_old_login_in_the_hub_and_in_mlflow(
    classroom: Classroom, enrolled: dict[str, str], tmp_path: Path
) -> None:
    roster = tmp_path / "erin.csv"
    roster.write_text("erin\n")
    classroom.invoke("classroom.students", "add", str(roster))
    old = classroom.passwords()["erin"]
    mlflow = classroom.service_container("mlflow")

    def mlflow_status(password: str) -> int:
        return int(
            classroom.json_in(mlflow, MLFLOW_LOGIN_STATUS, {"WHO": "erin", "PASSWORD": password})
        )

    # Asked a few times, so each of MLflow's workers has the old login in its cache.
    assert {mlflow_status(old) for _ in range(6)} == {200}
    before = Hub(classroom.url)  # a browser logged in before the reset
    assert before.login("erin", old)
    out = classroom.invoke("classroom.students", "reset-password", "erin").stdout
    new = classroom.passwords()["erin"]
    assert new != old and new in out
    # Her session from before ends: no server from it, and the hub's pages ask her to log
    # in (the hub checks a session against the roster every few seconds). Her hub user
    # stays, with where her workspace is.
    status, _, text = before.request("POST", "/hub/api/users/erin/server")
    assert status == 403, text
    wait_until(
        lambda: "/hub/login" in before.request("GET", "/hub/home")[1],
        timeout=60,
        interval=2,
        what="the hub to send erin's old session to the login page",
    )
    assert classroom.admin().api("GET", "/users/erin")["name"] == "erin"
    assert not Hub(classroom.url).login("erin", old)
    assert Hub(classroom.url).login("erin", new)
    assert mlflow_status(new) == 200
    # MLflow's credential cache may accept the old password for its lifetime in the
    # workers that did not make the change (class_serve.AUTH_CACHE_TTL_S), never longer.
    wait_until(
        lambda: {mlflow_status(old) for _ in range(4)} == {401},
        timeout=AUTH_CACHE_TTL_S + 45,
        interval=5,
        what="MLflow to refuse erin's old password",
    )


def test_down_and_up_keep_users_runs_artifacts_and_notebooks(
    classroom: Classroom, enrolled: dict[str, str]
) -> None:
    before = classroom.as_instructor(RUNS_BY_WORKSPACE)
    classroom.invoke("classroom.down", timeout=600)
    assert not docker(
        "service", "ls", "-q", "--filter", f"label=org.mlflow-lab.class={classroom.stack}"
    ).stdout.strip()
    classroom.invoke("classroom.up", timeout=900)
    assert classroom.as_instructor(RUNS_BY_WORKSPACE) == before
    session = classroom.login("alice", enrolled["alice"])
    classroom.spawn(session, "alice")
    status, _, _ = session.request("GET", "/user/alice/api/contents/saved.ipynb")
    assert status == 200
    assert Path(classroom.state_dir / "passwords.csv").is_file()
