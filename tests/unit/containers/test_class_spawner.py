"""The hub's spawner (docker/hub/class_spawner.py): its pin in the state and its placement,
on a stand-in for dockerspawner's SwarmSpawner (not installed here) with Docker's answers."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from typing import Any

import pytest
from traitlets import Dict
from traitlets.config import Configurable

from tests.helpers import container_module


class FakeSwarmSpawner(Configurable):  # type: ignore[misc]
    """What ClassSpawner uses of SwarmSpawner (and of JupyterHub's Spawner)."""

    extra_placement_spec = Dict()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.object_id = ""
        self.api_token = "t"
        self.service_name = "c-student-bob"
        self.user = types.SimpleNamespace(name="bob")
        self.escaped_name = "bob"
        self.log = logging.getLogger("spawner")
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.tasks_seen: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.updated: dict[str, dict[str, Any]] = {}
        self.port = 8888
        self.services_created = 0

    def load_state(self, state: dict[str, Any]) -> None:
        self.object_id = state.get("object_id", "")

    def get_state(self) -> dict[str, Any]:
        return {"object_id": self.object_id} if self.object_id else {}

    def clear_state(self) -> None:
        self.api_token = ""

    async def docker(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "update_container":
            self.updated[args[0]] = kwargs
            return {}
        if method == "tasks" and "service" not in kwargs.get("filters", {}):
            return self.answers.get("student_tasks", [])
        return self.answers[method]

    async def start(self) -> tuple[str, int]:
        self.created.append(dict(self.extra_placement_spec))
        self.object_id = "s1"
        await self.start_object()
        return (self.service_name, 8888)

    async def create_object(self) -> dict[str, str]:
        self.services_created += 1
        return {"ID": "s1"}

    async def remove_object(self) -> None:
        self.removed.append(self.object_id)

    async def get_task(self) -> dict[str, Any] | None:
        return self.tasks_seen.pop(0) if self.tasks_seen else None


class SpawnException(Exception):
    """JupyterHub's refusal of a spawn, as far as it matters here."""

    def __init__(self, message: str, *, reason: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.reason, self.status_code = reason, status_code


@pytest.fixture
def spawner_class(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = types.ModuleType("dockerspawner")
    fake.SwarmSpawner = FakeSwarmSpawner  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dockerspawner", fake)
    hub = types.ModuleType("jupyterhub.spawner")
    hub.SpawnException = SpawnException  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jupyterhub", types.ModuleType("jupyterhub"))
    monkeypatch.setitem(sys.modules, "jupyterhub.spawner", hub)
    container_module("hub", "placement")  # what class_spawner imports, as in the hub image
    module = container_module("hub", "class_spawner")
    monkeypatch.setattr(module, "READY_WAIT_S", 0.0)
    module.IN_FLIGHT.clear()
    return module.ClassSpawner


def api_node(node_id: str, hostname: str, state: str = "ready", role: str = "worker") -> Any:
    return {
        "ID": node_id,
        "Description": {"Hostname": hostname},
        "Status": {"State": state},
        "Spec": {"Availability": "active", "Role": role},
    }


def ready_task(node_id: str) -> dict[str, Any]:
    return {"NodeID": node_id, "DesiredState": "running", "Status": {"State": "running"}}


def task(state: str, err: str = "", node: str = "", container: str = "") -> dict[str, Any]:
    status = {"State": state, "Err": err, "ContainerStatus": {"ContainerID": container}}
    return {"NodeID": node, "Status": status}


def make(spawner_class: Any, worker_state: str = "ready", cpu_shares: int = 0) -> Any:
    spawner = spawner_class(
        stack="c",
        class_label="org.mlflow-lab.class=c",
        workspace_template="c_workspace-{username}",
        cpu_shares=cpu_shares,
    )
    spawner.answers = {
        # The hub's engine: the manager's; a name filter matches parts of names too.
        "info": {"Swarm": {"NodeID": "m1"}},
        "volumes": {"Volumes": [{"Name": "c_workspace-bobby"}]},
        "nodes": [api_node("m1", "teacher", role="manager"), api_node("w7", "pc-7", worker_state)],
        "tasks": [ready_task("m1"), ready_task("w7")],
        "services": [{"ID": "a1", "Spec": {"Name": "c-student-alice"}}],
        "student_tasks": [{"ServiceID": "a1", "NodeID": "w7"}],
    }
    return spawner


def test_the_pin_survives_a_stop_and_a_hub_restart(spawner_class: Any) -> None:
    spawner = spawner_class()
    spawner.load_state({"object_id": "s1", "class_node": {"node_id": "w7", "hostname": "pc-7"}})
    assert spawner.pin.as_state() == {"node_id": "w7", "hostname": "pc-7"}
    spawner.clear_state()  # JupyterHub does this at every stop
    state = spawner.get_state()
    assert state["class_node"] == {"node_id": "w7", "hostname": "pc-7"}
    again = spawner_class()  # the hub restarted: a new spawner from the database's state
    again.load_state(state)
    assert again.pin.as_state() == {"node_id": "w7", "hostname": "pc-7"}
    assert "class_node" not in spawner_class().get_state(), "no pin before a first server"


def test_a_first_server_goes_where_fewest_students_are_and_pins_there(
    spawner_class: Any,
) -> None:
    spawner = make(spawner_class)
    spawner.tasks_seen = [task("preparing"), task("running")]
    asyncio.run(spawner.start())
    # Alice is on pc-7: Bob goes to the manager.
    assert spawner.created == [{"constraints": ["node.id == m1"]}]
    assert spawner.get_state()["class_node"] == {"node_id": "m1", "hostname": "teacher"}


def test_a_student_whose_workspace_is_already_on_the_managers_disk_is_pinned_there(
    spawner_class: Any,
) -> None:
    """A class from before the pins, or restored from a backup (no hub database in it):
    the work is on the manager, however few students the worker has."""
    spawner = make(spawner_class)
    spawner.answers["student_tasks"] = [{"ServiceID": "a1", "NodeID": "m1"}]
    spawner.answers["volumes"]["Volumes"].append({"Name": "c_workspace-bob"})
    spawner.tasks_seen = [task("running")]
    asyncio.run(spawner.start())
    assert spawner.created == [{"constraints": ["node.id == m1"]}]
    assert spawner.get_state()["class_node"] == {"node_id": "m1", "hostname": "teacher"}


def test_servers_starting_at_once_are_counted_where_they_go(spawner_class: Any) -> None:
    module = sys.modules["class_spawner"]
    module.IN_FLIGHT.update({"c-student-carol": "m1", "c-student-dan": "m1"})
    spawner = make(spawner_class)
    spawner.tasks_seen = [task("running")]
    asyncio.run(spawner.start())
    assert spawner.created == [{"constraints": ["node.id == w7"]}]
    assert "c-student-bob" not in module.IN_FLIGHT, "forgotten once it runs"


def test_a_pinned_student_whose_machine_is_down_gets_the_message_at_once(
    spawner_class: Any,
) -> None:
    spawner = make(spawner_class, worker_state="down")
    spawner.load_state({"class_node": {"node_id": "w7", "hostname": "pc-7"}})
    with pytest.raises(SpawnException) as refused:
        asyncio.run(spawner.start())
    assert refused.value.jupyterhub_message.startswith(  # type: ignore[attr-defined]
        "Your server's machine (pc-7) is not reachable (Swarm says it is down); your work is kept"
    )
    assert (refused.value.reason, refused.value.status_code) == ("placement", 503)
    assert spawner.created == [], "no service made for a machine that is not there"
    assert spawner.get_state()["class_node"]["node_id"] == "w7", "still pinned: the work is there"


def test_a_rejected_task_fails_the_start_instead_of_waiting_for_the_timeout(
    spawner_class: Any,
) -> None:
    spawner = make(spawner_class)
    spawner.tasks_seen = [task("pending"), task("rejected", "No such image: x:latest")]
    with pytest.raises(SpawnException, match="could not start on teacher: it is missing the st"):
        asyncio.run(spawner.start())
    assert "class_node" not in spawner.get_state(), "not pinned to a node that never ran it"
    assert spawner.removed == ["s1"], "Swarm retries no task that cannot run"


def test_a_server_whose_machine_went_away_counts_as_stopped(spawner_class: Any) -> None:
    spawner = make(spawner_class)
    spawner.tasks_seen = [task("pending", "no suitable node (1 node not available)")]
    spawner.object_id = "s1"
    assert "not reachable" in asyncio.run(spawner.poll())
    assert spawner.removed == ["s1"], "no server started unseen when the machine is back"
    spawner.tasks_seen = [task("running")]
    assert asyncio.run(spawner.poll()) is None
    assert spawner.removed == ["s1"]


@pytest.mark.parametrize(
    ("node", "lowered"), [("m1", {"cpu_shares": 32}), ("w7", None)], ids=["manager", "worker"]
)
def test_a_server_on_the_hubs_machine_yields_the_cpu_to_the_services_there(
    spawner_class: Any, node: str, lowered: dict[str, int] | None
) -> None:
    spawner = make(spawner_class, cpu_shares=32)
    spawner.tasks_seen = [task("running", node=node, container="c1")]
    asyncio.run(spawner.start_object())
    assert spawner.updated.get("c1") == lowered


def test_a_weight_that_cannot_be_set_leaves_the_server_running(
    spawner_class: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spawner = make(spawner_class, cpu_shares=32)

    async def engine_refuses(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "update_container":
            raise RuntimeError("No such container: c1")
        return await FakeSwarmSpawner.docker(spawner, method, *args, **kwargs)

    spawner.docker = engine_refuses
    spawner.tasks_seen = [task("running", node="m1", container="c1")]
    asyncio.run(spawner.start_object())
    assert "could not lower bob's CPU weight: No such container: c1" in caplog.text


class SwarmDNS:
    """Swarm's DNS as the hub sees it while a restarted student's old server stops."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers  # "old": the old server's address; "gone"; "silent"
        self.asked: list[tuple[str, int]] = []

    async def getaddrinfo(self, host: str, port: int, **kwargs: Any) -> list[Any]:
        self.asked.append((host, port))
        answer = self.answers.pop(0) if self.answers else "gone"
        if answer == "silent":  # forwarded to the machine's resolvers, with no internet
            await asyncio.sleep(3600)
        if answer == "gone":
            raise OSError(-2, "Name or service not known")
        return [(2, 1, 6, "", ("10.0.1.9", port))]


def create_service(spawner: Any, dns: SwarmDNS) -> None:
    async def create() -> None:
        asyncio.get_running_loop().getaddrinfo = dns.getaddrinfo  # type: ignore[method-assign]
        await spawner.create_object()

    asyncio.run(create())


@pytest.fixture
def fast_waits(spawner_class: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    module = sys.modules[spawner_class.__module__]
    monkeypatch.setattr(module, "OLD_SERVER_POLL_S", 0.0)
    monkeypatch.setattr(module, "LOOKUP_TIMEOUT_S", 0.05)
    return module


def test_a_restarted_server_is_created_once_the_old_ones_name_is_free(
    spawner_class: Any, fast_waits: Any
) -> None:
    spawner = make(spawner_class)
    dns = SwarmDNS(["old", "old", "gone"])
    create_service(spawner, dns)
    assert dns.asked == [("c-student-bob", 8888)] * 3
    assert spawner.services_created == 1


def test_a_name_swarm_does_not_answer_counts_as_free(spawner_class: Any, fast_waits: Any) -> None:
    spawner = make(spawner_class)
    dns = SwarmDNS(["silent"])
    create_service(spawner, dns)
    assert len(dns.asked) == 1, "one unanswered lookup must not hold the spawn"
    assert spawner.services_created == 1


def test_an_old_server_that_never_goes_away_does_not_hold_the_spawn_forever(
    spawner_class: Any, fast_waits: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(fast_waits, "OLD_SERVER_WAIT_S", 0.0)
    spawner = make(spawner_class)
    create_service(spawner, SwarmDNS(["old"] * 5))
    assert spawner.services_created == 1
    assert "bob's old server was still stopping after 0 s" in caplog.text
