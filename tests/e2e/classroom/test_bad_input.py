"""Bad input to the classroom's tasks: one line each, exit code 1, nothing left behind.

Runs before the module that deploys a class (file order), while the engine is as found.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.e2e import worker_engine
from tests.e2e.classroom.conftest import class_env, docker, swarm_state
from tests.e2e.conftest import run_invoke
from tests.helpers import self_signed_cert


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return class_env(tmp_path, f"mlflow-class-bad-{os.getpid()}")


def one_line_error(result: object) -> str:
    stderr = str(getattr(result, "stderr", "")).strip()
    assert getattr(result, "returncode", 0) == 1, result
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_no_init_on_an_engine_without_a_swarm(env: dict[str, str]) -> None:
    if swarm_state() == "active":
        pytest.skip("the engine is in a swarm already (someone else's): nothing to refuse")
    line = one_line_error(run_invoke(env, "classroom.up", "--no-init", check=False))
    assert "not in a swarm and --no-init was given" in line
    assert swarm_state() != "active"


def test_a_port_in_use_is_refused_before_anything_changes(env: dict[str, str]) -> None:
    before = swarm_state()
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", int(env["LAB_CLASS_PORT"])))
        holder.listen()
        line = one_line_error(run_invoke(env, "classroom.up", check=False))
    assert f"port {env['LAB_CLASS_PORT']} (LAB_CLASS_PORT)" in line and "is in use" in line
    assert swarm_state() == before


@pytest.mark.parametrize(
    ("roster", "says"),
    [
        ("alice\nalice\n", "'alice' is already on line 1"),
        ("alice\n,No Name\n", "the username is empty"),
        ("Alice Smith\n", "is not a valid username"),
    ],
)
def test_bad_rosters(env: dict[str, str], tmp_path: Path, roster: str, says: str) -> None:
    path = tmp_path / "class.csv"
    path.write_text(roster)
    line = one_line_error(run_invoke(env, "classroom.students", "add", str(path), check=False))
    assert says in line


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (("cert", ""), "LAB_CLASS_TLS_CERT and LAB_CLASS_TLS_KEY go together"),
        (("cert", "other_key"), "is not the private key of LAB_CLASS_TLS_CERT"),
        (("cert", "missing"), "LAB_CLASS_TLS_KEY="),
    ],
)
def test_bad_tls_files_deploy_nothing(
    env: dict[str, str], tmp_path: Path, files: tuple[str, str], says: str
) -> None:
    cert, _ = self_signed_cert(tmp_path)
    _, other_key = self_signed_cert(tmp_path, "other")
    paths = {"cert": cert, "other_key": other_key, "missing": tmp_path / "no.key", "": ""}
    env["LAB_CLASS_TLS_CERT"], env["LAB_CLASS_TLS_KEY"] = (str(paths[f]) for f in files)
    before = swarm_state()
    line = one_line_error(run_invoke(env, "classroom.up", check=False))
    assert says in line
    assert swarm_state() == before
    assert not (tmp_path / "class").exists(), "the class's state dir was made"


def test_up_on_a_swarm_worker_says_to_run_it_on_the_manager(
    env: dict[str, str], tmp_path: Path
) -> None:
    links, namespaces = worker_engine.links(), worker_engine.netns_names()
    with (
        worker_engine.worker_engine() as worker,
        worker_engine.manager_swarm(worker.manager_address) as manager,
    ):
        worker_engine.join(worker, manager)
        line = one_line_error(run_invoke(worker.env(env), "classroom.up", check=False))
        assert line == (
            "error: this Docker engine is a swarm worker, not the class's manager: run "
            "`invoke classroom.up` on the manager machine (the one where `docker node ls` works)"
        )
        assert worker.swarm_state() == "active", "the worker is left in its swarm"
        assert docker("service", "ls", "-q").stdout.strip() == "", "nothing was deployed"
        assert not (tmp_path / "class" / "secrets").exists(), "no class state was made"
    assert swarm_state() == "inactive"
    assert worker_engine.links() == links and worker_engine.netns_names() == namespaces
