"""A class on two machines: a second Docker engine (tests/e2e/worker_engine.py) stands in
for a student PC that joins the class's swarm with the command `classroom.status` prints.

A class of its own (not the package's, whose swarm is on loopback): `classroom.up` makes
a swarm advertising LAB_CLASS_ADVERTISE_ADDRESS, the address the worker reaches this
machine at. Runs before the module that deploys the package's class (file order), while
the engine is in no swarm; the engine is left as found. The tests run in order on one
class and one worker: a join refused without the class's images, the classroom bundle
loaded there, join, nodes, students placed on the machines ready for them, a hub restart,
the worker's engine stopped and started again, leave.

No course repo (the package's setting: its URL answers nothing), so the join command asks
for no course copy; the course bind mount's source (the state dir's course/) exists for the
worker anyway: it shares this machine's files.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom.hub import Hub, wait_ready
from mlflow_lab.classroom.stack import ONEOFF_LABEL, STUDENT_LABEL
from mlflow_lab.lab import images
from tests.e2e import worker_engine
from tests.e2e.classroom.conftest import (
    UP_TIMEOUT_S,
    Classroom,
    class_env,
    cleanup,
    docker,
    swarm_state,
)
from tests.e2e.classroom.test_bad_input import one_line_error
from tests.e2e.conftest import run_invoke
from tests.e2e.lab.test_bundle_classroom import NAMES, STEP_TIMEOUT_S, inspect
from tests.helpers import wait_until

LAB_SCRIPT = "/home/student/workspace/mlflow-tracking-lab/mlflow_tracking_lab.py"
SAVED_NOTEBOOK = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                            "nbformat_minor": 5}}  # fmt: skip
TRACKING_CALL = """
import json, mlflow
mlflow.set_tracking_uri("http://127.0.0.1:8080")
mlflow.set_experiment("still-here")
with mlflow.start_run() as run:
    mlflow.log_metric("x", 1.0)
