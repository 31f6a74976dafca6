"""A class on two machines: a second Docker engine (tests/e2e/worker_engine.py) stands in
for a student PC that joins the class's swarm with the command `classroom.status` prints.

A class of its own (not the package's, whose swarm is on loopback): `classroom.up` makes
a swarm advertising LAB_CLASS_ADVERTISE_ADDRESS, the address the worker reaches this
machine at. Runs before the module that deploys the package's class (file order), while
the engine is in no swarm; the engine is left as found. The tests run in order on one
class and one worker: join, nodes, students placed on the machines ready for them, the
worker's engine stopped and started again, leave.

No course repo (the package's setting: its URL answers nothing). The course bind mount's
source (the state dir's course/) exists for the worker anyway: it shares this machine's
files, as a real worker would once the instructor copied the course there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom.hub import Hub, wait_ready
from mlflow_lab.classroom.stack import STUDENT_LABEL
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
from tests.helpers import wait_until

LAB_SCRIPT = "/home/student/workspace/mlflow-tracking-lab/mlflow_tracking_lab.py"
NOTEBOOK = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                            "nbformat_minor": 5}}  # fmt: skip
TRACKING_CALL = """
import json, mlflow
mlflow.set_tracking_uri("http://127.0.0.1:8080")
mlflow.set_experiment("still-here")
with mlflow.start_run() as run:
    mlflow.log_metric("x", 1.0)
