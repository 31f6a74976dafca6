"""A second Docker engine on this machine that can join the main engine's swarm as a worker.

It stands in for a classroom's second machine: a `dockerd` in a network namespace of its
own, joined to this machine by a veth pair, so it has its own address (`address`) and
reaches the main engine at the veth's host side (`manager_address`, what a manager
advertises for it). It also has its own hostname (a Swarm node's name) and a private
mount namespace with a tmpfs on /var/run/docker: two engines otherwise share the
netns files there (`ip netns exec` is no help: it remounts /sys and hides the cgroups).

Torn down completely, also when it fails to start: the daemon and every process in its
namespace stopped, the namespace and veth deleted, its data removed. In between, its
engine can be stopped and started again (`stop_engine`, `start_engine`): a machine that
went off and came back with its disk.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.docker_host import DockerHost

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60
# /30 blocks from 198.19.0.0/16 (the RFC 2544 benchmarking range, which no real network
# uses); the disk-full test's bridge is in 198.18.254.0/24.
SUBNETS = ipaddress.ip_network("198.19.0.0/16")
NEEDED = ("dockerd", "ip", "nsenter", "unshare", "docker")
_serial = itertools.count()


class _Daemon:
    """The engine's dockerd process, which may be stopped and started again."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.command: list[str] = []


