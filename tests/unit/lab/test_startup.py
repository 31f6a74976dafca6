"""Starting the containers and waiting for both services, with a fake gateway and HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_lab.core import http as local_http
from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import startup
from mlflow_lab.lab.compose import LabCompose
from mlflow_lab.lab.startup import NotReady, State
from tests.helpers import FakeDocker, isolate_settings

IDS = {"mlflow": "m1", "jupyter": "j1"}
INSPECT = r"^docker inspect --format .* m1 j1$"


@pytest.fixture
def compose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LabCompose:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setattr(startup, "POLL_S", 0.001)
    monkeypatch.setattr(startup, "INSPECT_EVERY_S", 0.001)
    monkeypatch.setattr(startup, "INSPECT_WHEN_ANSWERING_S", 0.001)
    return LabCompose(settings.load())


# ------------------------------------------------------------------------ start


def test_start_creates_with_compose_then_starts_both(
    fake_docker: FakeDocker, compose: LabCompose
) -> None:
    fake_docker.on(r"^docker compose .* up --no-start --remove-orphans$")
    fake_docker.on(r"^docker ps ", "mlflow m1\njupyter j1\n")
    fake_docker.on(r"^docker start (m1|j1)$")
    assert startup.start(compose) == IDS
    assert fake_docker.argvs[0][-3:] == ["up", "--no-start", "--remove-orphans"]
    assert sorted(a for a in fake_docker.argvs if a[1] == "start") == [
        ["docker", "start", "j1"],
        ["docker", "start", "m1"],
    ]


def test_start_of_a_container_compose_did_not_create(
    fake_docker: FakeDocker, compose: LabCompose
) -> None:
    fake_docker.on(r" up --no-start ")
    fake_docker.on(r"^docker ps ", "mlflow m1\n")
    with pytest.raises(NotReady, match=r"^the jupyter container was not created$"):
        startup.start(compose)
    assert not fake_docker.matching(r"^docker start"), "nothing is started half"


def test_a_container_that_will_not_start_says_why(
    fake_docker: FakeDocker, compose: LabCompose
) -> None:
    fake_docker.on(r" up --no-start ")
    fake_docker.on(r"^docker ps ", "mlflow m1\njupyter j1\n")
    fake_docker.on(r"^docker start m1$")
    fake_docker.fail(r"^docker start j1$", "Error: port is already allocated\n")
    with pytest.raises(NotReady, match=r"^the jupyter container did not start: Error: port is"):
        startup.start(compose)


def test_a_compose_failure_is_its_one_line(fake_docker: FakeDocker, compose: LabCompose) -> None:
    fake_docker.fail(r" up --no-start ", 'service "mlflow" refers to undefined volume x\n')
    with pytest.raises(LabError) as raised:
        startup.start(compose)
    assert str(raised.value) == (
        '`docker compose up` failed: service "mlflow" refers to undefined volume x'
    )


# ------------------------------------------------------------------ states, problem


def test_states_read_status_exit_code_and_health(fake_docker: FakeDocker) -> None:
    fake_docker.on(INSPECT, "running 0 healthy\nexited 137 \n")
    assert startup.states(IDS) == {
        "mlflow": State("running", 0, "healthy"),
        "jupyter": State("exited", 137, ""),
    }
    argv = fake_docker.argvs[0]
    assert argv[:3] == ["docker", "inspect", "--format"] and argv[3] == startup.STATE_FORMAT


def test_states_of_containers_that_are_gone(fake_docker: FakeDocker) -> None:
    fake_docker.fail(INSPECT, "Error: No such object: j1")
    assert startup.states(IDS) == {}
    fake_docker.on(INSPECT, "created  \n")
    assert startup.states(IDS) == {"mlflow": State("created", 0, "")}


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (None, "the mlflow container is gone"),
        (State("exited", 3, ""), "the mlflow container stopped (exit code 3)"),
        (State("dead", 0, ""), "the mlflow container stopped (exit code 0)"),
        (State("restarting", 1, "starting"), "the mlflow container keeps restarting"),
        (State("running", 0, "unhealthy"), "the mlflow service is unhealthy"),
        (State("running", 0, "starting"), None),
        (State("created", 0, ""), None),
        (State("running", 0, "healthy"), None),
    ],
)
def test_problem_says_when_waiting_longer_will_not_help(
    state: State | None, reason: str | None
) -> None:
    assert startup.problem("mlflow", state) == reason


# -------------------------------------------------------------------- wait_ready


@pytest.fixture
def up(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The services whose URL answers (the test fills it)."""
    answering: set[str] = set()
    ports = {"mlflow": ":8080/health", "jupyter": ":8888/api/status?token="}

    def answers(url: str, timeout: float = 2) -> bool:
        return any(ports[s] in url for s in answering)

    monkeypatch.setattr(local_http, "answers", answers)
    return answering


