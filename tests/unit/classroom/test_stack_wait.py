"""When `classroom.up` says the class is ready: the new tasks, the login page (the engine's
answers stood in by FakeDocker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_lab.classroom import stack
from mlflow_lab.classroom.hub import Hub
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core.errors import LabError
from tests.helpers import FakeDocker, class_settings_in

OLD_ENV = ["CLASS_TLS_ID=", "LAB_CLASS_IDLE_MINUTES=60"]
NEW_ENV = ["CLASS_TLS_ID=", "LAB_CLASS_IDLE_MINUTES=61"]
IMAGE_ENV = ["PATH=/opt/venv/bin:/usr/bin", "PYTHONUNBUFFERED=1"]


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ClassSettings:
    loaded: ClassSettings = class_settings_in(monkeypatch, tmp_path)
    loaded.secrets_dir.mkdir(parents=True)
    (loaded.secrets_dir / "hub-api-token").write_text("a" * 64)
    monkeypatch.setattr(stack.time, "sleep", lambda seconds: None)
    return loaded


def running_class(fake: FakeDocker, hub_containers: list[str]) -> None:
    """Every service has one running, healthy task; the hub's container is, poll after
    poll, each of `hub_containers` in turn."""
    for service in stack.SERVICES:
        name = f"room_{service}"
        task = json.dumps({"CurrentState": "Running 3 seconds ago", "DesiredState": "Running"})
        fake.on(rf"^docker service ps .* {name}$", task)
        fake.on(rf"^docker ps .* --filter label=com.docker.swarm.service.name={name}$", service)
        fake.on(rf"^docker service inspect .*ContainerSpec.Env.* {name}$", json.dumps(NEW_ENV))
        fake.on(rf"^docker inspect --format .*Health.* {service}", "healthy")
        fake.on(
            rf"^docker inspect --format .*Config.Env.* {service}", json.dumps(IMAGE_ENV + NEW_ENV)
        )
    fake.on(r"^docker ps .* --filter label=com.docker.swarm.service.name=room_hub$", hub_containers)
    # This machine's readiness check runs (tests/unit/classroom/test_stack_ready.py waits for it).
    fake.on(r"^docker ps .* --filter label=com.docker.swarm.service.name=room_ready$", "ready")
    fake.on(r"^docker inspect --format .*Health.* old-hub", "healthy")
    fake.on(r"^docker inspect --format .*Config.Env.* old-hub", json.dumps(IMAGE_ENV + OLD_ENV))


def test_the_hubs_old_task_answering_is_not_ready(
    fake_docker: FakeDocker, settings: ClassSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Right after the deploy, the old hub still runs, healthy, and answers (its port is
    # published until Swarm stops it); only the new task's answers count.
    running_class(fake_docker, ["old-hub", "old-hub", "old-hub", "hub"])
    monkeypatch.setattr(Hub, "answers", lambda self: True)
    monkeypatch.setattr(Hub, "login_page_answers", lambda self: True)
    stack.wait_ready(settings)
    hubs = [
        c.argv[-1]
        for c in fake_docker.matching(r"^docker inspect --format .*Config.Env")
        if c.argv[-1].endswith("hub")
    ]
    assert hubs == ["old-hub", "old-hub", "old-hub", "hub"]


def test_a_login_page_that_does_not_answer_is_not_ready(
    fake_docker: FakeDocker, settings: ClassSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_class(fake_docker, ["hub"])
    monkeypatch.setattr(Hub, "answers", lambda self: True)
    pages = iter([False, False, True])
    monkeypatch.setattr(Hub, "login_page_answers", lambda self: next(pages))
    stack.wait_ready(settings)
    assert next(pages, "used up") == "used up", "ready only at the login page's first answer"


def test_a_hub_that_never_gets_its_new_task_is_one_line(
    fake_docker: FakeDocker, settings: ClassSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_class(fake_docker, ["old-hub"])
    fake_docker.on(r"^docker service logs .* room_hub$", "[I] JupyterHub is now running\n")
    monkeypatch.setattr(Hub, "answers", lambda self: True)
    monkeypatch.setattr(Hub, "login_page_answers", lambda self: True)
    with pytest.raises(LabError) as caught:
        stack.wait_ready(settings, timeout=0.05)
    assert str(caught.value).startswith("the class's hub did not become ready within 0.05 s")
    assert "\n" not in str(caught.value)
