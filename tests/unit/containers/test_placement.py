"""Which machine takes a student's server (docker/hub/placement.py), fed Docker's answers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import container_module

placement = container_module("hub", "placement")
Node, Pin, PlacementError = placement.Node, placement.Pin, placement.PlacementError

MANAGER = Node("m1", "teacher", "ready", "active", True)
PC7 = Node("w7", "pc-7", "ready", "active", False)
PC8 = Node("w8", "pc-8", "ready", "active", False)
NO_IMAGE = "No such image: mlflow-lab/class-notebook:latest"
NO_COURSE = (
    'invalid mount config for type "bind": bind source path does not exist: /srv/class/course'
)


def api_node(node: Any) -> dict[str, Any]:
    """The node as Docker's API gives it."""
    return {
        "ID": node.id,
        "Description": {"Hostname": node.hostname},
        "Status": {"State": node.state, "Addr": "10.0.0.9"},
        "Spec": {
            "Availability": node.availability,
            "Role": "manager" if node.manager else "worker",
        },
    }


def api_task(node_id: str, state: str, err: str = "", index: int = 10) -> dict[str, Any]:
    desired = "running" if state in ("running", "pending", "new", "preparing") else "shutdown"
    return {
        "NodeID": node_id,
        "DesiredState": desired,
        "Status": {"State": state, "Err": err, "Timestamp": "2026-12-02T03:00:00.1Z"},
        "Version": {"Index": index},
    }


def ready(nodes: list[Any], tasks: list[dict[str, Any]]) -> dict[str, str]:
    found = placement.readiness(
        [placement.node_from_api(api_node(n)) for n in nodes],
        [placement.task_from_api(t) for t in tasks],
    )
    return dict(found)


def test_nodes_and_tasks_read_from_the_api() -> None:
    assert placement.node_from_api(api_node(PC7)) == PC7
    assert placement.node_from_api(api_node(MANAGER)).manager
    task = placement.task_from_api(api_task("w7", "rejected", NO_IMAGE, index=42))
    assert (task.node_id, task.state, task.error, task.index) == ("w7", "rejected", NO_IMAGE, 42)


def test_a_node_is_ready_when_its_readiness_task_runs() -> None:
    tasks = [api_task("m1", "running"), api_task("w7", "running")]
    assert ready([MANAGER, PC7], tasks) == {"m1": "", "w7": ""}


def test_a_rejected_readiness_task_says_what_the_node_lacks() -> None:
    tasks = [api_task("w7", "rejected", NO_IMAGE), api_task("w8", "rejected", NO_COURSE)]
    found = ready([PC7, PC8], tasks)
    assert found["w7"] == f"missing the student image (Docker: {NO_IMAGE})"
    assert found["w8"] == f"missing the course copy (Docker: {NO_COURSE})"


def test_the_newest_task_counts_and_a_later_success_wins() -> None:
    # Rejected while the image was missing, then loaded: the retry runs.
    history = [api_task("w7", "rejected", NO_IMAGE, index=5), api_task("w7", "running", index=9)]
    assert ready([PC7], history) == {"w7": ""}
    # Retried and still starting: the last error is the news.
    retry = [api_task("w7", "rejected", NO_IMAGE, index=5), api_task("w7", "pending", index=9)]
    assert ready([PC7], retry)["w7"].startswith("missing the student image")
    assert ready([PC7], [api_task("w7", "preparing")])["w7"] == (
        "not ready yet (its readiness check is preparing)"
    )
    assert ready([PC7], [])["w7"] == "not ready yet (no readiness check has started on it)"


def test_down_or_drained_nodes_are_not_ready_whatever_their_task_says() -> None:
    down = Node("w7", "pc-7", "down", "active", False)
    drained = Node("w8", "pc-8", "ready", "drain", False)
    tasks = [api_task("w7", "running"), api_task("w8", "running")]
    found = ready([down, drained], tasks)
    assert found == {
        "w7": "not reachable (Swarm says it is down)",
        "w8": "set to drain: it takes no new servers",
    }


