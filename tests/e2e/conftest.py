"""A live lab stack for the end-to-end tests, on its own project name, ports and state.

The stack is started the way a user starts it (`invoke up`); testcontainers'
DockerCompose is the handle for exec, logs and teardown. It never touches the
user's own stack: another compose project, other volumes, free ports.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testcontainers.compose import DockerCompose

from tests.helpers import fake_california_archive, free_port, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]
CONTAINER_TRACKING_URI = "http://127.0.0.1:8080"
UP_TIMEOUT_S = 1800  # a cold build on 2 cores is part of the first `up`

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def run_invoke(
    env: dict[str, str],
    *args: str,
    check: bool = True,
    timeout: float = 600,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `invoke ARGS` in the project as a user would; fail with its output if asked."""
    result = subprocess.run(
        [*INVOKE, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"invoke {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@dataclass
class Lab:
    env: dict[str, str]
    compose: DockerCompose
    project: str
    mlflow_port: int
    jupyter_port: int
    token: str
    state_dir: Path

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def jupyter_url(self) -> str:
        return f"http://127.0.0.1:{self.jupyter_port}"

    def invoke(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`invoke ARGS` against this lab; `env` adds or overrides settings."""
        return run_invoke(
            {**self.env, **(env or {})}, *args, check=check, timeout=timeout, stdin=stdin
        )

    def container(self, service: str) -> str:
        return self.compose.get_container(service).Name or ""

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=300, check=check
        )

    def python_in(self, service: str, code: str, timeout: float = 300) -> str:
        """Run Python code in a service's container; its stdout, or fail with its output."""
        result = subprocess.run(
            ["docker", "exec", "-i", self.container(service), "python3", "-"],
            input=code,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"python in {service} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def json_in(self, service: str, code: str, timeout: float = 300) -> Any:
        """Run code that prints one JSON document as its last line; return it parsed."""
        return json.loads(self.python_in(service, code, timeout).strip().splitlines()[-1])

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.invoke("status", "--json").stdout)
        return report


def lab_env(state_dir: Path) -> dict[str, str]:
    """Every lab setting explicit, so nothing leaks in from the developer's .env."""
    return {
        "LAB_PROJECT": f"mlflow-lab-e2e-{os.getpid()}",
        "LAB_MLFLOW_PORT": str(free_port()),
        "LAB_JUPYTER_PORT": str(free_port()),
        "LAB_BIND_ADDRESS": "127.0.0.1",
        "LAB_JUPYTER_TOKEN": secrets.token_hex(24),
        "LAB_STATE_DIR": str(state_dir),
        # An unreachable course repo: `up` must warn and go on with the bundled lab.
        "LAB_REPO_URL": "git://127.0.0.1:9/no-such-course.git",
        "LAB_REPO_BRANCH": "dev",
        "LAB_EXTRA_ALLOWED_HOSTS": "",
        "LAB_MLFLOW_WORKERS": "1",
        # No datasets unless a test lists its own: figshare is out of reach in tests.
        "LAB_DATASETS_FILE": "",
        "TESTCONTAINERS_RYUK_DISABLED": "true",
    }


@pytest.fixture(scope="session", autouse=True)
def compose_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`docker compose` for testcontainers, without touching the user's ~/.docker.

    The lab itself runs the venv's Compose binary; testcontainers calls the plugin form.
    Where no plugin answers, the session gets a Docker config folder of its own (a copy of
    the user's config.json, and the venv's binary as its plugin).
    """
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        yield
        return
    config = tmp_path_factory.mktemp("docker-config")
    user_config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    if user_config.is_file():
        shutil.copyfile(user_config, config / "config.json")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(
        Path(sys.executable).parent / "docker-compose"
    )
    saved = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(config)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = saved


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Generator[Lab, None, None]:
    state_dir = tmp_path_factory.mktemp("lab-state")
    overrides = lab_env(state_dir)
    saved = {name: os.environ.get(name) for name in overrides}
    # DockerCompose runs `docker compose` with this process's environment.
    os.environ.update(overrides)
    compose = DockerCompose(PROJECT_ROOT, compose_file_name="compose.yaml", wait=True)
    lab = Lab(
        env=dict(os.environ),
        compose=compose,
        project=overrides["LAB_PROJECT"],
        mlflow_port=int(overrides["LAB_MLFLOW_PORT"]),
        jupyter_port=int(overrides["LAB_JUPYTER_PORT"]),
        token=overrides["LAB_JUPYTER_TOKEN"],
        state_dir=state_dir,
    )
    try:
        lab.up_output = lab.invoke("up", timeout=UP_TIMEOUT_S)  # type: ignore[attr-defined]
        yield lab
    finally:
        # Torn down even when `up` failed half-way: this project's containers and volumes only.
        compose.stop(down=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class CourseServer:
    """A course repository (branch dev, one commit) served by `git daemon` on loopback."""

    url: str
    work: Path  # the teacher's working copy, where a test can commit the next changes
    commit: str
    daemon: subprocess.Popen[bytes]

    def stop(self) -> None:
        """From now on the URL leads nowhere."""
        if self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(timeout=10)


@contextmanager
def served_course_repo(root: Path, name: str) -> Iterator[CourseServer]:
    """A course repository `name` served by `git daemon` on loopback, stopped afterwards.

    GitHub is out of reach in tests; this stands in for LAB_REPO_URL.
    """
    work = root / name
    git = ["git", "-c", "user.name=Teacher", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "dev", str(work)], check=True, timeout=30)
    (work / "01_intro.ipynb").write_text('{"cells": []}\n', encoding="utf-8")
    (work / "README.md").write_text("v1\n", encoding="utf-8")
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True, timeout=30)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "v1"], check=True, timeout=30)
    commit = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={root}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = CourseServer(f"git://127.0.0.1:{port}/{name}", work, commit, daemon)
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    ["git", "ls-remote", server.url], capture_output=True, timeout=10
                ).returncode
                == 0
            ),
            timeout=20,
            interval=0.3,
            what="git daemon answering",
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def course_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A course repository named `course` (branch dev) served by `git daemon` on loopback."""
    with served_course_repo(tmp_path_factory.mktemp("git-served"), "course") as served:
        yield served.url, served.work


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    lab = getattr(item, "funcargs", {}).get("lab")
    if report.failed and isinstance(lab, Lab):
        try:
            stdout, stderr = lab.compose.get_logs()
        except Exception as exc:  # the logs are a courtesy; never mask the real failure
            stdout, stderr = "", f"could not read the container logs: {exc}"
        report.sections.append(
            ("container logs (last 150 lines)", "\n".join((stdout + stderr).splitlines()[-150:]))
        )


# ---------------------------------------------------------------- test notebooks

NOTEBOOKS = Path(__file__).parent / "lab" / "notebooks"
NOTEBOOK_RUNNER = "run_notebook.py"
NOTEBOOKS_IN_CONTAINER = "/home/student/workspace/mlflow-lab-tests"
NOTEBOOK_TIMEOUT_S = 300
HOUSING_ROWS = 12  # the stand-in's rows: the real dataset has 20640


def copy_in(container: str, source: Path, name: str | None = None) -> str:
    """A file into a test folder of the student's workspace, owned by the student."""
    target = f"{NOTEBOOKS_IN_CONTAINER}/{name or source.name}"
    for command in (
        ["docker", "exec", "-u", "student", container, "mkdir", "-p", NOTEBOOKS_IN_CONTAINER],
        ["docker", "cp", str(source), f"{container}:{target}"],
        ["docker", "exec", "-u", "root", container, "chown", "student:student", target],
    ):
        subprocess.run(command, check=True, timeout=60, capture_output=True)
    return target


def run_notebook(container: str, source: Path) -> dict[str, Any]:
    """Run a notebook with nbclient in the container; the JSON its last cell printed."""
    runner = copy_in(container, NOTEBOOKS / NOTEBOOK_RUNNER)
    notebook = copy_in(container, source)
    result = subprocess.run(
        ["docker", "exec", "-u", "student", container, "python3", runner, notebook],
        capture_output=True,
        text=True,
        timeout=NOTEBOOK_TIMEOUT_S + 60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["errors"] == [], found["errors"]
    last: dict[str, Any] = json.loads(found["last"])
    return last


def housing_mirror(root: Path, base_url: str) -> Path:
    """A stand-in for figshare's cal_housing.tgz in `root` (serve it at `base_url`), and a
    dataset list (LAB_DATASETS_FILE) that names it as the fetcher's mirror."""
    sha256 = fake_california_archive(root / "cal_housing.tgz", HOUSING_ROWS)
    listing = root / "datasets.toml"
    listing.write_text(
        "[california_housing]\n"
        'fetcher = "fetch_california_housing"\n'
        f'url = "{base_url}/cal_housing.tgz"\n'
        f'sha256 = "{sha256}"\n',
        encoding="utf-8",
    )
    return listing


def assert_versioning_read_the_cache(found: dict[str, Any]) -> None:
    """What notebooks/dataset_versioning.ipynb found, with the stand-in in the cache."""
    assert found["network"] == "unusable"
    assert found["housing_shape"] == [HOUSING_ROWS, 8], "loaded from the cache, not downloaded"
    assert found["features"][0] == "MedInc"
    assert found["inputs"] == [["california_housing", "evaluation"], ["iris", "training"]]
    assert all(found["digests"])
    assert found["artifacts"] == ["images/sample.png"]
