"""A student's workspace volume on another machine of the class: read (for a backup) or
emptied (`students remove --delete-data`) from the manager, with no SSH and nothing on
that machine beyond what joining needed.

Where: the hub's pin (placement.STATE_KEY in the spawner's state, which the instructor's
token reads with `admin:server_state`). It is what the spawner itself follows, so it names
the volume the student's server uses, and it is known while that machine is down, which a
question to the machines cannot be (and asking them would need the Docker socket in a
task on each student PC).

How: a one-off Swarm service on that node (restart condition none, `node.id` constraint,
the class's student image by ID, which every ready machine has) mounts the volume. To
read, it serves a tar of it once on the class's overlay network, to the one client that
gives its token first (student servers share that network); a one-off container here,
on the same (attachable) network, copies the stream into the backup's part file, and the
task's exit (complete or failed) says whether tar read it all. Every wait is bounded,
and the service and the container are removed however it ends (Ctrl-C included).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_lab.classroom import machines, node_files, stack, swarm
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError

PORT = 7007
TOKEN_ENV = "LAB_ONEOFF_TOKEN"
# From `service create` until the task on that machine listens (scheduling, a container
# start on a busy PC).
START_S = 120.0
# A transfer that moves no byte for this long has lost its machine.
STALL_S = 120.0
TRANSFER_TIMEOUT_S = 1800.0
FINISH_S = 60.0
EMPTY_S = 300.0
DONE = ("complete", "failed", "rejected", "shutdown", "orphaned")

# In the service, on the volume's machine: one tar of /v, to the first client that sends
# the token; a wrong or silent client is dropped and the wait goes on, up to its end.
SERVE = f"""
import hmac, os, socket, subprocess, sys, time
token = os.environ["{TOKEN_ENV}"].encode() + b"\\n"
deadline = time.monotonic() + {START_S + STALL_S}
server = socket.create_server(("", {PORT}))
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        sys.exit("nobody came for the volume")
    server.settimeout(left)
    try:
        conn, _ = server.accept()
    except OSError:
        continue
    conn.settimeout(10)
    try:
        said = conn.makefile("rb").readline(len(token))
    except OSError:
        said = b""
    if hmac.compare_digest(said, token):
        break
    conn.close()
conn.settimeout(None)  # blocking: tar writes to it directly
code = subprocess.call(["tar", "-C", "/v", "--numeric-owner", "-cf", "-", "."], stdout=conn)
conn.close()
sys.exit(code)
"""

# In the one-off container here: the stream to stdout. Connection refused or no name yet
# while the task starts there: tried again until the start deadline.
READ = f"""
import os, socket, sys, time
host, token = sys.argv[1], os.environ["{TOKEN_ENV}"].encode()
deadline = time.monotonic() + {START_S}
while True:
    try:
        conn = socket.create_connection((host, {PORT}), timeout=5)
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"its machine did not serve it within {START_S:g} s ({{exc}})")
        time.sleep(1)
conn.settimeout({STALL_S})
conn.sendall(token + b"\\n")
out = sys.stdout.buffer
try:
    while chunk := conn.recv(1 << 20):
        out.write(chunk)
except TimeoutError:
    sys.exit("its machine stopped sending for {STALL_S:g} s")