def test_a_first_server_goes_to_the_ready_node_with_fewest_students() -> None:
    not_ready = {"m1": "", "w7": "", "w8": ""}
    assert placement.choose([MANAGER, PC7, PC8], not_ready, {"m1": 1, "w7": 3, "w8": 2}) == MANAGER
    assert placement.choose([MANAGER, PC7, PC8], not_ready, {"m1": 2, "w7": 3, "w8": 2}) == PC8
    # A tie goes to a worker: the manager also runs the hub, MLflow and PostgreSQL.
    assert placement.choose([MANAGER, PC7], {"m1": "", "w7": ""}, {}) == PC7


def test_a_node_that_is_not_ready_never_gets_a_first_server() -> None:
    not_ready = {"m1": "", "w7": f"missing the student image (Docker: {NO_IMAGE})"}
    assert placement.choose([MANAGER, PC7], not_ready, {"m1": 40}) == MANAGER
    assert placement.choose([MANAGER, PC7], {"w7": ""}, {}) == PC7, "unknown is not ready"


def test_no_ready_node_is_a_message_naming_each_one() -> None:
    not_ready = {"m1": "not ready yet (its readiness check is pending)", "w7": "set to drain"}
    with pytest.raises(PlacementError) as raised:
        placement.choose([MANAGER, PC7], not_ready, {})
    assert raised.value.jupyterhub_message == (
        "No machine of the class can start your server now (teacher is not ready yet (its "
        "readiness check is pending); pc-7 is set to drain). Ask your instructor (`invoke "
        "classroom.nodes` shows each machine)."
    )


def test_a_pinned_student_goes_back_to_their_node_even_with_more_students() -> None:
    pin = Pin("w7", "pc-7")
    assert placement.pinned_node(pin, [MANAGER, PC7], {"m1": "", "w7": ""}) == PC7
    assert placement.constraints(PC7) == ["node.id == w7"]


def test_a_pinned_students_node_down_is_a_message_not_a_spinner() -> None:
    pin = Pin("w7", "pc-7")
    down = Node("w7", "pc-7", "down", "active", False)
    not_ready = ready([MANAGER, down], [api_task("m1", "running"), api_task("w7", "running")])
    with pytest.raises(PlacementError) as raised:
        placement.pinned_node(pin, [MANAGER, down], not_ready)
    assert str(raised.value) == (
        "Your server's machine (pc-7) is not reachable (Swarm says it is down); your work is "
        "kept on it. Ask your instructor to bring it back (`invoke classroom.nodes` shows why)."
    )


def test_a_machine_that_joined_again_keeps_its_students_by_hostname() -> None:
    again = Node("w9", "pc-7", "ready", "active", False)
    assert placement.pinned_node(Pin("w7", "pc-7"), [MANAGER, again], {"m1": "", "w9": ""}) == again


def test_a_machine_gone_from_the_swarm_says_so() -> None:
    with pytest.raises(PlacementError, match=r"^Your server's machine \(pc-7\) has left the class"):
        placement.pinned_node(Pin("w7", "pc-7"), [MANAGER], {"m1": ""})


def test_the_pin_is_kept_in_the_spawners_state_and_read_back() -> None:
    pin = Pin("w7", "pc-7")
    state = {"object_id": "s1", placement.STATE_KEY: pin.as_state()}
    assert Pin.from_state(state) == pin
    assert Pin.from_state({}) is None
    assert Pin.from_state({placement.STATE_KEY: {"hostname": "pc-7"}}) is None
    assert Pin.from_state({placement.STATE_KEY: "w7"}) is None


@pytest.mark.parametrize(
    ("state", "err", "expected"),
    [
        ("running", "", None),
        ("preparing", "", None),
        ("pending", "", None),
        ("rejected", NO_IMAGE, "Your server could not start on pc-7: it is missing the student"),
        ("pending", "no suitable node (1 node not available for new tasks)", "not reachable now"),
    ],
)
def test_a_task_that_will_never_run_fails_the_start_at_once(
    state: str, err: str, expected: str | None
) -> None:
    failure = placement.start_failure("pc-7", state, err)
    if expected is None:
        assert failure is None
    else:
        assert failure is not None and expected in failure.jupyterhub_message
