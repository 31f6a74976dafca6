"""Docker Swarm for the classroom: the engine's swarm state, stacks, services, tasks.

Built on the one Docker gateway (mlflow_lab.core.docker); argv only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_LABEL = "com.docker.swarm.service.name"
DEPLOY_TIMEOUT_S = 180


LOOPBACK = "127.0.0.1"
# How a swarm gets another address: it is fixed when the swarm is made. Volumes are the
# engine's, not the swarm's, so a new swarm finds them all.
REMAKE_SWARM = (
    "`invoke classroom.down`, `docker swarm leave --force`, then `invoke classroom.up` "
    "(every volume is kept)"
)


@dataclass(frozen=True)
class SwarmState:
    state: str  # inactive, pending, active, error, locked
    manager: bool
    node_id: str
    node_address: str = ""  # the address this node advertises to the others
    hostname: str = ""
    managers: tuple[tuple[str, str], ...] = ()  # (node ID, host:port) of each manager

    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def manager_address(self) -> str:
        """host:port where other machines join this manager; "" on a worker."""
        return next((addr for node, addr in self.managers if node == self.node_id), "")


def swarm_state() -> SwarmState:
    info = docker.info()
    if info is None:
        raise LabError(f"the Docker engine is not running or not reachable: {docker.ENGINE_FIX}")
    swarm = info.get("Swarm") or {}
    return SwarmState(
        state=str(swarm.get("LocalNodeState", "inactive")),
        manager=bool(swarm.get("ControlAvailable")),
        node_id=str(swarm.get("NodeID", "")),
        node_address=str(swarm.get("NodeAddr", "")),
        hostname=str(info.get("Name", "")),
        managers=tuple(
            (str(m.get("NodeID", "")), str(m.get("Addr", "")))
            for m in swarm.get("RemoteManagers") or []
        ),
    )


def worker_refusal(command: str) -> LabError:
    """What a task that needs the class's manager says on a worker machine."""
    return LabError(
        "this Docker engine is a swarm worker, not the class's manager: run "
        f"`invoke {command}` on the manager machine (the one where `docker node ls` works)"
    )


def refuse_on_worker(command: str) -> SwarmState:
    """This engine's swarm state; the one line of `worker_refusal` on a worker machine, where
    a class task would find no class and say so misleadingly."""
    state = swarm_state()
    if state.active and not state.manager:
        raise worker_refusal(command)
    return state


def require_manager(command: str) -> SwarmState:
    """This engine's swarm state, when it is a swarm's manager; else the one line why not."""
    state = refuse_on_worker(command)
    if state.active:
        return state
    raise LabError(
        f"this Docker engine is not managing a swarm (it is {state.state}): start the class "
        "with `invoke classroom.up` (it makes one), or run this on the class's manager machine"
    )


def ensure_manager(*, init: bool, advertise: str = "") -> bool:
    """Make sure this engine manages a swarm; True when a swarm was created now.

    The swarm advertises `advertise` to other machines; without one, loopback: a one-node
    swarm needs no address other machines can reach, and none can join it.
    """
    state = swarm_state()
    if state.active and state.manager:
        if advertise and state.node_address != advertise:
            print(
                f"warning: this swarm advertises {state.node_address}, not "
                f"LAB_CLASS_ADVERTISE_ADDRESS={advertise} (it was made before); to change "
                f"it: {REMAKE_SWARM}"
            )
        return False
    if state.active:
        raise worker_refusal("classroom.up")
    if state.state not in ("inactive", ""):
        raise LabError(
            f"this engine's swarm is {state.state}: fix it (`docker info`, `docker swarm "
            "leave --force` to start over), then run the command again"
        )
    if not init:
        raise LabError(
            "the Docker engine is not in a swarm and --no-init was given: run "
            "`docker swarm init` yourself, or run `invoke classroom.up` without --no-init"
        )
    docker.run(
        "swarm", "init", "--advertise-addr", advertise or LOOPBACK, timeout=60,
        fix="LAB_CLASS_ADVERTISE_ADDRESS must be an address of this machine (`ip addr`)",
    )  # fmt: skip
    return True


def join_command(state: SwarmState) -> dict[str, str]:
    """How another machine joins this manager's swarm as a worker: the command to run
    there, or (a loopback swarm) why none can and what to do."""
    address = state.manager_address
    if not address or state.node_address.startswith("127."):
        return {
            "command": "",
            "why_not": (
                "no other machine can join: the swarm advertises loopback; set "
                "LAB_CLASS_ADVERTISE_ADDRESS to this machine's address on the classroom "
                f"network, then {REMAKE_SWARM}"
            ),
        }
    token = docker.run("swarm", "join-token", "-q", "worker").stdout.strip()
    return {"command": f"invoke classroom.join {address} {token}", "why_not": ""}