print(json.dumps({"status": mlflow.get_run(run.info.run_id).info.status}))
"""
JOIN_LINE = re.compile(
    r"add a machine: on it, `invoke load FILE` of the class's bundle first \(`invoke bundle "
    r"--classroom` here makes it\), then run `(invoke classroom\.join [^`]+)`"
)
PROBE_SERVICE = f"mlflow-class-machines-{os.getpid()}-student"
WORKSPACE = "/home/student/workspace"
NOTEBOOK_IMAGE = next(name for name in NAMES if "/class-notebook:" in name)


@dataclass
class TwoMachines:
    env: dict[str, str]  # the manager's settings
    worker: worker_engine.WorkerEngine
    worker_env: dict[str, str]  # the worker machine's: its own state dirs, its engine
    up_output: str
    room: Classroom  # the class, as the other classroom tests drive it
    bundle: Path  # where the classroom bundle is written, then copied from

    def invoke(self, *args: str, on_worker: bool = False, check: bool = True) -> Any:
        env = self.worker_env if on_worker else self.env
        return run_invoke(env, *args, check=check, timeout=STEP_TIMEOUT_S)

    def join_command(self) -> list[str]:
        """The `invoke classroom.join ...` argv that `classroom.status` prints."""
        found = JOIN_LINE.search(self.invoke("classroom.status").stdout)
        assert found, "status prints the join command"
        return shlex.split(found.group(1))

    def nodes(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self.invoke("classroom.nodes", "--json").stdout)
        return found

    def worker_node(self) -> dict[str, Any] | None:
        return next((n for n in self.nodes() if n["hostname"] == self.worker.name), None)

    def login(self, user: str) -> Hub:
        return self.room.login(user, self.room.passwords()[user])

    def spawn_on_worker(self, session: Hub, user: str) -> None:
        session.api("POST", f"/users/{user}/server", ok=(400,))
        wait_ready(session, user, timeout=300)
        where = docker(
            "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}",
            f"{self.room.stack}-student-{user}",
        ).stdout.split()  # fmt: skip
        assert where == [self.worker.name], f"{user}'s server runs on {where}"
        # The hub calls a server ready only once the new one answers, even right after a
        # restart, while the old server lives on for seconds under the same name.
        status, _, text = session.request("GET", f"/user/{user}/api/status")
        assert status == 200, f"{user}'s server, ready by the hub, answers through it: {text}"

    def worker_container(self, user: str) -> str:
        service = f"{self.room.stack}-student-{user}"
        found = self.worker.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
        ).stdout.split()
        assert found, f"no container of {service} on the worker"
        return found[0]

    def backup(self, archive: Path) -> tuple[list[str], dict[str, Any], dict[str, bytes]]:
        """`classroom.backup` into `archive`: its warning lines, its manifest, its parts'
        bytes; nothing of its one-off services is left."""
        out = self.invoke("classroom.backup", "--output", str(archive)).stdout
        leftovers = docker("service", "ls", "-q", "--filter", f"label={ONEOFF_LABEL}").stdout
        assert not leftovers.strip(), "the backup's one-off services are gone"
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: tar.extractfile(m) for m in tar.getmembers()}
            parts = {name: member.read() for name, member in members.items() if member}
        warnings = [line for line in out.splitlines() if line.startswith("warning:")]
        return warnings, json.loads(parts.pop("manifest.json")), parts


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoMachines]:
    if swarm_state() != "inactive":
        pytest.skip("the engine is in a swarm already (someone else's): it is not ours to make")
    links, namespaces = worker_engine.links(), worker_engine.netns_names()
    gwbridge_before = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
    state = tmp_path_factory.mktemp("class-machines")
    stack = f"mlflow-class-machines-{os.getpid()}"
    with worker_engine.worker_engine() as worker:
        env = {
            **class_env(state, stack),
            "LAB_CLASS_ADVERTISE_ADDRESS": worker.manager_address,
        }
        # Nothing of the manager's state: `invoke load` and `join` need none of it.
        there = {
            **worker.env(env),
            "LAB_STATE_DIR": str(state / "worker-lab"),
            "LAB_CLASS_STATE_DIR": str(state / "worker-class"),
        }
        bundle = state / "class.bundle"
        try:
            up = run_invoke(env, "classroom.up", timeout=UP_TIMEOUT_S)
            room = Classroom(env, stack, state / "class")
            yield TwoMachines(env, worker, there, up.stdout, room, bundle)
        finally:
            bundle.unlink(missing_ok=True)
            docker("service", "rm", PROBE_SERVICE, check=False)
            cleanup(env, stack, "inactive", gwbridge_before)
    assert swarm_state() == "inactive", "the swarm this module made is gone"
    assert worker_engine.links() == links and worker_engine.netns_names() == namespaces


def test_up_makes_a_swarm_other_machines_join_and_status_prints_the_command(
    machines: TwoMachines,
) -> None:
    address = machines.worker.manager_address
    assert f"initialised a swarm other machines join at {address}" in machines.up_output
    # `up` says it too, with the bundle to load first.
    assert JOIN_LINE.search(machines.up_output.replace("Add a machine", "add a machine"))
    command = machines.join_command()
    token = docker("swarm", "join-token", "-q", "worker").stdout.strip()
    # The class has no course copy (its repo never answered): only the image to check.
    notebook = inspect([NOTEBOOK_IMAGE])[NOTEBOOK_IMAGE]["id"]
    assert command == [
        "invoke", "classroom.join", f"{address}:2377", token, "--image", notebook,
    ]  # fmt: skip
    report = json.loads(machines.invoke("classroom.status", "--json").stdout)
    assert shlex.split(report["join"]["command"]) == command


def test_a_machine_without_the_class_images_is_refused_and_stays_out(
    machines: TwoMachines,
) -> None:
    assert inspect(NAMES, machines.worker.host) == {}, "the worker starts with no image"
    refused = machines.invoke(*machines.join_command()[1:], on_worker=True, check=False)
    notebook = str(inspect([NOTEBOOK_IMAGE])[NOTEBOOK_IMAGE]["id"])
    assert one_line_error(refused) == (
        "error: this machine does not have the class's student image "
        f"({notebook.removeprefix('sha256:')[:12]}), so no student server could start here: "
        "`invoke bundle --classroom` on the manager makes the class's bundle; copy it here, "
        "`invoke load FILE` here, then run this again"
    )
    assert machines.worker.swarm_state() == "inactive"


def test_the_classroom_bundle_loads_on_the_worker_with_the_managers_image_ids(
    machines: TwoMachines,
) -> None:
    machines.invoke("bundle", "--classroom", "--output", str(machines.bundle))
    loaded = machines.invoke("load", str(machines.bundle), on_worker=True)
    assert "Loaded class.bundle (the lab's and the class's images)" in loaded.stdout
    there = inspect(NAMES, machines.worker.host)
    assert {n: e["id"] for n, e in there.items()} == {n: e["id"] for n, e in inspect(NAMES).items()}


def test_bad_joins_are_one_line_and_leave_the_worker_as_it_was(machines: TwoMachines) -> None:
    address = f"{machines.worker.manager_address}:2377"
    token = docker("swarm", "join-token", "-q", "worker").stdout.strip()
    wrong = token[:-6] + ("a" if token[-6] != "a" else "b") + token[-5:]
    image = ["--image", str(inspect([NOTEBOOK_IMAGE])[NOTEBOOK_IMAGE]["id"])]
    refused = machines.invoke("classroom.join", address, wrong, *image, on_worker=True, check=False)
    assert one_line_error(refused).startswith(
        f"error: the manager at {address} refused the token: copy it again, the worker token"
    )
    # This machine, on a port nothing listens on.
    nowhere = f"{machines.worker.manager_address}:9"
    nobody = machines.invoke("classroom.join", nowhere, token, *image, on_worker=True, check=False)
    assert one_line_error(nobody).startswith(
        f"error: cannot reach the class's manager at {nowhere} (connection refused): check"
    )
    assert machines.worker.swarm_state() == "inactive"


def test_a_worker_joins_with_the_printed_command_and_nodes_lists_both(
    machines: TwoMachines,
) -> None:
    command = machines.join_command()
    joined = machines.invoke(*command[1:], on_worker=True)
    assert f"This machine ({machines.worker.name}) joined the class's swarm as a worker" in (
        joined.stdout
    )
    nodes = machines.nodes()
    assert len(nodes) == 2
    manager = next(n for n in nodes if n["this_machine"])
    assert (manager["role"], manager["state"]) == ("manager (leader)", "ready")
    worker = machines.worker_node()
    assert worker and (worker["role"], worker["availability"]) == ("worker", "active")
    wait_until(
        lambda: (machines.worker_node() or {}).get("state") == "ready", 60, 1, "worker ready"
    )
    again = machines.invoke("classroom.join", command[2], "SWMTKN-1-a-b",
                            on_worker=True, check=False)  # fmt: skip
    assert "already a worker in a swarm" in one_line_error(again)
    # A bundle loads on a worker in the swarm too (after a rebuild on the manager, say).
    reloaded = machines.invoke("load", str(machines.bundle), on_worker=True)
    assert "images are already here, with the same IDs: nothing to load" in reloaded.stdout


def _probe_state(service: str) -> str:
    shown = docker("service", "ps", "--no-trunc", "--format", "{{.CurrentState}}: {{.Error}}",
                   service, check=False).stdout  # fmt: skip
    return shown.splitlines()[0] if shown.strip() else ""


def test_a_service_by_image_id_runs_on_the_worker_and_a_missing_id_is_refused(
    machines: TwoMachines,
) -> None:
    worker = machines.worker_node()
    assert worker, "the worker joined (the test before)"
    # As the hub spawns a student's server: by the image's ID, which Swarm never pulls.
    # An ID the worker lacks (the lab's base image is in no bundle) is refused there: a
    # worker with an older bundle never runs another image than the manager's.
    missing = str(inspect([images.local_base_tag()])[images.local_base_tag()]["id"])
    spec = ["--detach", "--no-resolve-image", "--name", PROBE_SERVICE,
            "--label", f"{STUDENT_LABEL}=probe", "--constraint", f"node.id=={worker['id']}",
            "--no-healthcheck", "--entrypoint", "sleep"]  # fmt: skip
    docker("service", "create", *spec, missing, "infinity")
    wait_until(lambda: "No such image" in _probe_state(PROBE_SERVICE), 60, 1, "refused there")
    docker("service", "rm", PROBE_SERVICE)
    wait_until(lambda: not _probe_state(PROBE_SERVICE), 60, 1, "probe removed")
    notebook = str(inspect([NOTEBOOK_IMAGE])[NOTEBOOK_IMAGE]["id"])
    docker("service", "create", *spec, notebook, "infinity")
    wait_until(lambda: _probe_state(PROBE_SERVICE).startswith("Running"), 120, 1, "running")
    # nodes counts it as a student server of the worker.
    wait_until(
        lambda: (machines.worker_node() or {}).get("students") == 1, 120, 1, "counted on worker"
    )
    # The worker has the bundle's student image: Swarm's readiness check runs there too.
    wait_until(
        lambda: (machines.worker_node() or {}).get("ready_for_students"), 240, 2, "worker ready"
    )
    shown = machines.invoke("classroom.nodes").stdout
    row = next(line for line in shown.splitlines() if line.startswith(machines.worker.name))
    assert row.split() == [machines.worker.name, "worker", "ready", "active", "yes", "1"]
    docker("service", "rm", PROBE_SERVICE)
    wait_until(lambda: not _probe_state(PROBE_SERVICE), 60, 1, "probe removed")


def test_students_spread_over_the_ready_machines_and_reach_the_hub_and_mlflow_there(
    machines: TwoMachines, tmp_path: Path
) -> None:
    """Both machines are ready and run no student: the first server goes to the worker
    (on a tie, the manager also runs the hub, MLflow and PostgreSQL), the next one to the
    machine with fewer, the manager."""
    roster = tmp_path / "class.csv"
    roster.write_text("alice\nbob\n")
    machines.invoke("classroom.students", "add", str(roster))
    session = machines.login("alice")
    machines.spawn_on_worker(session, "alice")
    # Alice's server (on the worker) reaches MLflow (on the manager) by name, as the lab does.
    done = machines.worker.docker(
        "exec", machines.worker_container("alice"), "python3", LAB_SCRIPT, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # ... and the hub reaches it: a notebook saved through the hub's proxy.
    status, _, text = session.request("PUT", "/user/alice/api/contents/saved.ipynb", SAVED_NOTEBOOK)
    assert status in (200, 201), text
    for _ in range(3):  # each restart: the worker again (pinned), answering once ready
        session.api("DELETE", "/users/alice/server")
        machines.spawn_on_worker(session, "alice")
    status, _, text = session.request("GET", "/user/alice/api/contents/saved.ipynb")
    assert status == 200, text
    machines.room.spawn(machines.login("bob"), "bob")
    counts = {n["role"]: n["students"] for n in machines.nodes()}
    assert counts == {"manager (leader)": 1, "worker": 1}, "the one with fewer students"


def test_a_hub_restart_logs_nobody_out_and_keeps_the_running_servers(
    machines: TwoMachines,
) -> None:
    """What a rebuilt student image costs: its new ID changes the hub's environment, so
    `classroom.up` restarts the hub. The login cookie is signed with the cookie secret
    and the sessions are in the hub's database, both on its volume."""
    room = machines.room
    browser = Hub(room.url)
    assert browser.login("alice", room.passwords()["alice"])
    label = f"label=com.docker.swarm.service.name={room.stack}_hub"
    before = docker("ps", "-q", "--filter", label).stdout.split()
    docker("service", "update", "--detach", "--force", f"{room.stack}_hub")

    def restarted() -> bool:
        now = docker("ps", "-q", "--filter", label).stdout.split()
        return bool(now) and not set(now) & set(before) and room.admin().answers()

    wait_until(restarted, 180, 1, "a new hub answering")
    status, final, _ = browser.request("GET", "/hub/home")
    assert (status, final) == (200, f"{room.url}/hub/home"), "still logged in"
    server = (room.admin().api("GET", "/users/alice")["servers"] or {}).get("", {})
    assert server.get("ready"), "alice's server kept running through the restart"