@dataclass(frozen=True)
class WorkerEngine(DockerHost):
    name: str  # of the netns, the veth pair's prefix and the node's hostname
    host: str  # DOCKER_HOST of this engine
    address: str  # its own address
    manager_address: str  # this machine's address as the worker sees it
    root: Path  # its data, exec root, socket and log
    daemon: _Daemon = field(default_factory=_Daemon, compare=False, repr=False)

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def start_engine(self) -> None:
        """Start its dockerd (again: with its data, so it rejoins its swarm by itself)."""
        assert self.daemon.process is None or self.daemon.process.poll() is not None
        # What a reboot clears (/var/run/docker): the runtime state of the engine that stopped.
        shutil.rmtree(self.root / "exec", ignore_errors=True)
        with self.log.open("ab") as log:
            self.daemon.process = subprocess.Popen(
                self.daemon.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        _wait_started(self, self.daemon.process)

    def stop_engine(self) -> None:
        """Stop its dockerd and everything it ran, as a machine switched off would."""
        if self.daemon.process is not None:
            _stop(self.daemon.process, self.name)

    def swarm_state(self) -> str:
        return self.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with DOCKER_HOST pointing here: tools run as on the worker machine."""
        return {**base, "DOCKER_HOST": self.host}


def missing_prerequisite() -> str:
    """Why no worker engine can run here; "" when one can."""
    if os.geteuid() != 0:
        return "a second Docker engine needs root"
    absent = [tool for tool in NEEDED if shutil.which(tool) is None]
    if absent:
        return f"a second Docker engine needs {', '.join(absent)} on this machine"
    if not Path("/var/run/docker").is_dir():
        return "no main Docker engine here (/var/run/docker is missing)"
    return ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _free_subnet() -> ipaddress.IPv4Network:
    used = _ip("-o", "-4", "addr", "show").stdout
    blocks = list(SUBNETS.subnets(new_prefix=30))
    start = (os.getpid() * 7 + next(_serial)) % len(blocks)
    for block in blocks[start:] + blocks[:start]:
        if all(f" {host}/" not in used for host in block.hosts()):
            return block  # type: ignore[return-value]
    raise RuntimeError(f"no free /30 left in {SUBNETS}")


def _stop(daemon: subprocess.Popen[bytes], netns: str) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
    # What dockerd left in its namespace (containerd and its shims): ours, by pid.
    for _ in range(10):
        pids = [int(p) for p in _ip("netns", "pids", netns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_started(engine: WorkerEngine, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while daemon.poll() is None and time.monotonic() < deadline:
        if engine.docker("info", timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    how = f"exited {daemon.returncode}" if daemon.poll() is not None else "did not answer"
    raise RuntimeError(f"the worker engine {how}; its log ends:\n{_tail(engine.log)}")


@contextmanager
def worker_engine(extra_args: Sequence[str] = ()) -> Iterator[WorkerEngine]:
    """A second dockerd in a netns joined to this machine by a veth pair; skips the test
    with the reason when this machine cannot run one."""
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    serial = next(_serial)
    name = f"labw{os.getpid() % 100000}x{serial}"  # <= 15 characters: a link name
    subnet = _free_subnet()
    manager_side, worker_side = (str(h) for h in subnet.hosts())
    outside, inside = f"{name}h", f"{name}n"
    # Short: a unix socket path may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="labw-", dir="/tmp"))
    engine = WorkerEngine(
        name=name,
        host=f"unix://{root / 'docker.sock'}",
        address=worker_side,
        manager_address=manager_side,
        root=root,
    )
    try:
        _ip("netns", "add", name)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{manager_side}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", name, "addr", "add", f"{worker_side}/30", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", manager_side)
        (root / "daemon.json").write_text("{}\n", encoding="utf-8")
        dockerd = [
            "dockerd",
            f"--config-file={root / 'daemon.json'}",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'dockerd.pid'}",
            f"--host={engine.host}",
            *extra_args,
        ]
        # Its bridges and iptables rules live in its own namespace: the main engine's
        # docker0 and rules stay untouched.
        script = 'hostname "$1" && mount -t tmpfs tmpfs /var/run/docker && shift && exec "$@"'
        engine.daemon.command = [
            "nsenter", f"--net=/run/netns/{name}",
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", script, "sh", name, *dockerd,
        ]  # fmt: skip
        engine.start_engine()
        yield engine
    finally:
        engine.stop_engine()
        _ip("netns", "delete", name, check=False)
        _ip("link", "delete", outside, check=False)  # gone with its peer, unless half-made
        shutil.rmtree(root, ignore_errors=True)


def links() -> set[str]:
    """This machine's network interfaces (the main namespace)."""
    listing = _ip("-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()}


def netns_names() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}


@dataclass(frozen=True)
class Manager:
    address: str  # host:port a worker joins
    worker_token: str


def _main_docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def manager_swarm(advertise: str) -> Iterator[Manager]:
    """The main engine as the manager of a swarm of its own, advertising `advertise`; left
    afterwards, with the docker_gwbridge network it brought. Skips the test when the engine
    is in a swarm already (someone else's: it is not ours to leave)."""
    state = _main_docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "inactive":
        pytest.skip(f"the main engine's swarm is {state or 'unknown'}, not ours to make")
    gwbridge_before = _main_docker("network", "inspect", "docker_gwbridge").returncode == 0
    try:
        made = _main_docker("swarm", "init", "--advertise-addr", advertise)
        assert made.returncode == 0, made.stderr
        token = _main_docker("swarm", "join-token", "-q", "worker").stdout.strip()
        yield Manager(f"{advertise}:2377", token)
    finally:
        _main_docker("swarm", "leave", "--force")
        if not gwbridge_before:
            _main_docker("network", "rm", "docker_gwbridge")


def join(worker: WorkerEngine, manager: Manager) -> None:
    """The worker joins `manager`'s swarm as `docker swarm join` does it (no tool of ours)."""
    joined = worker.docker("swarm", "join", "--token", manager.worker_token, manager.address)
    assert joined.returncode == 0, joined.stderr


def carry_image(worker: WorkerEngine, image: str) -> subprocess.CompletedProcess[bytes]:
    """`docker save IMAGE | docker -H WORKER load`: a worker has no registry to pull from."""
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    assert save.stdout is not None
    with save:
        loaded = subprocess.run(
            ["docker", "-H", worker.host, "load"],
            stdin=save.stdout,
            capture_output=True,
            timeout=600,
            check=False,
        )
    if save.returncode:
        return subprocess.CompletedProcess(save.args, save.returncode, b"", b"docker save failed")
    return loaded
