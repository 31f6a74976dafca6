"""A live class stack for the end-to-end tests: its own stack name, port and state dir.

Deployed the way an instructor does it (`invoke classroom.up`) on a one-node swarm; the
engine is left as it was found: the stack, its student servers, volumes and secrets are
removed, and a swarm this fixture created is left again (with the docker_gwbridge
network it brought).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom.hub import Hub, wait_ready
from tests.e2e.conftest import run_invoke
from tests.helpers import free_port

UP_TIMEOUT_S = 2400  # a cold build of the class images on 2 cores is part of the first `up`
# The lab's images for the class are built under their own tag, so these tests never
# rebuild the `latest` images other work on this engine uses.
IMAGE_TAG = os.environ.get("LAB_E2E_CLASS_IMAGE_TAG", "classroom")


def docker(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def class_env(state_dir: Path, stack: str) -> dict[str, str]:
    """Every setting explicit, so nothing leaks in from the developer's .env."""
    return {
        **os.environ,
        "LAB_IMAGE_TAG": IMAGE_TAG,
        "LAB_STATE_DIR": str(state_dir / "lab"),
        "LAB_JUPYTER_TOKEN": "t" * 48,
        "LAB_REPO_URL": "git://127.0.0.1:9/no-such-course.git",
        "LAB_REPO_BRANCH": "dev",
        "LAB_CLASS_STACK": stack,
        "LAB_CLASS_PORT": str(free_port()),
        "LAB_CLASS_BIND_ADDRESS": "0.0.0.0",
        "LAB_CLASS_STATE_DIR": str(state_dir / "class"),
        "LAB_CLASS_INSTRUCTOR": "instructor",
        "LAB_CLASS_CPU_LIMIT": "1.0",
        "LAB_CLASS_MEM_LIMIT": "2G",
        "LAB_CLASS_IDLE_MINUTES": "60",
        "LAB_CLASS_MLFLOW_WORKERS": "2",
        "LAB_CLASS_TLS_CERT": "",
        "LAB_CLASS_TLS_KEY": "",
    }


@dataclass
class Classroom:
    env: dict[str, str]
    stack: str
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['LAB_CLASS_PORT']}"

    def invoke(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return run_invoke(self.env, *args, check=check, timeout=timeout)

    def redeploy(self, **settings: str) -> subprocess.CompletedProcess[str]:
        """`classroom.up` again with these settings changed, as an instructor would after
        editing .env; the others stay as they are."""
        self.env.update(settings)
        return self.invoke("classroom.up", timeout=900)

    def secret(self, name: str) -> str:
        return (self.state_dir / "secrets" / name).read_text().strip()

    def passwords(self) -> dict[str, str]:
        lines = (self.state_dir / "passwords.csv").read_text().splitlines()[1:]
        return {line.split(",")[0]: line.split(",")[-1] for line in lines}

    def admin(self) -> Hub:
        return Hub(self.url, self.secret("hub-api-token"))

    def login(self, user: str, password: str) -> Hub:
        """A browser's session for `user` (through /hub/login), with a token of theirs."""
        session = Hub(self.url)
        assert session.login(user, password), f"{user} could not log in"
        session.token = session.user_token(user)
        return session

    def spawn(self, session: Hub, user: str) -> str:
        """Start the user's server as they would; its container on this node."""
        session.api("POST", f"/users/{user}/server", ok=(400,))
        wait_ready(session, user, timeout=300)
        return self.server_container(user)

    def server_container(self, user: str) -> str:
        service = f"{self.stack}-student-{user}"
        found = docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
        ).stdout.split()
        assert found, f"no running container for {service}"
        return found[0]

    def service_container(self, service: str) -> str:
        found = docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.stack}_{service}"
        ).stdout.split()
        assert found, f"no running container for {service}"
        return found[0]

    def python(
        self, container: str, code: str, env: dict[str, str] | None = None, user: str = ""
    ) -> subprocess.CompletedProcess[str]:
        args = ["exec", "-i", *(["--user", user] if user else [])]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return subprocess.run(
            ["docker", *args, container, "python3", "-"],
            input=code,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def json_in(self, container: str, code: str, env: dict[str, str] | None = None) -> Any:
        done = self.python(container, code, env)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def as_instructor(self, code: str) -> Any:
        """Code run with the instructor's MLflow login, next to the server."""
        env = {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:8080",
            "MLFLOW_TRACKING_USERNAME": "instructor",
            "MLFLOW_TRACKING_PASSWORD": self.secret("instructor-password"),
        }
        return self.json_in(self.service_container("mlflow"), code, env)

    def logs(self) -> str:
        out = []
        for service in ("hub", "mlflow", "db"):
            done = docker(
                "service",
                "logs",
                "--no-task-ids",
                "--tail",
                "60",
                f"{self.stack}_{service}",
                check=False,
            )
            out.append(f"== {service} ==\n{done.stdout}{done.stderr}")
        return "\n".join(out)


def cleanup(env: dict[str, str], stack: str, swarm_before: str, gwbridge_before: bool) -> None:
    run_invoke(env, "classroom.destroy", "--yes", check=False, timeout=600)
    if swarm_before != "active" and swarm_state() == "active":
        docker("swarm", "leave", "--force", check=False)
        if not gwbridge_before:
            docker("network", "rm", "docker_gwbridge", check=False)


# One class for this package (every module here uses it): a deploy, and the destroy at the
# end, cost about a minute each. Package, not session: the lab's tests that follow must find
# the engine as it was (no swarm, no class containers: the engine-restart test needs that).
@pytest.fixture(scope="package")
def classroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Classroom]:
    state = tmp_path_factory.mktemp("class-state")
    stack = f"mlflow-class-e2e-{os.getpid()}"
    env = class_env(state, stack)
    swarm_before = swarm_state()
    gwbridge_before = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
    room = Classroom(env, stack, state / "class")
    try:
        room.up_output = room.invoke("classroom.up", timeout=UP_TIMEOUT_S)  # type: ignore[attr-defined]
        yield room
    finally:
        cleanup(env, stack, swarm_before, gwbridge_before)


# Modules that redeploy the class with settings of their own: after every other module of
# the package, whatever their file name sorts as (the others expect the class as first
# deployed), and still inside the package, so its one class serves them too.
RUN_LAST = ("test_course.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    last = [item for item in items if item.path.parent == here and item.path.name in RUN_LAST]
    rest = [item for item in items if item not in last]
    ours = [i for i, item in enumerate(rest) if here in item.path.parents]
    end = ours[-1] + 1 if ours else len(rest)
    items[:] = rest[:end] + last + rest[end:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    room = getattr(item, "funcargs", {}).get("classroom")
    if report.failed and isinstance(room, Classroom):
        try:
            text = room.logs()
        except Exception as exc:  # the logs are a courtesy; never mask the real failure
            text = f"could not read the service logs: {exc}"
        report.sections.append(("class service logs", text))