def test_a_backup_holds_the_notebook_of_a_student_whose_server_runs_on_the_worker(
    machines: TwoMachines, tmp_path: Path
) -> None:
    saved = machines.worker.docker(
        "exec", machines.worker_container("alice"), "cat", f"{WORKSPACE}/saved.ipynb"
    )
    assert saved.returncode == 0 and saved.stdout, saved.stderr
    warnings, manifest, parts = machines.backup(tmp_path / "class.backup.tar.gz")
    assert warnings == [], "both machines read"
    assert manifest["not_included"] == {}
    assert manifest["students"] == ["alice", "bob"]
    part = manifest["parts"]["workspace-alice.tar"]
    assert (part["student"], part["machine"]) == ("alice", machines.worker.name)
    assert "workspace-bob.tar" in manifest["parts"], "bob's, on the manager, as before"
    with tarfile.open(fileobj=io.BytesIO(parts["workspace-alice.tar"])) as workspace:
        notebook = workspace.extractfile("./saved.ipynb")
        assert notebook is not None and notebook.read().decode() == saved.stdout


def test_a_worker_gone_fails_its_students_start_at_once_and_brings_their_work_back(
    machines: TwoMachines, tmp_path: Path
) -> None:
    session = machines.login("alice")
    machines.worker.stop_engine()
    try:
        wait_until(
            lambda: (machines.worker_node() or {}).get("state") == "down", 120, 1, "worker down"
        )
        worker = machines.worker_node()
        assert worker and worker["not_ready_because"].startswith("not reachable"), worker
        # The hub notices that Alice's server went with its machine (at the latest when she
        # asks for it again: a start of a running server is refused with 400).
        deadline = time.monotonic() + 120
        while True:
            started = time.monotonic()
            if session.request("POST", "/hub/api/users/alice/server")[0] != 400:
                break
            assert started < deadline, "the hub still takes Alice's server for running"
            time.sleep(2)
        status, _, text = session.request("GET", "/hub/api/users/alice/server/progress")
        assert status == 200, text
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        assert events and events[-1].get("failed"), events
        assert events[-1]["message"] == (
            f"Spawn failed: Your server's machine ({machines.worker.name}) is not reachable "
            "(Swarm says it is down); your work is kept on it. Ask your instructor to bring "
            "it back (`invoke classroom.nodes` shows why)."
        )
        assert time.monotonic() - started < 30, "no spinner until the start timeout"
        # Bob, on the manager, keeps working.
        bob = machines.room.server_container("bob")
        tracked = machines.room.json_in(bob, TRACKING_CALL)
        assert tracked["status"] == "FINISHED"
        # A backup now has everything but Alice's workspace, and says so in one line.
        warnings, manifest, _ = machines.backup(tmp_path / "down.backup.tar.gz")
        assert len(warnings) == 1, warnings
        assert f"alice on {machines.worker.name} (it is down)" in warnings[0]
        assert manifest["not_included"] == {
            "alice": {"machine": machines.worker.name, "why": "it is down"}
        }
        assert "workspace-alice.tar" not in manifest["parts"]
        assert "workspace-bob.tar" in manifest["parts"]
    finally:
        machines.worker.start_engine()
    wait_until(
        lambda: (machines.worker_node() or {}).get("ready_for_students"), 240, 2, "worker back"
    )
    machines.spawn_on_worker(session, "alice")
    status, _, text = session.request("GET", "/user/alice/api/contents/saved.ipynb")
    assert status == 200, text
    # A restore of that backup: Bob's workspace is written on the manager; Alice keeps hers
    # on the worker, and the hub still knows it is there.
    machines.invoke("classroom.restore", str(tmp_path / "down.backup.tar.gz"), "--yes")
    session = machines.login("alice")
    machines.spawn_on_worker(session, "alice")
    status, _, text = session.request("GET", "/user/alice/api/contents/saved.ipynb")
    assert status == 200, text
    session.api("DELETE", "/users/alice/server")
    # Bob's server runs on the manager (its engine has his container), with his work.
    bob = machines.room.spawn(machines.login("bob"), "bob")
    assert machines.room.json_in(bob, TRACKING_CALL)["status"] == "FINISHED"


