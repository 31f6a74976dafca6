"""Swarm checks of `classroom.up`, with the engine's answers stood in (no Docker)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mlflow_lab.classroom import swarm
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError


def engine(
    monkeypatch: pytest.MonkeyPatch, state: str, manager: bool, address: str = ""
) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    info: dict[str, Any] = {
        "Swarm": {"LocalNodeState": state, "ControlAvailable": manager, "NodeAddr": address}
    }
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


def test_init_advertises_the_address_other_machines_join_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = engine(monkeypatch, "inactive", False)
    assert swarm.ensure_manager(init=True, advertise="192.168.1.10") is True
    assert calls == [("swarm", "init", "--advertise-addr", "192.168.1.10")]


def test_a_swarm_made_before_on_another_address_is_kept_and_said(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = engine(monkeypatch, "active", True, address="127.0.0.1")
    assert swarm.ensure_manager(init=True, advertise="192.168.1.10") is False
    assert calls == []
    out = capsys.readouterr().out
    assert out.startswith(
        "warning: this swarm advertises 127.0.0.1, not LAB_CLASS_ADVERTISE_ADDRESS=192.168.1.10"
    )
    assert "`docker swarm leave --force`" in out and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("active", "is a swarm worker, not the class's manager: run `invoke classroom.nodes`"),
        ("inactive", "is not managing a swarm (it is inactive): start the class with"),
    ],
)
def test_manager_only_tasks_say_where_to_run(
    monkeypatch: pytest.MonkeyPatch, state: str, says: str
) -> None:
    engine(monkeypatch, state, False)
    with pytest.raises(LabError, match=re.escape(says)):
        swarm.require_manager("classroom.nodes")


def test_an_engine_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker, "info", lambda timeout=10: None)
    with pytest.raises(LabError, match="not running or not reachable"):
        swarm.ensure_manager(init=True)