def test_probe_urls_are_the_published_ports_with_the_token(compose: LabCompose) -> None:
    assert startup.probe_urls(compose) == {
        "mlflow": "http://127.0.0.1:8080/health",
        "jupyter": f"http://127.0.0.1:8888/api/status?token={'t' * 48}",
    }


def test_ready_when_both_answer_and_are_healthy(
    fake_docker: FakeDocker, compose: LabCompose, up: set[str]
) -> None:
    up.update({"mlflow", "jupyter"})
    fake_docker.on(INSPECT, ["running 0 starting\nrunning 0 healthy\n", "running 0 healthy\n" * 2])
    seen: list[str] = []
    startup.wait_ready(compose, IDS, seen.append)
    assert sorted(seen) == ["jupyter", "mlflow"]
    assert len(fake_docker.calls) == 2, "ready only once Docker calls both healthy"


def test_each_service_is_announced_once_as_it_first_answers(
    fake_docker: FakeDocker, compose: LabCompose, up: set[str]
) -> None:
    up.add("jupyter")
    seen: list[str] = []

    def inspected(argv: list[str]) -> str:
        if len(fake_docker.calls) == 3:
            up.add("mlflow")  # MLflow, the slower, answers later
        return (
            "running 0 starting\nrunning 0 healthy\n"
            if len(fake_docker.calls) < 5
            else ("running 0 healthy\nrunning 0 healthy\n")
        )

    fake_docker.on(INSPECT, inspected)
    startup.wait_ready(compose, IDS, seen.append)
    assert seen == ["jupyter", "mlflow"]


def test_a_container_that_stops_ends_the_wait_at_once(
    fake_docker: FakeDocker, compose: LabCompose, up: set[str]
) -> None:
    fake_docker.on(INSPECT, "running 0 starting\nexited 1 \n")
    with pytest.raises(NotReady, match=r"^the jupyter container stopped \(exit code 1\)$"):
        startup.wait_ready(compose, IDS)
    assert len(fake_docker.calls) == 1


def test_a_service_that_never_answers_is_named_after_the_timeout(
    fake_docker: FakeDocker, compose: LabCompose, up: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup, "READY_TIMEOUT_S", 0.05)
    up.add("jupyter")
    fake_docker.on(INSPECT, "running 0 starting\nrunning 0 healthy\n")
    with pytest.raises(NotReady, match=r"^the mlflow service was not ready after 0.05 s$"):
        startup.wait_ready(compose, IDS)


def test_answering_but_never_healthy_names_the_unhealthy_one(
    fake_docker: FakeDocker, compose: LabCompose, up: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup, "READY_TIMEOUT_S", 0.05)
    up.update({"mlflow", "jupyter"})
    fake_docker.on(INSPECT, "running 0 healthy\nrunning 0 starting\n")
    with pytest.raises(NotReady, match=r"^the jupyter service was not ready after 0.05 s$"):
        startup.wait_ready(compose, IDS)
