"""Per-student limits and the idle culler, on the package's class redeployed with
tighter settings (LAB_CLASS_CPU_LIMIT, LAB_CLASS_MEM_LIMIT, LAB_CLASS_IDLE_MINUTES=1) and
put back as it was at the end, so the other modules' servers are not culled.

With one idle minute the culler checks every 30 s (docker/hub/jupyterhub_config.py), so
an idle server is stopped at most 60 + 30 s after its last activity, plus the stop:
the test's 180 s bound holds with room for a slow engine.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.classroom.conftest import IMAGE_TAG, Classroom, docker

TIGHT = {"LAB_CLASS_CPU_LIMIT": "0.5", "LAB_CLASS_MEM_LIMIT": "768M", "LAB_CLASS_IDLE_MINUTES": "1"}
NANO_CPUS = 500_000_000
MEMORY_BYTES = 768 << 20
CULL_BOUND_S = 180
USER = "dora"
NOTE = {"type": "file", "format": "text", "content": "kept across the cull\n"}


@pytest.fixture(scope="module")
def tight(classroom: Classroom) -> Iterator[Classroom]:
    before = {name: classroom.env[name] for name in TIGHT}
    try:
        classroom.redeploy(**TIGHT)
        yield classroom
    finally:
        classroom.redeploy(**before)


@pytest.fixture(scope="module")
def dora(tight: Classroom, tmp_path_factory: pytest.TempPathFactory) -> str:
    roster = tmp_path_factory.mktemp("roster") / "dora.csv"
    roster.write_text(f"{USER},Dora D\n")
    tight.invoke("classroom.students", "add", str(roster))
    return tight.passwords()[USER]


def service_of(room: Classroom, user: str) -> list[str]:
    return docker(
        "service", "ls", "-q",
        "--filter", f"label=org.mlflow-lab.class={room.stack}",
        "--filter", f"label=org.mlflow-lab.student={user}",
    ).stdout.split()  # fmt: skip


def cgroup_limits(container: str) -> tuple[int, float]:
    """(memory bytes, CPUs) the kernel enforces on the container: cgroup v1 or v2."""
    script = (
        "if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/memory.max; "
        "cat /sys/fs/cgroup/cpu.max; else cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
        "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us); fi"
    )
    memory, cpu = docker("exec", container, "sh", "-c", script).stdout.split("\n")[:2]
    quota, period = cpu.split()
    return int(memory), int(quota) / int(period)


def test_a_students_server_has_the_class_limits(tight: Classroom, dora: str) -> None:
    container = tight.spawn(tight.login(USER, dora), USER)
    (service,) = service_of(tight, USER)
    limits = docker(
        "service", "inspect", "--format", "{{json .Spec.TaskTemplate.Resources.Limits}}", service
    ).stdout
    assert f'"NanoCPUs":{NANO_CPUS}' in limits and f'"MemoryBytes":{MEMORY_BYTES}' in limits, limits
    assert cgroup_limits(container) == (MEMORY_BYTES, 0.5)


def test_a_students_server_yields_the_cpu_to_the_class_services(
    tight: Classroom, dora: str
) -> None:
    """On the hub's machine (docker/hub/class_spawner.py `cpu_shares`): the kernel's weight
    (cgroup v1's cpu.shares; v2 maps it onto cpu.weight), the services' left at Docker's."""
    container = tight.spawn(tight.login(USER, dora), USER)
    weight = "cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu.weight"
    assert docker("exec", container, "sh", "-c", weight).stdout.strip() in {"32", "2"}
    services = [tight.service_container(name) for name in ("mlflow", "hub", "db")]
    shares = docker("inspect", "--format", "{{.HostConfig.CpuShares}}", *services).stdout
    assert shares.split() == ["0", "0", "0"], "the services keep Docker's default weight"


def hub_log(room: Classroom) -> str:
    """The running hub's log only (`service logs` mixes in the earlier deployments')."""
    done = docker("logs", room.service_container("hub"), check=False)
    return done.stdout + done.stderr


def server_of(room: Classroom, user: str) -> dict[str, object]:
    model = room.admin().api("GET", f"/users/{user}")
    return dict((model.get("servers") or {}).get("", {}))


def stop(room: Classroom, user: str) -> None:
    room.admin().api("DELETE", f"/users/{user}/server", ok=(400, 404))
    deadline = time.monotonic() + 120
    while (server_of(room, user) or service_of(room, user)) and time.monotonic() < deadline:
        time.sleep(1)


def test_an_idle_server_is_culled_and_its_work_comes_back(tight: Classroom, dora: str) -> None:
    # The culler of this deployment runs, with the interval the bound counts on.
    started = re.findall(r"Starting service 'idle-culler': \[.*?\]", hub_log(tight))
    assert started, "the hub did not start its idle culler"
    assert all("'--timeout=60'" in s and "'--cull-every=30'" in s for s in started), started

    # A server just started, so its idle time is counted from now.
    stop(tight, USER)
    session = tight.login(USER, dora)
    tight.spawn(session, USER)
    status, _, text = session.request("PUT", f"/user/{USER}/api/contents/note.txt", NOTE)
    assert status in (200, 201), text
    active = time.monotonic()
    while server_of(tight, USER) and time.monotonic() - active < CULL_BOUND_S:
        time.sleep(2)
    assert not server_of(tight, USER), f"not culled within {CULL_BOUND_S} s of its last activity"
    assert f"Culling server {USER} (inactive for" in hub_log(tight)
    deadline = time.monotonic() + 60
    while service_of(tight, USER) and time.monotonic() < deadline:
        time.sleep(1)
    assert not service_of(tight, USER), "the culled server's Swarm service is still there"

    # The note is on Dora's workspace volume while no server runs...
    (volume,) = docker(
        "volume", "ls", "-q",
        "--filter", f"label=org.mlflow-lab.class={tight.stack}",
        "--filter", f"label=org.mlflow-lab.student={USER}",
    ).stdout.split()  # fmt: skip
    kept = docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/v:ro", "--entrypoint", "cat",
        f"mlflow-lab/class-db:{IMAGE_TAG}", "/v/note.txt",
    ).stdout  # fmt: skip
    assert kept == NOTE["content"]
    # ...and back in her server when she starts it again.
    session = tight.login(USER, dora)
    tight.spawn(session, USER)
    status, _, text = session.request("GET", f"/user/{USER}/api/contents/note.txt")
    assert status == 200 and json.loads(text)["content"] == NOTE["content"], text
