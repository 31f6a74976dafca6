"""Which machine of the class runs a student's server: the rules, without Docker.

A node takes students when the stack's global `ready` service (classroom.yaml) runs a task
on it: that task uses the student image and the course bind mount a student server gets,
so Swarm itself has proven that the node has both. A node where that task is rejected
("No such image", "bind source path does not exist") is not ready, and the task's error
says why.

A student's first server goes to the ready node with the fewest student servers; after it
ran, the student is pinned to that node for good: their workspace volume lives on its disk.
`invoke classroom.nodes` (mlflow_lab/classroom/machines.py) reads the same rules from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

READY_SERVICE = "ready"  # the stack's global readiness service (classroom.yaml)
STATE_KEY = "class_node"  # the pin in the spawner's state (the hub's database)
ASK = "Ask your instructor to bring it back (`invoke classroom.nodes` shows why)."


class PlacementError(Exception):
    """Why a student's server cannot start now; JupyterHub shows `jupyterhub_message` on
    the spawn page instead of its generic "Spawn failed"."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    manager: bool


@dataclass(frozen=True)
class ReadyTask:
    """A task of the `ready` service."""

    node_id: str
    state: str  # running, rejected, pending, ...
    desired: str  # running, shutdown, ...
    error: str
    index: int  # Swarm's version of the task: higher is newer


@dataclass(frozen=True)
class Pin:
    """The node a student's workspace volume lives on."""

    node_id: str
    hostname: str

    def as_state(self) -> dict[str, str]:
        return {"node_id": self.node_id, "hostname": self.hostname}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Pin | None:
        found = state.get(STATE_KEY)
        if not isinstance(found, Mapping) or not found.get("node_id"):
            return None
        return cls(str(found["node_id"]), str(found.get("hostname", "")))


def node_from_api(node: Mapping[str, Any]) -> Node:
    """A node as Docker's API (and `docker node inspect`) gives it."""
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    return Node(
        id=str(node.get("ID", "")),
        hostname=str((node.get("Description") or {}).get("Hostname", "")),
        state=str(status.get("State", "unknown")).lower(),
        availability=str(spec.get("Availability", "active")).lower(),
        manager=str(spec.get("Role", "")).lower() == "manager",
    )


def task_from_api(task: Mapping[str, Any]) -> ReadyTask:
    """A task as Docker's API (and `docker inspect TASK`) gives it."""
    status = task.get("Status") or {}
    return ReadyTask(
        node_id=str(task.get("NodeID", "")),
        state=str(status.get("State", "")).lower(),
        desired=str(task.get("DesiredState", "")).lower(),
        error=str(status.get("Err", "")),
        index=int((task.get("Version") or {}).get("Index", 0)),
    )


def _task_reason(error: str) -> str:
    if "no such image" in error.lower():
        return f"missing the student image (Docker: {error})"
    if "bind source path does not exist" in error:
        return f"missing the course copy (Docker: {error})"
    return f"unable to start the student image (Docker: {error})"


def reason_not_ready(node: Node, tasks: Iterable[ReadyTask]) -> str:
    """Why `node` takes no student server now, said after "is"; "" when it is ready."""
    if node.state != "ready":
        return f"not reachable (Swarm says it is {node.state})"
    if node.availability != "active":
        return f"set to {node.availability}: it takes no new servers"
    mine = sorted((t for t in tasks if t.node_id == node.id), key=lambda t: t.index)
    if any(t.state == "running" and t.desired == "running" for t in mine):
        return ""
    # A rejected task is replaced after the restart delay; until then its error is the news.
    failed = [t for t in mine if t.error]
    if failed:
        return _task_reason(failed[-1].error)
    if mine:
        return f"not ready yet (its readiness check is {mine[-1].state})"
    return "not ready yet (no readiness check has started on it)"


def readiness(nodes: Iterable[Node], tasks: Iterable[ReadyTask]) -> dict[str, str]:
    """Each node's ID with why it is not ready ("" for a ready one)."""
    found = list(tasks)
    return {node.id: reason_not_ready(node, found) for node in nodes}


def choose(
    nodes: Iterable[Node], not_ready: Mapping[str, str], students: Mapping[str, int]
) -> Node:
    """The ready node for a student's first server: the fewest student servers; on a tie
    a worker, since the manager also runs the hub, MLflow and PostgreSQL."""
    known = list(nodes)
    ready = [n for n in known if not not_ready.get(n.id, "no readiness known")]
    if not ready:
        why = "; ".join(f"{n.hostname} is {not_ready.get(n.id, 'unknown')}" for n in known)
        raise PlacementError(
            f"No machine of the class can start your server now ({why or 'no machines'}). "
            "Ask your instructor (`invoke classroom.nodes` shows each machine)."
        )
    return min(ready, key=lambda n: (students.get(n.id, 0), n.manager, n.hostname))


def node_of(pin: Pin, nodes: Iterable[Node]) -> Node | None:
    """The node that holds a pinned student's workspace; None when it left the swarm.

    A machine that left and joined again is a new node under its old hostname; its disk,
    and the student's volume on it, are the same, so the student follows the hostname."""
    known = list(nodes)
    node = next((n for n in known if n.id == pin.node_id), None)
    if node is None and pin.hostname:
        node = next((n for n in known if n.hostname == pin.hostname), None)
    return node


def pinned_node(pin: Pin, nodes: Iterable[Node], not_ready: Mapping[str, str]) -> Node:
    """The node a pinned student's server must go to (node_of), or why it cannot now."""
    node = node_of(pin, nodes)
    shown = pin.hostname or pin.node_id
    if node is None:
        raise PlacementError(
            f"Your server's machine ({shown}) has left the class; your work is kept on its "
            "disk. Ask your instructor to add it again (`invoke classroom.join` on it)."
        )
    why = not_ready.get(node.id, "")
    if why:
        raise PlacementError(
            f"Your server's machine ({node.hostname}) is {why}; your work is kept on it. {ASK}"
        )
    return node


def start_failure(hostname: str, state: str, error: str) -> PlacementError | None:
    """Why a student server's task will not run where Swarm put it (None while it may):
    rejected (no image or course copy there) or pending on a machine that went away. The
    spawner would otherwise wait for its start timeout."""
    if state in ("rejected", "failed") and error:
        return PlacementError(
            f"Your server could not start on {hostname}: it is {_task_reason(error)}. {ASK}"
        )
    if state == "pending" and "no suitable node" in error:
        return PlacementError(
            f"Your server's machine ({hostname}) is not reachable now; your work is kept "
            f"on it. {ASK}"
        )
    return None


def constraints(node: Node) -> list[str]:
    """The placement constraint of a student's Swarm service."""
    return [f"node.id == {node.id}"]
