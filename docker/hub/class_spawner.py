"""The class's spawner: dockerspawner's SwarmSpawner that places each student (placement.py).

- First server: on the ready node with the fewest student servers; then pinned there (the
  pin is in the spawner's state, so in the hub's database: it outlives a stop, a cull and a
  hub restart), because the student's workspace volume is on that node's disk. A student
  with no pin whose workspace volume is already on the hub's machine (a class from before
  the pins, or one restored from a backup, which keeps no hub database) is pinned there:
  their work is there.
- A server that cannot run where it must (its machine down, drained, gone, or without the
  student image) fails at once with a message for the student, instead of the spawn page
  spinning until the start timeout.
- A server on the hub's machine yields the CPU to the class's services there (hub, MLflow,
  database): see `cpu_shares`.
- A restarted server's service is created only once its name no longer leads to the old
  server (see `create_object`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

import placement
from dockerspawner import SwarmSpawner
from jupyterhub.spawner import SpawnException
from traitlets import Integer, Unicode

# Students whose node is chosen but whose service has no task yet: a class logging in at
# once would otherwise all be counted onto the same least-busy node.
IN_FLIGHT: dict[str, str] = {}
# Right after `classroom.up` (or a hub restart), the readiness checks may still be starting.
READY_WAIT_S = 30.0
# A stopped server's container can take seconds to stop, on any machine of the swarm.
OLD_SERVER_WAIT_S = 60.0
OLD_SERVER_POLL_S = 0.5
# Swarm's DNS answers a name it knows at once; a name it does not know it forwards to the
# machine's resolvers, which on a machine with no internet may never answer.
LOOKUP_TIMEOUT_S = 1.0
WAITING = {"new", "assigned", "accepted", "starting", "pending", "preparing", "ready"}


class ClassSpawner(SwarmSpawner):  # type: ignore[misc]
    stack = Unicode(config=True, help="The class's stack name (its `ready` service's prefix).")
    class_label = Unicode(config=True, help="The label every student service carries.")
    workspace_template = Unicode(
        config=True, help="The student's workspace volume; {username} is their escaped name."
    )
    cpu_shares = Integer(
        0,
        config=True,
        help="""CPU weight of a student's server on the hub's machine (Docker's default: 1024).

        Every container there gets the same CPU weight, so a class's students training
        models at once leave MLflow a student's share of the cores and every tracking call
        waits. Swarm services have no CPU weight, so the hub sets it on the container once
        it runs (`docker update`). A low weight costs a student nothing while the services
        are idle; among students the shares stay equal. Other machines run no services:
        their students keep the default. 0 leaves the weight alone.""",
    )

    pin: placement.Pin | None = None
    _node: placement.Node | None = None

    # -- state: the pin survives stops (clear_state) and hub restarts ---------------------
    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.pin = placement.Pin.from_state(state)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.pin is not None:
            state[placement.STATE_KEY] = self.pin.as_state()
        return state

    def clear_state(self) -> None:
        """JupyterHub clears the state at every stop; the pin stays with the volume."""
        super().clear_state()

    @property
    def workspace_volume(self) -> str:
        return str(self.workspace_template.format(username=self.escaped_name))

    # -- placement --------------------------------------------------------------------------
    async def _pin_to_existing_workspace(self) -> placement.Pin | None:
        """The hub's own node when the student's workspace volume is on its disk (the hub
        always runs on the manager; its engine sees only its own node's volumes)."""
        found = await self.docker("volumes", filters={"name": self.workspace_volume})
        names = {v.get("Name") for v in (found or {}).get("Volumes") or []}
        if self.workspace_volume not in names:
            return None
        swarm = (await self.docker("info")).get("Swarm") or {}
        node_id = str(swarm.get("NodeID", ""))
        if not node_id:
            return None
        hostname = next(
            (
                n.hostname
                for n in [placement.node_from_api(n) for n in await self.docker("nodes")]
                if n.id == node_id
            ),
            "",
        )
        self.log.info("%s's workspace is on this machine: pinned here", self.user.name)
        return placement.Pin(node_id, hostname)

    async def _nodes(self) -> tuple[list[placement.Node], dict[str, str]]:
        nodes = [placement.node_from_api(n) for n in await self.docker("nodes")]
        service = f"{self.stack}_{placement.READY_SERVICE}"
        found = await self.docker("tasks", filters={"service": service})
        tasks = [placement.task_from_api(t) for t in found]
        return nodes, placement.readiness(nodes, tasks)

    async def _students_per_node(self) -> Counter[str]:
        services = await self.docker("services", filters={"label": self.class_label})
        names = {s["ID"]: s["Spec"]["Name"] for s in services}
        running = await self.docker("tasks", filters={"desired-state": "running"})
        counts: Counter[str] = Counter()
        seen = set()
        for task in running:
            if task.get("ServiceID") in names and task.get("NodeID"):
                counts[task["NodeID"]] += 1
                seen.add(names[task["ServiceID"]])
        counts.update(node for name, node in IN_FLIGHT.items() if name not in seen)
        return counts

    async def _place(self) -> placement.Node:
        deadline = time.monotonic() + READY_WAIT_S
        if self.pin is None:
            self.pin = await self._pin_to_existing_workspace()
        while True:
            nodes, not_ready = await self._nodes()
            if self.pin is not None:
                return placement.pinned_node(self.pin, nodes, not_ready)
            try:
                return placement.choose(nodes, not_ready, await self._students_per_node())
            except placement.PlacementError:
                starting = any("not ready yet" in why for why in not_ready.values())
                if not starting or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(2)

    async def start(self) -> Any:
        try:
            return await self._start()
        except placement.PlacementError as error:
            # A SpawnException: JupyterHub logs it as a refusal (no traceback); 503, as the
            # student's machine is unavailable, not their request wrong.
            refusal = SpawnException(error.jupyterhub_message, reason="placement", status_code=503)
            refusal.jupyterhub_message = error.jupyterhub_message  # what the spawn page shows
            raise refusal from error

    async def _start(self) -> Any:
        node = self._node = await self._place()
        self.log.info("%s's server goes to node %s (%s)", self.user.name, node.hostname, node.id)
        self.extra_placement_spec = {"constraints": placement.constraints(node)}
        IN_FLIGHT[self.service_name] = node.id
        try:
            started = await super().start()
        except placement.PlacementError:
            # Swarm would go on retrying a task that cannot run there.
            await self._remove_service()
            raise
        finally:
            IN_FLIGHT.pop(self.service_name, None)
        self.pin = placement.Pin(node.id, node.hostname)
        return started

    async def _remove_service(self) -> None:
        try:
            await self.remove_object()
        except Exception as exc:  # gone already, or the engine busy: the next start retries
            self.log.warning("could not remove %s: %s", self.service_name, exc)
        self.object_id = ""

    async def create_object(self) -> Any:
        await self._wait_until_old_server_is_gone()
        return await super().create_object()

    async def _wait_until_old_server_is_gone(self) -> None:
        """A restarted server's service has the old one's name, and Swarm's DNS goes on
        giving the old server's address while its container stops (seconds, on a worker
        too). The hub's readiness check would be answered by the server that is going away,
        so the hub would call the new one ready before it listens, and the proxy would show
        the student the hub's error page. The hub's own HTTP client neither keeps
        connections nor caches names (jupyterhub_config.py), so once the name is free the
        check can reach only the new server."""
        deadline = time.monotonic() + OLD_SERVER_WAIT_S
        while await self._name_resolves():
            if time.monotonic() > deadline:
                self.log.warning(
                    "%s's old server was still stopping after %d s",
                    self.user.name,
                    OLD_SERVER_WAIT_S,
                )
                return
            await asyncio.sleep(OLD_SERVER_POLL_S)

    async def _name_resolves(self) -> bool:
        lookup = asyncio.get_running_loop().getaddrinfo(
            self.service_name, self.port, type=socket.SOCK_STREAM
        )
        try:
            return bool(await asyncio.wait_for(lookup, LOOKUP_TIMEOUT_S))
        except (TimeoutError, OSError):  # unknown to Swarm's DNS: no old server
            return False

    async def start_object(self) -> None:
        """Wait for the server's task to run, as SwarmSpawner does, but give up at once
        where it never will (dockerspawner waits on a rejected task until the timeout)."""
        hostname = self._node.hostname if self._node else "its machine"
        delay = 1.0
        while True:
            task = await self.get_task()
            if not task:
                raise RuntimeError(f"Service {self.service_name} not found")
            status = task["Status"]
            state = str(status["State"]).lower()
            if state == "running":
                await self._yield_cpu_to_services(task)
                return
            failure = placement.start_failure(hostname, state, str(status.get("Err", "")))
            if failure is not None:
                raise failure
            if state not in WAITING:
                raise RuntimeError(f"Service {self.service_name} not running: {status}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5)

    async def _yield_cpu_to_services(self, task: dict[str, Any]) -> None:
        container = str((task["Status"].get("ContainerStatus") or {}).get("ContainerID", ""))
        if not self.cpu_shares or not container:
            return
        here = ((await self.docker("info")).get("Swarm") or {}).get("NodeID")
        if task.get("NodeID") != here:
            return
        try:
            await self.docker("update_container", container, cpu_shares=self.cpu_shares)
        except Exception as exc:  # the server runs all the same, only at the default weight
            self.log.warning("could not lower %s's CPU weight: %s", self.user.name, exc)

    async def poll(self) -> Any:
        """As SwarmSpawner's, and a server whose machine went away counts as stopped (Swarm
        keeps a task for it pending forever), so the student's next start says why."""
        task = await self.get_task()
        if not task:
            return 0
        status = task["Status"]
        state = str(status["State"]).lower()
        if state == "pending" and "no suitable node" in str(status.get("Err", "")):
            # JupyterHub stops no server it finds stopped; without this, Swarm would start
            # it unseen when the machine comes back.
            await self._remove_service()
            return f"its machine is not reachable: {status.get('Err')}"
        if state in {"running", "starting", "pending", "preparing"}:
            return None
        return str(status)
