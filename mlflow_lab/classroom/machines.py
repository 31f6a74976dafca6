"""The class's machines: other machines join the manager's swarm as workers, leave it,
and the manager lists them with the student servers each one runs.

`join` and `leave` run on the worker machine and need no class settings there (the
state dir, secrets and roster stay on the manager).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from functools import cache
from types import ModuleType
from typing import Any

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.classroom import node_files, roster, swarm
from mlflow_lab.classroom.stack import STUDENT_LABEL
from mlflow_lab.core import docker, ports
from mlflow_lab.core.errors import LabError

SWARM_PORT = 2377  # Docker's default manager port
REACH_TIMEOUT_S = 5.0
# Docker gives up after 20 s and keeps trying in the background; ours is longer so that
# its own answer comes first.
JOIN_TIMEOUT_S = 60.0
_TOKEN = re.compile(r"^SWMTKN-1-[0-9a-z]+-[0-9a-z]+$")
PORTS_NEEDED = "2377/tcp, 7946/tcp and udp, 4789/udp"
FROM_STATUS = "`invoke classroom.status` on the manager prints the whole command"


def parse_manager(text: str) -> tuple[str, int]:
    """(host, port) of `HOST`, `HOST:PORT` or `[IPv6]:PORT`; the port defaults to 2377."""
    text = text.strip()
    host, port = text, str(SWARM_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or any(c.isspace() or c in "/@" for c in host) or not port.isdigit():
        raise LabError(
            f"MANAGER {text!r} is not an address: give it as HOST:PORT, e.g. "
            f"192.168.1.10:{SWARM_PORT} ({FROM_STATUS})"
        )
    if not 1 <= int(port) <= 65535:
        raise LabError(f"MANAGER {text!r}: port {port} is not a port number (use 1 to 65535)")
    return host, int(port)


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refuse_if_in_a_swarm(state: swarm.SwarmState) -> None:
    if state.state in ("inactive", ""):
        return
    if state.active and state.manager:
        raise LabError(
            "this Docker engine manages a swarm of its own, so it cannot join a class as a "
            "worker: if nothing runs in it (`docker service ls`), `docker swarm leave "
            "--force` ends it; then run this again"
        )
    if state.active:
        managers = ", ".join(addr for _, addr in state.managers) or "another manager"
        raise LabError(
            f"this Docker engine is already a worker in a swarm (managed at {managers}): "
            "`invoke classroom.leave` first, then run this again"
        )
    raise LabError(
        f"this Docker engine's swarm is {state.state}: `invoke classroom.leave` first, then "
        "run this again"
    )


def _join_failure(result: docker.Result, address: str) -> str:
    said = f"{result.stderr}\n{result.stdout}".lower()
    if "join token" in said:
        return (
            f"the manager at {address} refused the token: copy it again, the worker token "
            f"({FROM_STATUS}; a token changes when it is rotated)"
        )
    if "timeout was reached" in said:
        return (
            f"the manager at {address} did not take this engine in within 20 s (the attempt "
            f"was called off): the machines must reach each other on {PORTS_NEEDED}; check "
            "the firewalls, then run this again"
        )
    return docker.failure(result, fix=f"check MANAGER and TOKEN ({FROM_STATUS})")


def join(manager: str, token: str, image: str = "", course: str = "") -> swarm.SwarmState:
    """This engine joins the swarm managed at `manager` as a worker; its new state.

    It refuses first when this machine lacks what the class's student servers need:
    the student image `image` (its ID) and the course copy `course` (a path, "" for none).
    """
    host, port = parse_manager(manager)
    token = token.strip()
    if not _TOKEN.match(token):
        raise LabError(
            f"TOKEN {token[:24]!r} is not a swarm join token (they start with SWMTKN-1-): "
            f"{FROM_STATUS}"
        )
    _refuse_if_in_a_swarm(swarm.swarm_state())
    if not image:
        raise LabError(
            "`classroom.join` needs --image, the class's student image, to check that this "
            f"machine has it: {FROM_STATUS}"
        )
    node_files.check(image.strip(), course.strip())
    address = _shown(host, port)
    why = ports.unreachable(host, port, REACH_TIMEOUT_S)
    if why:
        raise LabError(
            f"cannot reach the class's manager at {address} ({why}): check the address "
            f"({FROM_STATUS}) and that this machine reaches it on port {port}/tcp"
        )
    result = docker.run(
        "swarm", "join", "--token", token, address, timeout=JOIN_TIMEOUT_S, check=False
    )
    if not result.ok:
        # A join that timed out goes on in the background: call it off, the engine stays
        # as it was.
        if swarm.swarm_state().state != "inactive":
            docker.run("swarm", "leave", "--force", check=False)
        raise LabError(_join_failure(result, address))
    return swarm.swarm_state()


def leave() -> swarm.SwarmState:
    """This worker engine leaves its swarm; the state it left."""
    state = swarm.swarm_state()
    if state.state in ("inactive", ""):
        raise LabError(
            "this Docker engine is not in a swarm: nothing to leave "
            "(`invoke classroom.join MANAGER TOKEN` joins a class)"
        )
    if state.manager:
        raise LabError(
            "this Docker engine is the class's swarm manager, not a worker: run `invoke "
            "classroom.leave` on the worker machine that should leave (`invoke "
            "classroom.nodes` lists them); the manager's swarm ends after `invoke "
            "classroom.down`, with `docker swarm leave --force`"
        )
    # A worker leaves without --force; a join still pending or failed needs it.
    force = [] if state.active else ["--force"]
    docker.run("swarm", "leave", *force, timeout=JOIN_TIMEOUT_S)
    return state


def _student_servers_per_node() -> Counter[str]:
    """How many student servers (tasks meant to run) each node ID has."""
    services = [str(s["Name"]) for s in swarm.services(label=STUDENT_LABEL)]
    if not services:
        return Counter()
    found = docker.answers(
        "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", *services
    )
    tasks = found.lines() if found else []
    if not tasks:
        return Counter()
    located = docker.inspect(*tasks, fmt="{{.NodeID}}")
    return Counter(line.strip() for line in located.stdout.splitlines() if line.strip())


@cache
def placement() -> ModuleType:
    """The hub's placement rules (docker/hub/placement.py): which machine takes students is
    decided there, and this list must say what the hub will do."""
    name = "mlflow_lab_hub_placement"
    spec = importlib.util.spec_from_file_location(
        name, PROJECT_ROOT / "docker" / "hub" / "placement.py"
    )
    if spec is None or spec.loader is None:
        raise LabError("docker/hub/placement.py is missing: restore it from the repository")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def as_node(node: dict[str, Any]) -> Any:
    """A placement.Node from a `docker node ls` line (swarm.nodes())."""
    return placement().Node(
        id=str(node.get("ID", "")),
        hostname=str(node.get("Hostname", "")),
        state=str(node.get("Status", "")).lower(),
        availability=str(node.get("Availability", "")).lower(),
        manager=bool(node.get("ManagerStatus")),
    )


NOT_DEPLOYED = "unknown: the class is not deployed (`invoke classroom.up`)"


def _not_ready(stack: str, listed: list[dict[str, Any]]) -> dict[str, str]:
    """Each node's ID with why it takes no student server ("" when it does)."""
    rules = placement()
    found = docker.answers("service", "ps", "-q", "--no-trunc", f"{stack}_{rules.READY_SERVICE}")
    if found is None:
        return {str(node.get("ID", "")): NOT_DEPLOYED for node in listed}
    ids = found.lines()
    inspected = docker.inspect(*ids).stdout if ids else ""
    tasks = [rules.task_from_api(t) for t in json.loads(inspected or "[]")]
    nodes = [as_node(node) for node in listed]
    answer: dict[str, str] = rules.readiness(nodes, tasks)
    return answer


