"""The class's machines (join, leave, nodes, the join command), with the engine faked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from mlflow_lab.classroom import machines, settings, stack, swarm
from mlflow_lab.classroom import tasks as class_tasks
from mlflow_lab.core import ports
from mlflow_lab.core.errors import LabError
from tests.helpers import FakeDocker, isolate_settings

TOKEN = "SWMTKN-1-" + "a1" * 25 + "-" + "b" * 25
MANAGER_ID = "m" * 25
WORKER_ID = "w" * 25
IMAGE = "sha256:" + "5e" * 32


def info(state: str, manager: bool = False, address: str = "", name: str = "pc-7") -> str:
    managers = [{"NodeID": MANAGER_ID, "Addr": f"{address or '10.0.0.1'}:2377"}]
    swarm_part: dict[str, Any] = {
        "LocalNodeState": state,
        "ControlAvailable": manager,
        "NodeID": MANAGER_ID if manager else (WORKER_ID if state != "inactive" else ""),
        "NodeAddr": address,
        "RemoteManagers": managers if state == "active" else None,
    }
    return json.dumps({"Name": name, "Swarm": swarm_part})


@pytest.fixture(autouse=True)
def image_here(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker image inspect --format \{\{\.Id\}\} sha256:", f"{IMAGE}\n")


@pytest.fixture
def reachable(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    probed: list[tuple[str, int]] = []

    def unreachable(host: str, port: int, timeout: float) -> str:
        probed.append((host, port))
        return ""

    monkeypatch.setattr(ports, "unreachable", unreachable)
    return probed


# -- join ----------------------------------------------------------------------------------


def test_join_joins_the_manager_given_and_says_as_what(
    fake_docker: FakeDocker, reachable: list[tuple[str, int]]
) -> None:
    fake_docker.on(r"^docker info", [info("inactive"), info("active", address="10.0.0.7")])
    fake_docker.on(r"^docker swarm join ", stdout="This node joined a swarm as a worker.\n")
    joined = machines.join("10.0.0.1:2377", TOKEN, IMAGE)
    assert joined.active and not joined.manager and joined.hostname == "pc-7"
    assert reachable == [("10.0.0.1", 2377)]
    assert fake_docker.matching("swarm join")[0].argv == [
        "docker", "swarm", "join", "--token", TOKEN, "10.0.0.1:2377",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", 2377)),
        (" teacher-pc:2400 ", ("teacher-pc", 2400)),
        ("[fd00::1]:2377", ("fd00::1", 2377)),
        ("fd00::1", ("fd00::1", 2377)),
    ],
)
def test_the_manager_address_may_leave_out_the_port(given: str, expected: tuple[str, int]) -> None:
    assert machines.parse_manager(given) == expected


@pytest.mark.parametrize(
    ("manager", "token", "says"),
    [
        ("10.0.0.1:abc", TOKEN, "MANAGER '10.0.0.1:abc' is not an address: give it as HOST:PORT"),
        ("http://10.0.0.1", TOKEN, "MANAGER 'http://10.0.0.1' is not an address"),
        ("10.0.0.1:70000", TOKEN, "port 70000 is not a port number"),
        ("10.0.0.1", "hunter2", "TOKEN 'hunter2' is not a swarm join token"),
    ],
)
def test_bad_arguments_are_refused_before_the_engine_is_asked(
    fake_docker: FakeDocker, manager: str, token: str, says: str
) -> None:
    with pytest.raises(LabError, match=says.replace("(", r"\(")):
        machines.join(manager, token, IMAGE)
    assert fake_docker.calls == []


@pytest.mark.parametrize(
    ("state", "manager", "says"),
    [
        ("active", False, "already a worker in a swarm (managed at 10.0.0.1:2377): `invoke"),
        ("active", True, "manages a swarm of its own, so it cannot join a class as a worker"),
        ("pending", False, "swarm is pending: `invoke classroom.leave` first"),
    ],
)
def test_an_engine_in_a_swarm_already_is_refused(
    fake_docker: FakeDocker, state: str, manager: bool, says: str
) -> None:
    fake_docker.on(r"^docker info", info(state, manager))
    with pytest.raises(LabError, match=says.replace("(", r"\(").replace(")", r"\)")):
        machines.join("10.0.0.1", TOKEN, IMAGE)
    assert fake_docker.matching("swarm join") == []


def test_an_unreachable_manager_is_one_line_and_nothing_is_tried(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker.on(r"^docker info", info("inactive"))
    monkeypatch.setattr(ports, "unreachable", lambda host, port, timeout: "connection refused")
    with pytest.raises(LabError) as refused:
        machines.join("10.0.0.1", TOKEN, IMAGE)
    assert str(refused.value).startswith(
        "cannot reach the class's manager at 10.0.0.1:2377 (connection refused): check the "
        "address (`invoke classroom.status` on the manager prints the whole command)"
    )
    assert fake_docker.matching("swarm join") == []


def test_a_refused_token_says_to_copy_it_again(
    fake_docker: FakeDocker, reachable: list[tuple[str, int]]
) -> None:
    fake_docker.on(r"^docker info", info("inactive"))
    fake_docker.fail(
        r"^docker swarm join ",
        "Error response from daemon: rpc error: code = InvalidArgument desc = A valid join "
        "token is necessary to join this cluster",
    )
    with pytest.raises(LabError, match=r"^the manager at 10.0.0.1:2377 refused the token: copy"):
        machines.join("10.0.0.1", TOKEN, IMAGE)
    assert fake_docker.matching("swarm leave") == [], "nothing to undo"


def test_a_join_that_times_out_is_called_off(
    fake_docker: FakeDocker, reachable: list[tuple[str, int]]
) -> None:
    fake_docker.on(r"^docker info", [info("inactive"), info("pending")])
    fake_docker.fail(
        r"^docker swarm join ",
        "Error response from daemon: Timeout was reached before node joined. The attempt to "
        "join the swarm will continue in the background.",
    )
    fake_docker.on(r"^docker swarm leave --force$", stdout="Node left the swarm.\n")
    with pytest.raises(LabError, match=r"did not take this engine in within 20 s \(the attempt"):
        machines.join("10.0.0.1", TOKEN, IMAGE)
    assert len(fake_docker.matching("^docker swarm leave --force$")) == 1


# -- what the machine must have before it joins --------------------------------------------


def test_a_machine_without_the_class_image_is_refused_before_it_joins(
    fake_docker: FakeDocker, reachable: list[tuple[str, int]]
) -> None:
    fake_docker.on(r"^docker info", info("inactive"))
    fake_docker.fail(r"^docker image inspect .*sha256:", "Error: No such image: sha256:5e5e")
    with pytest.raises(LabError) as refused:
        machines.join("10.0.0.1", TOKEN, IMAGE)
    assert str(refused.value) == (
        "this machine does not have the class's student image (5e5e5e5e5e5e), so no student "
        "server could start here: `invoke bundle --classroom` on the manager makes the "
        "class's bundle; copy it here, `invoke load FILE` here, then run this again"
    )
    assert fake_docker.matching("swarm join") == [] and reachable == []


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("", "`classroom.join` needs --image, the class's student image, to check that this"),
        ("mlflow-lab/class-notebook:latest", "is not an image ID (sha256:...): `invoke classroom"),
    ],
)
def test_the_image_to_check_is_an_id_the_manager_printed(
    fake_docker: FakeDocker, image: str, says: str
) -> None:
    fake_docker.on(r"^docker info", info("inactive"))
    with pytest.raises(LabError, match=re.escape(says)):
        machines.join("10.0.0.1", TOKEN, image)
    assert fake_docker.matching("swarm join") == []


def test_a_machine_without_the_course_copy_is_told_where_it_belongs(
    fake_docker: FakeDocker, reachable: list[tuple[str, int]], tmp_path: Path
) -> None:
    fake_docker.on(r"^docker info", info("inactive"))
    copy = tmp_path / "class-state" / "course" / "course-0123456789.git"
    with pytest.raises(LabError) as refused:
        machines.join("10.0.0.1", TOKEN, IMAGE, str(copy))
    assert str(refused.value) == (
        f"this machine does not have the class's course copy at {copy}, where the student "
        "servers read it: `invoke load FILE` of the class's bundle puts it there when "
        f"LAB_CLASS_STATE_DIR here is {tmp_path / 'class-state'} (as on the manager; set it "
        "in .env), then run this again"
    )
    assert fake_docker.matching("swarm join") == []


def test_a_machine_with_the_image_and_the_course_copy_joins(
    fake_docker: FakeDocker, reachable: list[tuple[str, int]], tmp_path: Path
) -> None:
    fake_docker.on(r"^docker info", [info("inactive"), info("active", address="10.0.0.7")])
    fake_docker.on(r"^docker swarm join ", stdout="This node joined a swarm as a worker.\n")
    copy = tmp_path / "course-0123456789.git"
    copy.mkdir()
    (copy / "HEAD").write_text("ref: refs/heads/dev\n")
    assert machines.join("10.0.0.1", TOKEN, IMAGE, str(copy)).active
    assert fake_docker.matching(f"image inspect --format {{{{.Id}}}} {IMAGE}$")


# -- leave ---------------------------------------------------------------------------------


def test_a_worker_leaves_without_force(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active"))
    fake_docker.on(r"^docker swarm leave$", stdout="Node left the swarm.\n")
    assert machines.leave().hostname == "pc-7"
    assert len(fake_docker.matching("swarm leave")) == 1


def test_a_pending_join_is_called_off_by_leave(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("pending"))
    fake_docker.on(r"^docker swarm leave --force$", stdout="Node left the swarm.\n")
    machines.leave()
    assert len(fake_docker.matching("swarm leave --force")) == 1


def test_the_manager_refuses_to_leave_and_says_what_to_do(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    with pytest.raises(LabError) as refused:
        machines.leave()
    assert str(refused.value) == (
        "this Docker engine is the class's swarm manager, not a worker: run `invoke "
        "classroom.leave` on the worker machine that should leave (`invoke classroom.nodes` "
        "lists them); the manager's swarm ends after `invoke classroom.down`, with "
        "`docker swarm leave --force`"
    )
    assert fake_docker.matching("swarm leave") == []


def test_leave_outside_a_swarm_says_so(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("inactive"))
    with pytest.raises(LabError, match="not in a swarm: nothing to leave"):
        machines.leave()


# -- nodes ---------------------------------------------------------------------------------


def ready_task(node_id: str, state: str, error: str = "", index: int = 10) -> dict[str, Any]:
    """A task of the class's `ready` service, as `docker inspect` shows it."""
    return {
        "NodeID": node_id,
        "DesiredState": "running" if state in ("running", "pending") else "shutdown",
        "Status": {"State": state, "Err": error},
        "Version": {"Index": index},
    }