def deploy(stack: str, file: Path, env: Mapping[str, str]) -> None:
    """`docker stack deploy` of `file`, its ${...} filled from `env`; local images only."""
    docker.call(
        docker.docker_argv(
            "stack", "deploy", "--resolve-image", "never", "--prune", "-c", str(file), stack
        ),
        env=dict(env),
        timeout=DEPLOY_TIMEOUT_S,
        fix="check classroom.yaml and the settings it names",
    )


def remove_stack(stack: str, timeout: float = 120) -> None:
    """`docker stack rm`, then wait until its network is really gone (rm returns early)."""
    if not services(stack):
        return
    docker.run("stack", "rm", stack, timeout=60)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = docker.answers("network", "ls", "-q", "--filter", f"label={STACK_LABEL}={stack}")
        tasks = docker.containers({STACK_LABEL: stack})
        if (left is None or not left.lines()) and not tasks:
            return
        time.sleep(1)
    raise LabError(f"stack {stack} was not gone after {timeout:g} s: see `docker stack ps {stack}`")


def _json_lines(result: docker.Result | None) -> list[dict[str, Any]]:
    if result is None:
        return []
    return [json.loads(line) for line in result.lines()]


def services(stack: str = "", label: str = "") -> list[dict[str, Any]]:
    """`docker service ls` of a stack (or of services carrying `label`=value)."""
    filt = f"label={STACK_LABEL}={stack}" if stack else f"label={label}"
    return _json_lines(docker.answers("service", "ls", "--filter", filt, "--format", "{{json .}}"))


def tasks(service: str) -> list[dict[str, Any]]:
    """The service's tasks (newest first), as `docker service ps` tells them."""
    return _json_lines(
        docker.answers("service", "ps", "--no-trunc", "--format", "{{json .}}", service)
    )


def nodes() -> list[dict[str, Any]]:
    return _json_lines(docker.answers("node", "ls", "--format", "{{json .}}"))


def containers_of(service: str) -> list[str]:
    """The service's running containers on this node."""
    return docker.containers({SERVICE_LABEL: service}, all=False)


def container_of(service: str) -> str | None:
    """The running container of a (one-replica) service on this node."""
    found = containers_of(service)
    return found[0] if found else None


def service_env(service: str) -> list[str] | None:
    """The service's environment as its spec sets it ("NAME=value" lines); None when
    there is no such service."""
    found = docker.answers(
        "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}", service
    )
    return None if found is None else list(found.json() or [])


def runs_current_spec(service: str, container: str) -> bool:
    """Whether `container` was started from the service's current spec.

    Right after `docker stack deploy` changes a service, Swarm has not begun replacing its
    task yet: the old task still runs, healthy and answering, and stops a moment later
    (and its host-mode port with it). classroom.yaml puts everything a deploy changes into
    the services' environment (image IDs, the certificate's fingerprint, the settings), so
    the container's environment tells the old task from the new one.
    """
    spec = service_env(service)
    found = docker.inspect(container, fmt="{{json .Config.Env}}")
    if spec is None or not found.ok:
        return False
    # The container's environment also has the image's own variables (PATH, ...).
    return set(spec) <= set(json.loads(found.stdout) or [])


def health(container: str) -> str:
    """The container's health ("healthy", "starting", ...), "" when it has no check."""
    result = docker.inspect(container, fmt="{{if .State.Health}}{{.State.Health.Status}}{{end}}")
    return result.stdout.strip() if result.ok else ""


def logs(service: str, tail: int = 100) -> str:
    result = docker.answers("service", "logs", "--no-task-ids", "--tail", str(tail), service)
    return (result.stdout + result.stderr) if result else ""


def remove_services(names: list[str]) -> None:
    """`docker service rm`; a service already gone counts as removed (the hub removes a
    student's service itself when it stops their server, at any moment)."""
    if not names:
        return
    result = docker.run("service", "rm", *names, timeout=60, check=False)
    if result.ok:
        return
    left = [n for n in names if docker.answers("service", "inspect", n) is not None]
    if left:
        raise LabError(f"{docker.failure(result)}: remove {', '.join(left)} by hand")


def volumes(label: str) -> list[str]:
    result = docker.answers("volume", "ls", "-q", "--filter", f"label={label}")
    return result.lines() if result else []