def _role(node: dict[str, Any]) -> str:
    status = str(node.get("ManagerStatus", ""))
    if not status:
        return "worker"
    return "manager (leader)" if status == "Leader" else f"manager ({status.lower()})"


def nodes(stack: str) -> list[dict[str, Any]]:
    """The swarm's nodes: hostname, role, state, availability, whether they take students
    (or why not), student servers."""
    swarm.require_manager("classroom.nodes")
    counts = _student_servers_per_node()
    listed = swarm.nodes()
    not_ready = _not_ready(stack, listed)
    return [
        {
            "id": str(node.get("ID", "")),
            "hostname": str(node.get("Hostname", "")),
            "role": _role(node),
            "state": str(node.get("Status", "")).lower(),
            "availability": str(node.get("Availability", "")).lower(),
            "ready_for_students": not not_ready.get(str(node.get("ID", "")), NOT_DEPLOYED),
            "not_ready_because": not_ready.get(str(node.get("ID", "")), NOT_DEPLOYED),
            "students": counts.get(str(node.get("ID", "")), 0),
            "this_machine": bool(node.get("Self")),
        }
        for node in listed
    ]


def format_nodes(found: list[dict[str, Any]]) -> str:
    rows = [
        (
            n["hostname"] + (" (this machine)" if n["this_machine"] else ""),
            n["role"],
            n["state"],
            n["availability"],
            "yes" if n["ready_for_students"] else "no",
            str(n["students"]),
        )
        for n in found
    ]
    header = ("node", "role", "state", "availability", "ready for students", "student servers")
    lines = [roster.table(rows, header)]
    for n in found:
        if not n["ready_for_students"]:
            lines.append(f"{n['hostname']} takes no student server: it is {n['not_ready_because']}")
        if n["state"] == "down" and n["role"] == "worker":
            lines.append(
                f"{n['hostname']} is down (it left, or its engine stopped): "
                f"`docker node rm {n['id']}` removes it from this list"
            )
    return "\n".join(lines)
