"""Swarm checks of `classroom.up`, with the engine's answers stood in (no Docker)."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_lab.classroom import swarm
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError


def engine(monkeypatch: pytest.MonkeyPatch, state: str, manager: bool) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    info: dict[str, Any] = {"Swarm": {"LocalNodeState": state, "ControlAvailable": manager}}
    monkeypatch.setattr(docker, "info", lambda timeout=10: info)

    def run(*args: str, **kwargs: Any) -> docker.Result:
        calls.append(args)
        return docker.Result(("docker", *args), 0)

    monkeypatch.setattr(docker, "run", run)
    return calls


def test_a_manager_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = engine(monkeypatch, "active", True)
    assert swarm.ensure_manager(init=True) is False
    assert calls == []


def test_a_worker_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = engine(monkeypatch, "active", False)
    with pytest.raises(LabError) as refused:
        swarm.ensure_manager(init=True)
    assert str(refused.value) == (
        "this Docker engine is a swarm worker, not the class's manager: run "
        "`invoke classroom.up` on the manager machine (the one where `docker node ls` works)"
    )
    assert calls == [], "nothing is changed on a worker"


def test_no_init_refuses_an_engine_without_a_swarm(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = engine(monkeypatch, "inactive", False)
    with pytest.raises(LabError, match="not in a swarm and --no-init was given"):
        swarm.ensure_manager(init=False)
    assert calls == []


def test_init_makes_a_one_node_swarm_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = engine(monkeypatch, "inactive", False)
    assert swarm.ensure_manager(init=True) is True
    assert calls == [("swarm", "init", "--advertise-addr", "127.0.0.1")]


def test_an_engine_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker, "info", lambda timeout=10: None)
    with pytest.raises(LabError, match="not running or not reachable"):
        swarm.ensure_manager(init=True)
