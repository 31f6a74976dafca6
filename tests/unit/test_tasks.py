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
from mlflow_lab import course, engine, images, settings, stack
from mlflow_lab.errors import LabError

PS_HEALTHY = "\n".join(
    json.dumps({"Service": s, "State": "running", "Health": "healthy", "Name": f"lab-{s}-1"})
    for s in ("mlflow", "jupyter")
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from a temp state dir and no .env; no Docker behind any check."""
    for name in settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LAB_JUPYTER_TOKEN", "t" * 48)
    monkeypatch.setattr(settings, "ENV_FILE", tmp_path / "no.env")
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


def test_up_starts_waits_and_prints_urls(capsys: pytest.CaptureFixture[str]) -> None:
    c = MockContext(run={re.compile(r".* up --detach --wait"): Result(exited=0)})
    tasks.up(c)
    run = commands(c)
    assert len(run) == 1
    assert "-p mlflow-lab up --detach --wait --wait-timeout" in run[0]
    env = c.run.call_args.kwargs["env"]  # type: ignore[attr-defined]
    assert env["LAB_MLFLOW_PORT"] == "8080"
    assert env["LAB_JUPYTER_TOKEN"] == "t" * 48
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8080" in out
    assert f"http://127.0.0.1:8888/lab?token={'t' * 48}" in out


def test_up_builds_only_what_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[list[str] | None] = []
    monkeypatch.setattr(images, "stale_images", lambda compose: ["jupyter"])
    monkeypatch.setattr(images, "build", lambda ctx, lab, services: built.append(services))
    tasks.up(MockContext(run={re.compile(r".* up "): Result(exited=0)}))
    assert built == [["jupyter"]]
    with pytest.raises(Exit, match="the jupyter image is missing or out of date"):
        tasks.up(MockContext(run=Result(exited=0)), no_build=True)


def test_up_that_never_gets_ready_stops_the_stack_and_says_why() -> None:
    ps = "\n".join(
        [
            json.dumps({"Service": "mlflow", "State": "running", "Health": "unhealthy"}),
            json.dumps({"Service": "jupyter", "State": "created", "Health": ""}),
        ]
    )
    c = MockContext(
        run={
            re.compile(r".* up --detach"): Result(exited=1, stderr="dependency failed to start"),
            re.compile(r".* ps --all --format json"): Result(stdout=ps),
            re.compile(r".* stop$"): Result(exited=0),
        }
    )
    with pytest.raises(Exit) as raised:
        tasks.up(c)
    message = str(raised.value.message)
    assert message.startswith("error: the mlflow service is unhealthy")
    assert "\n" not in message
    assert raised.value.code == 1
    assert commands(c)[-1].endswith(" stop"), "no half-started stack may be left running"


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
    assert commands(c)[0].endswith(" down --remove-orphans")
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
    monkeypatch.setattr(stack, "_probe", lambda url: "8080" in url)
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
    monkeypatch.setattr(stack, "_probe", lambda url: True)
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
    from mlflow_lab.compose import Compose

    c = MockContext(run=Result(exited=1, stderr="write /var/lib/docker/x: no space left on device"))
    with pytest.raises(LabError, match=r"^the disk is full: free space"):
        Compose(c, settings.load()).run("build mlflow")