"""

EMPTY = "find /v -mindepth 1 -delete"


@dataclass(frozen=True)
class Remote:
    """A student's workspace on another node, as the hub's pin says."""

    user: str
    volume: str
    hostname: str
    node_id: str  # "" when no node of the swarm is that machine now (it left)
    state: str  # the node's: ready, down, unknown, ...
    availability: str = "active"  # the node's: active, pause, drain

    @property
    def unreachable(self) -> str:
        """Why its volume cannot be reached now, said after "it is"; "" when it can."""
        if not self.node_id:
            return "no longer in the class's swarm"
        if self.state != "ready":
            return self.state
        if self.availability != "active":
            return f"set to {self.availability}, so Swarm starts nothing there"
        return ""


def workspace_volume(settings: ClassSettings, user: str) -> str:
    """The student's workspace volume's name (jupyterhub_config.py's template): dockerspawner
    escapes the username with escapism, a-z and 0-9 safe, "-" as its escape character, and
    a class's usernames hold only those and "-" (settings.valid_username), so "-" is all it
    escapes, as "-2d" (`probe-1a` becomes `probe-2d1a`)."""
    return stack.workspace_prefix(settings.stack) + user.replace("-", "-2d")


def pin_of(model: Mapping[str, Any]) -> Any:
    """The placement.Pin in a hub user model (with its stopped server), or None."""
    server = (model.get("servers") or {}).get("") or {}
    return machines.placement().Pin.from_state(server.get("state") or {})


def elsewhere(settings: ClassSettings, users: list[str]) -> dict[str, Remote]:
    """The students among `users` whose workspace is on another node than this one.

    Only a class with other nodes asks the hub (one request per student)."""
    listed = swarm.nodes()
    here = next((str(n.get("ID", "")) for n in listed if n.get("Self")), "")
    if not any(str(n.get("ID", "")) != here for n in listed):
        return {}
    nodes = [machines.as_node(n) for n in listed]
    api = stack.hub(settings)
    found: dict[str, Remote] = {}
    for user in users:
        model = api.api("GET", f"/users/{user}?include_stopped_servers", ok=(404,)) or {}
        pin = pin_of(model) if isinstance(model, dict) else None
        if pin is None:
            continue
        node = machines.placement().node_of(pin, nodes)
        if node is not None and node.id == here:
            continue
        found[user] = Remote(
            user=user,
            volume=workspace_volume(settings, user),
            hostname=node.hostname if node else pin.hostname or pin.node_id,
            node_id=node.id if node else "",
            state=node.state if node else "",
            availability=node.availability if node else "",
        )
    return found


def _task(service: str) -> tuple[str, str]:
    """(state, error) of the service's newest task; ("", "") before it has one."""
    found = swarm.tasks(service)
    if not found:
        return "", ""
    words = str(found[0].get("CurrentState", "")).split()
    return (words[0].lower() if words else ""), str(found[0].get("Error", ""))


def wait_done(service: str, timeout: float) -> tuple[str, str]:
    """The task's end (state, error), or ("timed out", ...) once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        state, error = _task(service)
        if state in DONE:
            return state, error
        if time.monotonic() > deadline:
            return "timed out", f"still {state or 'not scheduled'} after {timeout:g} s"
        time.sleep(1)


def _image(settings: ClassSettings) -> str:
    """The student image's ID, as the running hub spawns it: every ready machine has it."""
    return node_files.of_class(settings, stack.service_name(settings, "hub")).image


@contextmanager
def oneoff_service(
    settings: ClassSettings, remote: Remote, *, read_only: bool, network: bool, argv: list[str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """A one-off service on the remote's node with its volume at /v, running `argv` as root;
    (its name, the environment that holds its token); removed on the way out."""
    name = f"{settings.stack}-oneoff-{secrets.token_hex(4)}"
    env = {TOKEN_ENV: secrets.token_hex(16)}
    mount = f"type=volume,source={remote.volume},target=/v" + (",readonly" if read_only else "")
    options = [
        "--detach", "--name", name, "--label", f"{stack.ONEOFF_LABEL}={settings.stack}",
        "--restart-condition", "none", "--constraint", f"node.id=={remote.node_id}",
        "--no-resolve-image", "--no-healthcheck", "--user", "root", "--mount", mount,
        # The token from this process's environment, not the command line.
        "--env", TOKEN_ENV, "--entrypoint", argv[0],
    ]  # fmt: skip
    if network:
        options += ["--network", f"{settings.stack}_class", "--endpoint-mode", "dnsrr"]
    try:
        docker.call(
            docker.docker_argv("service", "create", *options, _image(settings), *argv[1:]),
            env=env, timeout=60,
        )  # fmt: skip
        yield name, env
    finally:
        docker.run("service", "rm", name, timeout=60, check=False)


def read(settings: ClassSettings, remote: Remote, out: Path) -> None:
    """The remote volume as a tar into `out`; LabError saying why (and no `out`) when it
    could not be read whole."""
    try:
        argv = ["python3", "-c", SERVE]
        with oneoff_service(settings, remote, read_only=True, network=True, argv=argv) as (
            name,
            env,
        ):
            reader = f"{name}-reader"
            copy = [
                "run", "--rm", "--name", reader, "--network", f"{settings.stack}_class",
                "--env", TOKEN_ENV, "--entrypoint", "python3",
                _image(settings),
                "-c", READ, name,
            ]  # fmt: skip
            try:
                with open(out, "wb") as target:
                    copied = docker.stream(
                        docker.docker_argv(*copy), stdout=target, env=env,
                        timeout=TRANSFER_TIMEOUT_S, check=False,
                    )  # fmt: skip
            finally:
                docker.run("rm", "--force", reader, check=False)
            if not copied.ok:
                raise LabError(copied.last_line())
            # The stream's end is no proof that tar read everything: its exit code is.
            state, error = wait_done(name, FINISH_S)
            if state != "complete":
                raise LabError(f"reading it there {state}: {error or 'no error given'}")
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def empty(settings: ClassSettings, remote: Remote) -> None:
    """Delete everything in the remote volume (LabError saying why it could not); the
    empty volume stays on its machine (Docker removes no volume of another engine)."""
    argv = ["sh", "-c", EMPTY]
    with oneoff_service(settings, remote, read_only=False, network=False, argv=argv) as (name, _):
        state, error = wait_done(name, EMPTY_S)
    if state != "complete":
        raise LabError(f"emptying it there {state}: {error or 'no error given'}")
