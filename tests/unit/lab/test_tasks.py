"""The invoke tasks, driven with invoke.MockContext: no Docker needed."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit
from invoke.runners import Result

import tasks
from mlflow_lab.core import engine, settings
from mlflow_lab.core import http as local_http
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import course, images, stack, startup
from tests.helpers import isolate_settings

PS_HEALTHY = "\n".join(
    json.dumps({"Service": s, "State": "running", "Health": "healthy", "Name": f"lab-{s}-1"})
    for s in ("mlflow", "jupyter")
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from a temp state dir and no .env; no Docker behind any check."""
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setattr(engine, "compose_command", lambda: "docker compose")
    monkeypatch.setattr(engine, "engine_version", lambda: "28.0")
    monkeypatch.setattr(stack, "preflight", lambda lab: None)
    monkeypatch.setattr(images, "stale_images", lambda compose: [])
    monkeypatch.setattr(course, "place_bundled_lab", lambda compose: "up to date")
    monkeypatch.setattr(course, "workspace_has", lambda compose, name: True)


def commands(c: MockContext) -> list[str]:
    return [call.args[0] for call in c.run.call_args_list]  # type: ignore[attr-defined]


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


def lab_context(*states: str, extra: dict[str, Result] | None = None) -> MockContext:
    """Compose creates the containers, both start; `docker inspect` reports `states` in turn."""
    return MockContext(
        run={
            re.compile(r".* up --no-start"): Result(exited=0),
            re.compile(r"^docker ps --all"): Result(stdout="mlflow m1\njupyter j1\n"),
            re.compile(r"^docker start "): Result(exited=0),
            re.compile(r"^docker inspect "): [Result(stdout=state) for state in states],
            re.compile(r".* stop$"): Result(exited=0),
            **(extra or {}),
        }
    )


HEALTHY = "running 0 healthy\nrunning 0 healthy\n"