def test_deleting_the_data_of_a_student_on_the_worker_empties_her_volume_there(
    machines: TwoMachines,
) -> None:
    volume = f"{machines.room.stack}_workspace-alice"
    out = machines.invoke("classroom.students", "remove", "alice", "--delete-data").stdout
    assert f"the empty volume {volume} stays on {machines.worker.name}" in out
    notebook = str(inspect([NOTEBOOK_IMAGE])[NOTEBOOK_IMAGE]["id"])
    left = machines.worker.docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/v", "--entrypoint", "ls",
        notebook, "-A", "/v",
    )  # fmt: skip
    assert (left.returncode, left.stdout) == (0, ""), left.stderr


def test_the_manager_refuses_to_leave_and_the_worker_leaves(machines: TwoMachines) -> None:
    refused = machines.invoke("classroom.leave", check=False)
    assert one_line_error(refused).startswith(
        "error: this Docker engine is the class's swarm manager, not a worker: run `invoke "
        "classroom.leave` on the worker machine"
    )
    assert swarm_state() == "active"
    left = machines.invoke("classroom.leave", on_worker=True)
    assert f"This machine ({machines.worker.name}) left the class's swarm" in left.stdout
    assert machines.worker.swarm_state() == "inactive"
    wait_until(lambda: (machines.worker_node() or {}).get("state") == "down", 90, 1, "worker down")
    shown = machines.invoke("classroom.nodes").stdout
    assert f"{machines.worker.name} is down (it left, or its engine stopped)" in shown
    # The class itself did not notice: it still answers on the manager.
    assert json.loads(machines.invoke("classroom.status", "--json").stdout)["deployed"]
