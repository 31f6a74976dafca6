"""`classroom.up` waits for the class's services and for this machine's readiness check
(the `ready` service's task here), with the engine faked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom import settings, stack
from mlflow_lab.core.errors import LabError
from tests.helpers import FakeDocker, isolate_settings


class AnsweringHub:
    def answers(self) -> bool:
        return True

    def login_page_answers(self) -> bool:
        return True


@pytest.fixture
def room(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_docker: FakeDocker) -> Any:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setattr(stack, "hub", lambda _settings: AnsweringHub())
    monkeypatch.setattr(stack.time, "sleep", lambda _s: None)
    found = settings.load(env_file=tmp_path / "no.env")
    for service in stack.SERVICES:
        name = stack.service_name(found, service)
        fake_docker.on(rf"^docker service ps .* {name}$", '{"CurrentState": "Running 5 s ago"}')
        fake_docker.on(rf"^docker ps .*service.name={name}$", f"c-{service}\n")
        # Each runs its service's current spec (test_stack_wait.py: an old task does not count).
        fake_docker.on(rf"^docker service inspect .*ContainerSpec.Env.* {name}$", '["A=1"]')
    fake_docker.on(r"^docker inspect --format .*Health", "healthy\n")
    fake_docker.on(r"^docker inspect --format .*Config.Env", '["A=1"]')
    return found


def test_up_waits_for_the_readiness_check_on_this_machine(
    room: Any, fake_docker: FakeDocker
) -> None:
    ready = stack.service_name(room, stack.READY_SERVICE)
    fake_docker.on(rf"^docker ps .*service.name={ready}$", ["", "", "c-ready\n"])
    stack.wait_ready(room, timeout=60)
    assert len(fake_docker.matching(f"service.name={ready}")) == 3


def test_a_readiness_check_that_never_starts_says_where_to_look(
    room: Any, fake_docker: FakeDocker
) -> None:
    ready = stack.service_name(room, stack.READY_SERVICE)
    fake_docker.on(rf"^docker ps .*service.name={ready}$", "")
    with pytest.raises(LabError) as raised:
        stack.wait_ready(room, timeout=0.2)
    assert str(raised.value) == (
        f"this machine's readiness check for student servers ({ready}) did not start within "
        f"0.2 s: `docker service ps --no-trunc {ready}` says why"
    )


def test_the_readiness_check_mounts_the_course_copy_only_when_student_servers_do(
    room: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hub mounts the course copy only for a class with a course: a machine must not
    be found unready for a folder no student server would mount."""
    from mlflow_lab.lab import course

    none = course.Fetched(cache=None, warning="no course")
    monkeypatch.setattr(course, "fetch_course_repo", lambda _lab: none)
    env, _ = stack._course_env(room)
    assert (env["CLASS_COURSE_CACHE"], env["CLASS_READY_COURSE"]) == ("", stack.NO_COURSE)
    assert Path(stack.NO_COURSE).exists(), "on every Linux machine"
    cached = course.Fetched(cache=tmp_path / "MLOps.git", warning=None)
    monkeypatch.setattr(course, "fetch_course_repo", lambda _lab: cached)
    env, _ = stack._course_env(room)
    assert (env["CLASS_COURSE_CACHE"], env["CLASS_READY_COURSE"]) == (
        "MLOps.git",
        str(room.course_dir),
    )