@pytest.fixture
def answering(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The services whose URL answers; the test decides."""
    up: set[str] = {"mlflow", "jupyter"}
    monkeypatch.setattr(
        local_http, "answers", lambda url: any(s in url for s in map(PORTS.get, up))
    )
    monkeypatch.setattr(startup, "POLL_S", 0.001)
    return up


PORTS = {"mlflow": ":8080/", "jupyter": ":8888/"}


def test_up_starts_both_at_once_waits_and_prints_urls(
    answering: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    c = lab_context(HEALTHY)
    tasks.up(c)
    run = commands(c)
    assert "-p mlflow-lab up --no-start" in run[0]
    # Both containers are started, neither waits for the other's health.
    assert sorted(cmd for cmd in run if cmd.startswith("docker start")) == [
        "docker start j1",
        "docker start m1",
    ]
    assert not any(" up --detach" in cmd or " stop" in cmd for cmd in run)
    env = c.run.call_args_list[0].kwargs["env"]  # type: ignore[attr-defined]
    assert env["LAB_MLFLOW_PORT"] == "8080"
    assert env["LAB_JUPYTER_TOKEN"] == "t" * 48
    out = capsys.readouterr().out
    assert "Bundled lab: up to date" in out
    assert "http://127.0.0.1:8080" in out
    assert f"http://127.0.0.1:8888/lab?token={'t' * 48}" in out


LOCKED = (
    "placing /home/student/workspace/{dir} failed: fatal: Unable to create "
    "'/home/student/workspace/{dir}/.git/index.lock': File exists."
)


@pytest.mark.parametrize("failing", [["bundled"], ["course"], ["bundled", "course"]])
def test_up_whose_material_cannot_be_placed_still_reports_the_lab_up_with_its_urls(
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
    c = lab_context(HEALTHY)
    tasks.up(c)  # no Exit: the lab runs, so `up` succeeds (exit code 0)
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
    assert not any(cmd.endswith(" stop") for cmd in commands(c)), "the lab stays up"


def test_up_waits_for_docker_to_call_both_healthy(answering: set[str]) -> None:
    starting = "running 0 healthy\nrunning 0 starting\n"
    c = lab_context(starting, starting, HEALTHY)
    tasks.up(c)
    assert sum(cmd.startswith("docker inspect") for cmd in commands(c)) == 3


def test_up_builds_only_what_is_stale(monkeypatch: pytest.MonkeyPatch, answering: set[str]) -> None:
    built: list[list[str] | None] = []
    monkeypatch.setattr(images, "stale_images", lambda compose: ["jupyter"])
    monkeypatch.setattr(images, "build", lambda ctx, lab, services: built.append(services))
    tasks.up(lab_context(HEALTHY))
    assert built == [["jupyter"]]
    with pytest.raises(Exit, match="the jupyter image is missing or out of date"):
        tasks.up(MockContext(run=Result(exited=0)), no_build=True)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("running 0 unhealthy\nrunning 0 starting\n", "the mlflow service is unhealthy"),
        ("running 0 healthy\nexited 2 \n", "the jupyter container stopped (exit code 2)"),
        ("restarting 1 starting\nrunning 0 healthy\n", "the mlflow container keeps restarting"),
    ],
)
def test_up_that_cannot_get_ready_stops_the_stack_and_says_why(
    answering: set[str], state: str, reason: str
) -> None:
    answering.clear()
    c = lab_context(state)
    with pytest.raises(Exit) as raised:
        tasks.up(c)
    message = str(raised.value.message)
    assert message == f"error: {reason}: see `invoke logs`, fix it, then `invoke up` again"
    assert raised.value.code == 1
    assert commands(c)[-1].endswith(" stop"), "no half-started stack may be left running"


def test_up_that_times_out_names_the_service_that_never_answered(
    monkeypatch: pytest.MonkeyPatch, answering: set[str]
) -> None:
    answering.discard("jupyter")
    monkeypatch.setattr(startup, "READY_TIMEOUT_S", 0.05)
    c = lab_context("running 0 healthy\nrunning 0 starting\n")
    with pytest.raises(Exit, match=r"error: the jupyter service was not ready after 0.05 s"):
        tasks.up(c)
    assert commands(c)[-1].endswith(" stop")


def test_up_when_a_container_cannot_start_stops_the_other(answering: set[str]) -> None:
    bound = Result(
        exited=1, stderr="Error: Bind for 127.0.0.1:8888 failed: port is already allocated\n"
    )
    c = lab_context(HEALTHY, extra={"docker start j1": bound})
    with pytest.raises(Exit) as raised:
        tasks.up(c)
    assert str(raised.value.message).startswith(
        "error: the jupyter container did not start: Error: Bind for 127.0.0.1:8888 failed"
    )
    assert commands(c)[-1].endswith(" stop")


def test_bad_setting_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_MLFLOW_PORT", "abc")
    with pytest.raises(Exit) as raised:
        tasks.up(MockContext())
    assert raised.value.message == (
        "error: LAB_MLFLOW_PORT='abc' is not a port number: set it to a whole number from 1 "
        "to 65535 (in .env or the environment)"
    )


def test_down_keeps_volumes() -> None:
    c = MockContext(run=Result(exited=0))
    tasks.down(c)
    assert commands(c)[0].endswith(" stop")
    assert "--volumes" not in commands(c)[0]


def test_destroy_refuses_without_yes_when_nobody_can_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    c = MockContext(run=Result(exited=0))
    with pytest.raises(Exit, match="add --yes to confirm"):
        tasks.destroy(c)
    assert commands(c) == []


def test_destroy_asks_and_does_nothing_unless_told_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    c = MockContext(run=Result(exited=0))
    tasks.destroy(c)
    assert commands(c) == []
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    tasks.destroy(c)
    assert commands(c)[-1].endswith(" down --volumes --remove-orphans")


def test_destroy_with_yes_removes_volumes() -> None:
    c = MockContext(run=Result(exited=0))
    tasks.destroy(c, yes=True)
    assert commands(c) == [commands(c)[0]]
    assert commands(c)[0].endswith(" down --volumes --remove-orphans")


def test_status_json_reports_state_health_and_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local_http, "answers", lambda url: "8080" in url)
    c = MockContext(run={re.compile(r".* ps --all"): Result(stdout=PS_HEALTHY)})
    tasks.status(c, json_=True)
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


def test_status_of_a_stopped_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_http, "answers", lambda url: True)
    report = stack.status(MockContext(run=Result(stdout="")), settings.load())
    assert report["ready"] is False
    assert report["services"]["mlflow"]["state"] == "absent"


def test_logs_validates_the_service_and_follows() -> None:
    with pytest.raises(Exit, match="no service named 'db': use one of mlflow, jupyter"):
        tasks.logs(MockContext(), service="db")
    c = MockContext(run=Result(exited=0))
    tasks.logs(c, service="mlflow", follow=True, tail=20)
    assert commands(c)[0].endswith(" logs --tail 20 --follow mlflow")


def test_clone_needs_a_running_lab() -> None:
    c = MockContext(run={re.compile(r".* ps --all"): Result(stdout="")})
    with pytest.raises(Exit, match="the lab is not running: start it with `invoke up`"):
        tasks.clone(c)


def test_compose_failure_on_a_full_disk_says_so() -> None:
    from mlflow_lab.lab.compose import Compose

    c = MockContext(run=Result(exited=1, stderr="write /var/lib/docker/x: no space left on device"))
    with pytest.raises(LabError, match=r"^the disk is full: free space"):
        Compose(c, settings.load()).run("build mlflow")


def test_the_readme_task_table_lists_every_task() -> None:
    from invoke.collection import Collection

    readme = (Path(tasks.__file__).parent / "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `invoke ([a-z][\w.-]*)", readme, flags=re.MULTILINE)
    assert sorted(set(table)) == sorted(Collection.from_module(tasks).task_names)