print(json.dumps({"status": mlflow.get_run(run.info.run_id).info.status}))
"""
JOIN_LINE = re.compile(r"add a machine: on it, run `(invoke classroom\.join [^`]+)`")
PROBE_SERVICE = f"mlflow-class-machines-{os.getpid()}-student"


@dataclass
class TwoMachines:
    env: dict[str, str]  # the manager's settings
    worker: worker_engine.WorkerEngine
    up_output: str
    room: Classroom  # the class, as the other classroom tests drive it

    def invoke(self, *args: str, on_worker: bool = False, check: bool = True) -> Any:
        env = self.worker.env(self.env) if on_worker else self.env
        return run_invoke(env, *args, check=check, timeout=600)

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

    def worker_container(self, user: str) -> str:
        service = f"{self.room.stack}-student-{user}"
        found = self.worker.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
        ).stdout.split()
        assert found, f"no container of {service} on the worker"
        return found[0]


def notebook_image(machines: TwoMachines) -> str:
    """The student image as the hub spawns it (its LAB_CLASS_NOTEBOOK_IMAGE)."""
    env = docker(
        "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        f"{machines.room.stack}_hub",
    ).stdout  # fmt: skip
    found = [
        e.split("=", 1)[1] for e in json.loads(env) if e.startswith("LAB_CLASS_NOTEBOOK_IMAGE=")
    ]
    assert found, env
    return found[0]


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
        try:
            up = run_invoke(env, "classroom.up", timeout=UP_TIMEOUT_S)
            yield TwoMachines(env, worker, up.stdout, Classroom(env, stack, state / "class"))
        finally:
            docker("service", "rm", PROBE_SERVICE, check=False)
            cleanup(env, stack, "inactive", gwbridge_before)
    assert swarm_state() == "inactive", "the swarm this module made is gone"
    assert worker_engine.links() == links and worker_engine.netns_names() == namespaces


def test_up_makes_a_swarm_other_machines_join_and_status_prints_the_command(
    machines: TwoMachines,
) -> None:
    address = machines.worker.manager_address
    assert f"initialised a swarm other machines join at {address}" in machines.up_output
    shown = machines.invoke("classroom.status").stdout
    found = JOIN_LINE.search(shown)
    assert found, shown
    command = shlex.split(found.group(1))
    token = docker("swarm", "join-token", "-q", "worker").stdout.strip()
    assert command == ["invoke", "classroom.join", f"{address}:2377", token]
    report = json.loads(machines.invoke("classroom.status", "--json").stdout)
    assert report["join"]["command"] == found.group(1)


def test_bad_joins_are_one_line_and_leave_the_worker_as_it_was(machines: TwoMachines) -> None:
    address = f"{machines.worker.manager_address}:2377"
    token = docker("swarm", "join-token", "-q", "worker").stdout.strip()
    wrong = token[:-6] + ("a" if token[-6] != "a" else "b") + token[-5:]
    refused = machines.invoke("classroom.join", address, wrong, on_worker=True, check=False)
    assert one_line_error(refused).startswith(
        f"error: the manager at {address} refused the token: copy it again, the worker token"
    )
    # This machine, on a port nothing listens on.
    nowhere = f"{machines.worker.manager_address}:9"
    nobody = machines.invoke("classroom.join", nowhere, token, on_worker=True, check=False)
    assert one_line_error(nobody).startswith(
        f"error: cannot reach the class's manager at {nowhere} (connection refused): check"
    )
    assert machines.worker.swarm_state() == "inactive"


def test_a_worker_joins_with_the_printed_command_and_nodes_lists_both(
    machines: TwoMachines,
) -> None:
    command = JOIN_LINE.search(machines.invoke("classroom.status").stdout)
    assert command
    joined = machines.invoke(*shlex.split(command.group(1))[1:], on_worker=True)
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
    again = machines.invoke("classroom.join", command.group(1).split()[2], "SWMTKN-1-a-b",
                            on_worker=True, check=False)  # fmt: skip
    assert "already a worker in a swarm" in one_line_error(again)


def test_nodes_count_the_student_servers_each_machine_runs(machines: TwoMachines) -> None:
    worker = machines.worker_node()
    assert worker, "the worker joined (the test before)"
    # A service labelled as the hub labels a student's server, placed on the worker; the
    # class's own servers stay on the manager, which has their image.
    image = images.local_base_tag()
    if docker("image", "inspect", image, check=False).returncode != 0:
        image = f"mlflow-lab/class-db:{machines.env['LAB_IMAGE_TAG']}"
    carried = worker_engine.carry_image(machines.worker, image)
    assert carried.returncode == 0, carried.stderr
    docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", PROBE_SERVICE,
        "--label", f"{STUDENT_LABEL}=probe", "--constraint", f"node.id=={worker['id']}",
        "--entrypoint", "sleep", image, "infinity",
    )  # fmt: skip
    wait_until(
        lambda: (machines.worker_node() or {}).get("students") == 1, 120, 1, "counted on worker"
    )
    shown = machines.invoke("classroom.nodes").stdout
    row = next(line for line in shown.splitlines() if line.startswith(machines.worker.name))
    # Its readiness check cannot run there: the worker has not got the student image.
    assert row.split() == [machines.worker.name, "worker", "ready", "active", "no", "1"]
    docker("service", "rm", PROBE_SERVICE)


def test_a_worker_without_the_student_image_takes_no_student(
    machines: TwoMachines, tmp_path: Path
) -> None:
    image = notebook_image(machines)
    # Swarm's own answer: the readiness task was rejected there (after a pull that fails:
    # there is no registry).
    wait_until(
        lambda: f"missing the student image (Docker: No such image: {image}"
        in (machines.worker_node() or {})["not_ready_because"],
        180, 2, "the worker found without the student image",
    )  # fmt: skip
    assert not (machines.worker_node() or {})["ready_for_students"]
    shown = machines.invoke("classroom.nodes").stdout
    assert f"{machines.worker.name} takes no student server: it is missing the student" in shown
    roster = tmp_path / "class.csv"
    roster.write_text("alice\nbob\n")
    machines.invoke("classroom.students", "add", str(roster))
    machines.room.spawn(machines.login("alice"), "alice")
    counts = {n["role"]: n["students"] for n in machines.nodes()}
    assert counts == {"manager (leader)": 1, "worker": 0}


def test_a_worker_with_the_image_takes_the_next_student_who_reaches_the_hub_and_mlflow(
    machines: TwoMachines,
) -> None:
    carried = worker_engine.carry_image(machines.worker, notebook_image(machines))
    assert carried.returncode == 0, carried.stderr
    wait_until(
        lambda: (machines.worker_node() or {}).get("ready_for_students"), 240, 2, "worker ready"
    )
    session = machines.login("bob")
    machines.spawn_on_worker(session, "bob")
    counts = {n["role"]: n["students"] for n in machines.nodes()}
    assert counts == {"manager (leader)": 1, "worker": 1}, "the one with fewer students"
    # Bob's server (on the worker) reaches MLflow (on the manager) by name, as the lab does.
    done = machines.worker.docker(
        "exec", machines.worker_container("bob"), "python3", LAB_SCRIPT, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # ... and the hub reaches it: a notebook saved through the hub's proxy.
    status, _, text = session.request("PUT", "/user/bob/api/contents/saved.ipynb", NOTEBOOK)
    assert status in (200, 201), text
    session.api("DELETE", "/users/bob/server")
    machines.spawn_on_worker(session, "bob")
    status, _, text = session.request("GET", "/user/bob/api/contents/saved.ipynb")
    assert status == 200, text


def test_a_worker_gone_fails_its_students_start_at_once_and_brings_their_work_back(
    machines: TwoMachines,
) -> None:
    session = machines.login("bob")
    machines.worker.stop_engine()
    try:
        wait_until(
            lambda: (machines.worker_node() or {}).get("state") == "down", 120, 1, "worker down"
        )
        worker = machines.worker_node()
        assert worker and worker["not_ready_because"].startswith("not reachable"), worker
        # The hub notices that Bob's server went with its machine (at the latest when he
        # asks for it again: a start of a running server is refused with 400).
        deadline = time.monotonic() + 120
        while True:
            started = time.monotonic()
            if session.request("POST", "/hub/api/users/bob/server")[0] != 400:
                break
            assert started < deadline, "the hub still takes Bob's server for running"
            time.sleep(2)
        status, _, text = session.request("GET", "/hub/api/users/bob/server/progress")
        assert status == 200, text
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        assert events and events[-1].get("failed"), events
        assert events[-1]["message"] == (
            f"Spawn failed: Your server's machine ({machines.worker.name}) is not reachable "
            "(Swarm says it is down); your work is kept on it. Ask your instructor to bring "
            "it back (`invoke classroom.nodes` shows why)."
        )
        assert time.monotonic() - started < 30, "no spinner until the start timeout"
        # Alice, on the manager, keeps working.
        alice = machines.room.server_container("alice")
        tracked = machines.room.json_in(alice, TRACKING_CALL)
        assert tracked["status"] == "FINISHED"
    finally:
        machines.worker.start_engine()
    wait_until(
        lambda: (machines.worker_node() or {}).get("ready_for_students"), 240, 2, "worker back"
    )
    machines.spawn_on_worker(session, "bob")
    status, _, text = session.request("GET", "/user/bob/api/contents/saved.ipynb")
    assert status == 200, text
    session.api("DELETE", "/users/bob/server")


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