def node(node_id: str, hostname: str, manager_status: str, status: str, me: bool) -> str:
    return json.dumps(
        {
            "ID": node_id,
            "Hostname": hostname,
            "ManagerStatus": manager_status,
            "Status": status,
            "Availability": "Active",
            "Self": me,
        }
    )


def teacher_and_pc7(fake_docker: FakeDocker, worker_status: str) -> None:
    """`docker node ls`: this machine, the manager "teacher", and the worker "pc-7"."""
    fake_docker.on(
        r"^docker node ls",
        "\n".join(
            [
                node(MANAGER_ID, "teacher", "Leader", "Ready", True),
                node(WORKER_ID, "pc-7", "", worker_status, False),
            ]
        ),
    )


def test_nodes_count_each_ones_student_servers(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    teacher_and_pc7(fake_docker, "Down")
    fake_docker.on(
        rf"^docker service ls --filter label={stack.STUDENT_LABEL} ",
        '{"Name": "c-student-alice"}\n{"Name": "c-student-bob"}\n{"Name": "c-student-eve"}\n',
    )
    fake_docker.on(
        r"^docker service ps -q --no-trunc --filter desired-state=running "
        r"c-student-alice c-student-bob c-student-eve$",
        "t1\nt2\nt3\n",
    )
    fake_docker.on(
        r"^docker inspect --format \{\{.NodeID\}\} t1 t2 t3$",
        f"{MANAGER_ID}\n" * 2 + f"{WORKER_ID}\n",
    )
    fake_docker.on(r"^docker service ps -q --no-trunc c_ready$", "r1\nr2\n")
    fake_docker.on(
        r"^docker inspect r1 r2$",
        json.dumps([ready_task(MANAGER_ID, "running"), ready_task(WORKER_ID, "running")]),
    )
    found = machines.nodes("c")
    assert [(n["hostname"], n["role"], n["state"], n["students"]) for n in found] == [
        ("teacher", "manager (leader)", "ready", 2),
        ("pc-7", "worker", "down", 1),
    ]
    # Its readiness task still "runs" as far as the manager knows: down wins.
    assert [(n["ready_for_students"], n["not_ready_because"]) for n in found] == [
        (True, ""),
        (False, "not reachable (Swarm says it is down)"),
    ]
    shown = machines.format_nodes(found).splitlines()
    assert shown[0].split() == [
        "node", "role", "state", "availability", "ready", "for", "students", "student", "servers",
    ]  # fmt: skip
    assert shown[1].split() == [
        "teacher",
        "(this",
        "machine)",
        "manager",
        "(leader)",
        "ready",
        "active",
        "yes",
        "2",
    ]
    assert shown[-1] == (
        f"pc-7 is down (it left, or its engine stopped): `docker node rm {WORKER_ID}` "
        "removes it from this list"
    )


def test_nodes_without_student_servers_ask_no_more(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    fake_docker.on(r"^docker node ls", node(MANAGER_ID, "teacher", "Leader", "Ready", True))
    fake_docker.on(r"^docker service ls", "")
    fake_docker.on(r"^docker service ps -q --no-trunc c_ready$", "r1\n")
    fake_docker.on(r"^docker inspect r1$", json.dumps([ready_task(MANAGER_ID, "running")]))
    assert [n["students"] for n in machines.nodes("c")] == [0]
    assert fake_docker.matching("--filter desired-state|inspect --format") == []


def test_nodes_say_why_a_machine_takes_no_students(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    teacher_and_pc7(fake_docker, "Ready")
    fake_docker.on(r"^docker service ls", "")
    fake_docker.on(r"^docker service ps -q --no-trunc c_ready$", "r1\nr2\n")
    missing = "No such image: mlflow-lab/class-notebook:latest"
    fake_docker.on(
        r"^docker inspect r1 r2$",
        json.dumps([ready_task(MANAGER_ID, "running"), ready_task(WORKER_ID, "rejected", missing)]),
    )
    found = machines.nodes("c")
    assert [n["ready_for_students"] for n in found] == [True, False]
    shown = machines.format_nodes(found).splitlines()
    assert shown[2].split()[:5] == ["pc-7", "worker", "ready", "active", "no"]
    assert shown[-1] == (
        f"pc-7 takes no student server: it is missing the student image (Docker: {missing})"
    )


def test_nodes_without_a_class_say_so(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    fake_docker.on(r"^docker node ls", node(MANAGER_ID, "teacher", "Leader", "Ready", True))
    fake_docker.on(r"^docker service ls", "")
    fake_docker.fail(r"^docker service ps -q --no-trunc c_ready$", "no such service: c_ready")
    (found,) = machines.nodes("c")
    assert not found["ready_for_students"]
    assert found["not_ready_because"] == machines.NOT_DEPLOYED


def test_nodes_on_a_worker_say_to_run_them_on_the_manager(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active"))
    with pytest.raises(LabError, match=r"swarm worker, not the class's manager: run `invoke cl"):
        machines.nodes("c")
    assert fake_docker.matching("node ls") == []


# -- the join command ----------------------------------------------------------------------


def test_the_join_command_names_the_managers_address_and_worker_token(
    fake_docker: FakeDocker,
) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    fake_docker.on(r"^docker swarm join-token -q worker$", f"{TOKEN}\n")
    join = swarm.join_command(swarm.swarm_state())
    assert join == {"command": f"invoke classroom.join 10.0.0.1:2377 {TOKEN}", "why_not": ""}


def test_a_loopback_swarm_has_no_join_command_but_says_how(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info", info("active", manager=True, address="127.0.0.1"))
    join = swarm.join_command(swarm.swarm_state())
    assert join["command"] == ""
    assert join["why_not"].startswith(
        "no other machine can join: the swarm advertises loopback; set "
        "LAB_CLASS_ADVERTISE_ADDRESS to this machine's address"
    )
    assert fake_docker.matching("join-token") == [], "no token handed out for nothing"


def _class(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.ClassSettings:
    isolate_settings(monkeypatch, tmp_path)
    return settings.load(env_file=tmp_path / "no.env")


def _manager(fake_docker: FakeDocker, hub_env: list[str] | None) -> None:
    """This engine manages a swarm at 10.0.0.1; the hub's service runs with `hub_env`
    (None: it is not deployed)."""
    fake_docker.on(r"^docker info", info("active", manager=True, address="10.0.0.1"))
    fake_docker.on(r"^docker swarm join-token -q worker$", f"{TOKEN}\n")
    if hub_env is None:
        fake_docker.fail(r"^docker service inspect ", "Error: no such service: x_hub")
    else:
        fake_docker.on(r"^docker service inspect .*_hub$", json.dumps(hub_env))


def test_the_join_command_carries_what_the_running_hub_spawns(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    room = _class(monkeypatch, tmp_path)
    env = [
        f"LAB_CLASS_NOTEBOOK_IMAGE={IMAGE}",
        "LAB_CLASS_COURSE_DIR=/srv/my class/course",
        "LAB_COURSE_CACHE=course-0123456789.git",
        "LAB_OTHER=a=b",
    ]
    _manager(fake_docker, env)
    join = stack.join_command(room, swarm.swarm_state())
    assert join["command"] == (
        f"invoke classroom.join 10.0.0.1:2377 {TOKEN} --image {IMAGE} "
        "--course '/srv/my class/course/course-0123456789.git'"
    )


def test_a_class_without_a_course_copy_has_no_course_to_check(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    room = _class(monkeypatch, tmp_path)
    _manager(fake_docker, [f"LAB_CLASS_NOTEBOOK_IMAGE={IMAGE}", "LAB_CLASS_COURSE_DIR=/x/course",
                           "LAB_COURSE_CACHE="])  # fmt: skip
    command = stack.join_command(room, swarm.swarm_state())["command"]
    assert command.endswith(f"{TOKEN} --image {IMAGE}")


@pytest.mark.parametrize(
    "hub_env",
    [None, ["LAB_CLASS_NOTEBOOK_IMAGE=mlflow-lab/class-notebook:latest"]],
    ids=["not deployed", "deployed by tag, by an older version"],
)
def test_a_class_not_deployed_joins_with_what_up_would_deploy(
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    hub_env: list[str] | None,
) -> None:
    room = _class(monkeypatch, tmp_path)
    _manager(fake_docker, hub_env)
    notebook = room.image("notebook")
    fake_docker.on(rf"^docker image inspect --format \{{\{{\.Id\}}\}} {notebook}$", f"{IMAGE}\n")
    assert stack.join_command(room, swarm.swarm_state())["command"].endswith(f"--image {IMAGE}")
    fake_docker.fail(
        rf"^docker image inspect --format \{{\{{\.Id\}}\}} {notebook}$", "No such image"
    )
    join = stack.join_command(room, swarm.swarm_state())
    assert join == {
        "command": "",
        "why_not": f"the class's student image {notebook} is missing here: `invoke "
        "classroom.up` builds it",
    }


def test_status_prints_the_join_command(fake_docker: FakeDocker) -> None:
    report = {
        "stack": "c",
        "hub_url": "http://127.0.0.1:8000",
        "mlflow_ui_url": "http://127.0.0.1:8000/services/mlflow/",
        "deployed": False,
        "services": {},
        "nodes": [],
        "join": {"command": f"invoke classroom.join 10.0.0.1:2377 {TOKEN}", "why_not": ""},
        "instructor": "instructor",
        "instructor_password_file": "/x",
        "api_token": "t",
        "students": [],
    }
    shown = stack.format_status(report)
    assert (
        "  add a machine: on it, `invoke load FILE` of the class's bundle first (`invoke "
        f"bundle --classroom` here makes it), then run `invoke classroom.join 10.0.0.1:2377 "
        f"{TOKEN}`"
    ) in shown.splitlines()


def test_up_says_how_to_add_a_machine_when_others_can_join(
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LAB_CLASS_ADVERTISE_ADDRESS", "10.0.0.1")
    room = _class(monkeypatch, tmp_path)
    _manager(fake_docker, [f"LAB_CLASS_NOTEBOOK_IMAGE={IMAGE}"])
    stack.print_ready(room)
    assert (
        "Add a machine: on it, `invoke load FILE` of the class's bundle first (`invoke bundle "
        f"--classroom` here makes it), then run `invoke classroom.join 10.0.0.1:2377 {TOKEN} "
        f"--image {IMAGE}`."
    ) in capsys.readouterr().out.splitlines()


def test_status_on_a_worker_says_to_run_it_on_the_manager(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_settings(monkeypatch, tmp_path)
    fake_docker.on(r"^docker info", info("active"))
    with pytest.raises(LabError, match=r"run `invoke classroom.status` on the manager machine"):
        stack.status(settings.load(env_file=tmp_path / "no.env"))
    assert [c.argv[1] for c in fake_docker.calls] == ["info"]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("down", {}),
        ("destroy", {"yes": True}),
        ("status", {}),
        ("logs", {"service": "hub"}),
        ("students", {"action": "list"}),
        ("verify", {}),
        ("backup", {"output": "class.tar.gz"}),
        ("restore", {"file": "class.tar.gz", "yes": True}),
        ("nodes", {}),
    ],
)
def test_class_tasks_on_a_worker_machine_say_to_run_them_on_the_manager(
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    args: dict[str, Any],
) -> None:
    isolate_settings(monkeypatch, tmp_path)
    fake_docker.on(r"^docker info", info("active"))
    with pytest.raises(Exit) as refused:
        class_tasks.ns.tasks[name].body(Context(), **args)
    assert refused.value.message == (
        "error: this Docker engine is a swarm worker, not the class's manager: run "
        f"`invoke classroom.{name}` on the manager machine (the one where `docker node ls` works)"
    )
    assert [c.argv[1] for c in fake_docker.calls] == ["info"], "nothing else was asked"
