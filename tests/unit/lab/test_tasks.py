"""The invoke tasks against the fake Docker gateway: what the user sees, what is run."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

import tasks
from mlflow_lab import COMPOSE_FILE
from mlflow_lab.core import http as local_http
from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import course, images, layout, stack, startup
from mlflow_lab.lab.compose import LabCompose
from tests.helpers import FakeDocker, isolate_settings

COMPOSE = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "mlflow-lab"]
PS_HEALTHY = "\n".join(
    json.dumps({"Service": s, "State": "running", "Health": "healthy", "Name": f"lab-{s}-1"})
    for s in ("mlflow", "jupyter")
)
DIGESTS = {service: images.inputs_digest(service) for service in ("mlflow", "jupyter")}


def built_image(argv: list[str]) -> str:
    """`docker image inspect --format ... mlflow-lab/SERVICE:TAG`: the tree's inputs label."""
    return DIGESTS[argv[-1].split("/", 1)[1].split(":", 1)[0]] + "\n"


@pytest.fixture
def fake(fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeDocker:
    """Settings from a temp state dir and no .env; an engine that answers; both images
    built from the tree as it is; the bundled lab and the course repo in place."""
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setattr(stack, "preflight", lambda lab: None)  # doctor's own tests
    fake_docker.on(r"^docker version --format", stdout="28.0\n")
    fake_docker.on(r"^docker image inspect --format \{\{index \.Config\.Labels", built_image)
    sync = layout.tool("workspace_sync.py")
    fake_docker.on(rf"^docker exec j1 python3 {sync} --source ", stdout="up to date\n")
    fake_docker.on(rf"^docker exec j1 test -e {layout.WORKSPACE}/\S+$")
    return fake_docker


def test_invoke_list_reads_like_a_manual() -> None:
    from invoke.collection import Collection

    collection = Collection.from_module(tasks)
    names = ("build", "up", "down", "destroy", "status", "logs", "clone", "screenshots", "test")
    for name in names:
        task = collection[name]
        assert task.__doc__ and task.__doc__.strip(), name
        params = [p for p in task.get_arguments() if p.name not in ("c",)]
        for arg in params:
            assert arg.help, f"{name} --{arg.name} has no help"


HEALTHY = "running 0 healthy\nrunning 0 healthy\n"


def lab(fake: FakeDocker, *states: str) -> FakeDocker:
    """Compose creates the containers, both start; `docker inspect` reports `states` in turn."""
    fake.on(r"^docker compose .* up --no-start --remove-orphans$")
    fake.on(
        r"^docker ps .*label=com\.docker\.compose\.project=mlflow-lab", "mlflow m1\njupyter j1\n"
    )
    fake.on(r"^docker start (m1|j1)$")
    fake.on(r"^docker inspect --format .* m1 j1$", list(states))
    fake.on(r"^docker compose .* stop$")
    return fake


@pytest.fixture
def answering(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The services whose URL answers; the test decides."""
    up: set[str] = {"mlflow", "jupyter"}
    monkeypatch.setattr(
        local_http, "answers", lambda url: any(s in url for s in map(PORTS.get, up))
    )
    monkeypatch.setattr(startup, "POLL_S", 0.001)
    monkeypatch.setattr(startup, "INSPECT_WHEN_ANSWERING_S", 0.001)
    return up


PORTS = {"mlflow": ":8080/", "jupyter": ":8888/"}


def test_up_starts_both_at_once_waits_and_prints_urls(
    fake: FakeDocker, answering: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    lab(fake, HEALTHY)
    tasks.up(MockContext())
    [create] = fake.matching(r" up --no-start")
    assert create.argv == [*COMPOSE, "up", "--no-start", "--remove-orphans"]
    # Both containers are started, neither waits for the other's health.
    assert sorted(argv for argv in fake.argvs if argv[1] == "start") == [
        ["docker", "start", "j1"],
        ["docker", "start", "m1"],
    ]
    assert not fake.matching(r" up --detach| stop$")
    assert create.env is not None
    assert create.env["LAB_MLFLOW_PORT"] == "8080"
    assert create.env["LAB_JUPYTER_TOKEN"] == "t" * 48
    out = capsys.readouterr().out
    assert "Bundled lab: up to date" in out
    assert "http://127.0.0.1:8080" in out
    assert f"http://127.0.0.1:8888/lab?token={'t' * 48}" in out
    assert 'Notebooks use mlflow.set_tracking_uri("http://127.0.0.1:8080").' in out


LOCKED = (
    "placing /home/student/workspace/{dir} failed: fatal: Unable to create "
    "'/home/student/workspace/{dir}/.git/index.lock': File exists."
)


@pytest.mark.parametrize("failing", [["bundled"], ["course"], ["bundled", "course"]])
def test_up_whose_material_cannot_be_placed_still_reports_the_lab_up_with_its_urls(
    fake: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    answering: set[str],
    capsys: pytest.CaptureFixture[str],
    failing: list[str],
) -> None:
    def place_bundled(compose: object) -> str:
        if "bundled" in failing:
            raise LabError(LOCKED.format(dir="mlflow-tracking-lab"))
        return "up to date"

    def place_course(compose: object, lab: object) -> list[str]:
        if "course" in failing:
            raise LabError(LOCKED.format(dir="MLOps"))
        return ["cloned"]

    monkeypatch.setattr(course, "place_bundled_lab", place_bundled)
    monkeypatch.setattr(course, "workspace_has", lambda compose, name: False)
    monkeypatch.setattr(course, "place_course_repo", place_course)
    lab(fake, HEALTHY)
    tasks.up(MockContext())  # no Exit: the lab runs, so `up` succeeds (exit code 0)
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    names = {
        "bundled": "the bundled lab (mlflow-tracking-lab/)",
        "course": "the course repo (MLOps/)",
    }
    assert len(warnings) == len(failing)
    for part, line in zip(failing, warnings, strict=True):
        assert line.startswith(f"warning: the lab is up, but {names[part]} was not placed (")
        assert "index.lock" in line and line.endswith("run `invoke clone` to place it")
    assert "http://127.0.0.1:8080" in out
    assert f"http://127.0.0.1:8888/lab?token={'t' * 48}" in out
    assert not fake.matching(r" stop$"), "the lab stays up"


def test_up_waits_for_docker_to_call_both_healthy(fake: FakeDocker, answering: set[str]) -> None:
    starting = "running 0 healthy\nrunning 0 starting\n"
    lab(fake, starting, starting, HEALTHY)
    tasks.up(MockContext())
    assert len(fake.matching(r"^docker inspect ")) == 3


def test_up_builds_only_what_is_stale(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch, answering: set[str]
) -> None:
    built: list[list[str] | None] = []
    stale = r"^docker image inspect .* mlflow-lab/jupyter:latest$"
    fake.on(stale, DIGESTS["mlflow"])  # built from other inputs
    monkeypatch.setattr(
        images, "build", lambda lab, services, verbose=False: built.append(services)
    )
    lab(fake, HEALTHY)
    tasks.up(MockContext())
    assert built == [["jupyter"]]
    fake.fail(stale, "Error: No such image: mlflow-lab/jupyter:latest")
    before = len(fake.calls)
    with pytest.raises(Exit, match="the jupyter image is missing or out of date"):
        tasks.up(MockContext(), no_build=True)
    assert all(" image inspect " in line for line in fake.lines[before:]), "nothing started"


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("running 0 unhealthy\nrunning 0 starting\n", "the mlflow service is unhealthy"),
        ("running 0 healthy\nexited 2 \n", "the jupyter container stopped (exit code 2)"),
        ("restarting 1 starting\nrunning 0 healthy\n", "the mlflow container keeps restarting"),
    ],
)
def test_up_that_cannot_get_ready_stops_the_stack_and_says_why(
    fake: FakeDocker, answering: set[str], state: str, reason: str
) -> None:
    answering.clear()
    lab(fake, state)
    with pytest.raises(Exit) as raised:
        tasks.up(MockContext())
    message = str(raised.value.message)
    assert message == f"error: {reason}: see `invoke logs`, fix it, then `invoke up` again"
    assert raised.value.code == 1
    assert fake.argvs[-1] == [*COMPOSE, "stop"], "no half-started stack may be left running"


def test_up_that_times_out_names_the_service_that_never_answered(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch, answering: set[str]
) -> None:
    answering.discard("jupyter")
    monkeypatch.setattr(startup, "READY_TIMEOUT_S", 0.05)
    lab(fake, "running 0 healthy\nrunning 0 starting\n")
    with pytest.raises(Exit, match=r"error: the jupyter service was not ready after 0.05 s"):
        tasks.up(MockContext())
    assert fake.argvs[-1] == [*COMPOSE, "stop"]


def test_up_when_a_container_cannot_start_stops_the_other(
    fake: FakeDocker, answering: set[str]
) -> None:
    lab(fake, HEALTHY)
    fake.fail(
        r"^docker start j1$", "Error: Bind for 127.0.0.1:8888 failed: port is already allocated\n"
    )
    with pytest.raises(Exit) as raised:
        tasks.up(MockContext())
    assert str(raised.value.message).startswith(
        "error: the jupyter container did not start: Error: Bind for 127.0.0.1:8888 failed"
    )
    assert fake.argvs[-1] == [*COMPOSE, "stop"]


def test_bad_setting_is_one_line_without_traceback(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_MLFLOW_PORT", "abc")
    with pytest.raises(Exit) as raised:
        tasks.up(MockContext())
    assert raised.value.message == (
        "error: LAB_MLFLOW_PORT='abc' is not a port number: set it to a whole number from 1 "
        "to 65535 (in .env or the environment)"
    )
    assert fake.calls == [], "nothing is asked of Docker with a bad setting"


def test_down_keeps_volumes(fake: FakeDocker, capsys: pytest.CaptureFixture[str]) -> None:
    fake.on(r"^docker compose .* stop$")
    tasks.down(MockContext())
    assert fake.argvs[-1] == [*COMPOSE, "stop"]
    assert not fake.matching("--volumes|down")
    assert "its data is kept" in capsys.readouterr().out


def test_down_without_an_engine_says_how_to_start_it(fake: FakeDocker) -> None:
    fake.fail(r"^docker version", "Cannot connect to the Docker daemon at unix:///x.sock")
    with pytest.raises(Exit, match=r"^error: the Docker engine is not running.*systemctl"):
        tasks.down(MockContext())
    assert not fake.matching("compose")


def test_destroy_refuses_without_yes_when_nobody_can_answer(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(Exit, match="add --yes to confirm"):
        tasks.destroy(MockContext())
    assert not fake.matching("compose"), "nothing is deleted"


def test_destroy_asks_and_does_nothing_unless_told_yes(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake.on(r"^docker compose .* down --volumes --remove-orphans$")
    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    tasks.destroy(MockContext())
    assert not fake.matching("compose")
    assert "Nothing was deleted." in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    tasks.destroy(MockContext())
    assert fake.argvs[-1] == [*COMPOSE, "down", "--volumes", "--remove-orphans"]


def test_destroy_with_yes_removes_volumes(fake: FakeDocker) -> None:
    fake.on(r"^docker compose .* down --volumes --remove-orphans$")
    tasks.destroy(MockContext(), yes=True)
    assert fake.matching("compose") == fake.calls[-1:]
    assert fake.argvs[-1] == [*COMPOSE, "down", "--volumes", "--remove-orphans"]


def test_status_json_reports_state_health_and_token(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local_http, "answers", lambda url: "8080" in url)
    fake.on(r"^docker compose .* ps --all --format json$", PS_HEALTHY)
    tasks.status(MockContext(), json_=True)
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["ready"] is False, "jupyter does not answer, so the lab is not ready"
    assert report["services"]["mlflow"] == {
        "url": "http://127.0.0.1:8080",
        "state": "running",
        "health": "healthy",
        "responding": True,
    }
    assert report["services"]["jupyter"]["token"] == "t" * 48
    assert report["services"]["jupyter"]["responding"] is False


def test_status_of_a_stopped_lab(
    fake: FakeDocker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local_http, "answers", lambda url: True)
    fake.on(r" ps --all --format json$", "")
    report = stack.status(settings.load())
    assert report["ready"] is False
    assert report["services"]["mlflow"]["state"] == "absent"
    assert report["services"]["mlflow"]["responding"] is False, "absent answers nothing"
    tasks.status(MockContext())
    out = capsys.readouterr().out
    assert out.startswith("Lab 'mlflow-lab': not ready")
    assert f"Jupyter token: {'t' * 48}" in out


def test_logs_validates_the_service_and_follows(fake: FakeDocker) -> None:
    with pytest.raises(Exit, match="no service named 'db': use one of mlflow, jupyter"):
        tasks.logs(MockContext(), service="db")
    assert fake.calls == []
    fake.on(r"^docker compose .* logs ")
    tasks.logs(MockContext(), service="mlflow", follow=True, tail=20)
    assert fake.argvs[-1] == [*COMPOSE, "logs", "--tail", "20", "--follow", "mlflow"]
    tasks.logs(MockContext())
    assert fake.argvs[-1] == [*COMPOSE, "logs", "--tail", "200"]
    fake.on(r" logs ", code=1)
    with pytest.raises(Exit, match=r"`docker compose logs` failed \(exit code 1\)"):
        tasks.logs(MockContext())


def test_clone_needs_a_running_lab(fake: FakeDocker) -> None:
    fake.on(r"^docker compose .* ps --all --format json$", "")
    with pytest.raises(Exit, match="the lab is not running: start it with `invoke up`"):
        tasks.clone(MockContext())
    assert not fake.matching(r"^docker exec"), "nothing is placed"


def test_compose_failure_on_a_full_disk_says_so(fake: FakeDocker) -> None:
    fake.fail(r" build mlflow$", "write /var/lib/docker/x: no space left on device")
    with pytest.raises(LabError, match=r"^the disk is full: free space"):
        LabCompose(settings.load()).run("build", "mlflow")
    fake.fail(r" build mlflow$", "some other failure\n")
    with pytest.raises(LabError) as raised:
        LabCompose(settings.load()).run("build", "mlflow")
    assert str(raised.value) == "`docker compose build` failed: some other failure"


def test_the_readme_task_table_lists_every_task() -> None:
    from invoke.collection import Collection

    readme = (Path(tasks.__file__).parent / "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `invoke ([a-z][\w.-]*)", readme, flags=re.MULTILINE)
    assert sorted(set(table)) == sorted(Collection.from_module(tasks).task_names)
