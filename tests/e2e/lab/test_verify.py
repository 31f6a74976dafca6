"""`invoke verify` and `invoke doctor` on live stacks (issue 4).

Every check passes on the good stack and leaves no trace; each one fails, for its own
reason, on a stack broken the way a lab breaks: the wrong allowed hosts, a stopped
Jupyter container, a missing lab, a writable artifact store, a stopped MLflow, a taken
port. Tests that break the shared session stack put it back before they end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab import COMPOSE_FILE
from mlflow_lab.core import settings, versions
from mlflow_lab.lab import course, layout, verify
from tests.e2e.conftest import (
    CONTAINER_TRACKING_URI,
    Lab,
    lab_env,
    run_invoke,
)
from tests.helpers import free_port, wait_until

CHECK_NAMES = [name for name, _ in verify.CHECKS]
JUPYTER_SIDE = {
    "api from notebook",
    "artifact store",
    "jupyter api",
    "notebook kernel",
    "lab material",
    "datasets",
    "ports",
}
LAB_FOLDER = f"{layout.WORKSPACE}/{course.BUNDLED_LAB_DIR}"
VERIFY_TIMEOUT_S = 60  # far above the 15 s budget: a hang fails the test, not the session
STACK_TIMEOUT_S = 240


def run_verify(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]], float]:
    """(exit code, checks by name, seconds) of `invoke verify --json` under `env`."""
    result, elapsed = timed_invoke(env, "verify", "--json")
    try:
        document = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from verify:\n{result.stdout}\n{result.stderr}") from None
    checks = {c["name"]: c for c in document["checks"]}
    assert list(checks) == CHECK_NAMES
    assert document["ok"] is (result.returncode == 0) is all(c["ok"] for c in checks.values())
    if result.returncode != 0:
        # One line on stderr, no traceback.
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "checks failed" in result.stderr
    return result.returncode, checks, elapsed


def failing(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: c["detail"] for name, c in checks.items() if not c["ok"]}


def lab_settings(lab: Lab) -> settings.Settings:
    return settings.load(lab.env, env_file=lab.state_dir / "no.env")


# ----------------------------------------------------------------- the good stack


SNAPSHOT_DB = textwrap.dedent(
    """
    import json, os, sqlite3
    conn = sqlite3.connect("file:" + os.environ["LAB_MLFLOW_DB"] + "?mode=ro", uri=True)
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    print(json.dumps({t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                      for t in tables}))
    """
)

LIST_FILES = textwrap.dedent(
    """
    import json, os, sys
    found = []
    for top, dirs, files in os.walk(sys.argv[1]):
        for name in dirs + files:
            path = os.path.join(top, name)
            stat = os.lstat(path)
            found.append([path, stat.st_size, 0 if name in dirs else stat.st_mtime_ns])
    print(json.dumps(sorted(found)))
    """
)


def files_in(lab: Lab, service: str, root: str) -> list[list[Any]]:
    result = subprocess.run(
        ["docker", "exec", "-i", lab.container(service), "python3", "-", root],
        input=LIST_FILES,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: list[list[Any]] = json.loads(result.stdout)
    return found


def experiments(lab: Lab) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = lab.json_in(
        "jupyter",
        "import json, urllib.request\n"
        f"url = '{CONTAINER_TRACKING_URI}/api/2.0/mlflow/experiments/search"
        "?max_results=1000&view_type=ALL'\n"
        "print(json.dumps(json.load(urllib.request.urlopen(url))['experiments']))",
    )
    return found


def snapshot(lab: Lab) -> dict[str, Any]:
    return {
        "tables": lab.json_in("mlflow", SNAPSHOT_DB),
        "artifacts": files_in(lab, "mlflow", "/data/artifacts"),
        "workspace": files_in(lab, "jupyter", layout.WORKSPACE),
        "experiments": experiments(lab),
    }


def test_verify_passes_on_the_good_stack_in_time_and_leaves_no_trace(lab: Lab) -> None:
    before = snapshot(lab)
    code, checks, elapsed = run_verify(lab.env)
    assert code == 0, failing(checks)
    assert elapsed < verify.BUDGET_S, elapsed
    assert checks["mlflow version"]["detail"] == f"MLflow {versions.mlflow_version()}, as pinned"
    assert "removed" in checks["no trace"]["detail"]
    # Nothing verify created is left: no row in any table, no artifact, no workspace file.
    assert snapshot(lab) == before

    # The next experiment a student creates gets the ID it would have had without
    # verify: on a fresh lab (only Default, ID 0) that is ID 1, as the lab guide says.
    expected = max(int(e["experiment_id"]) for e in before["experiments"]) + 1
    name = f"{verify.EXPERIMENT_PREFIX}student-{time.time_ns()}"
    created = lab.python_in(
        "jupyter",
        f"import mlflow; mlflow.set_tracking_uri('{CONTAINER_TRACKING_URI}');"
        f"print(mlflow.create_experiment('{name}'))",
    ).strip()
    assert created == str(expected)
    # Put the stack back as it was: this probe goes the way verify's own experiment goes.
    verify.remove_experiment(lab_settings(lab), lab.container("mlflow"), created, name)
    assert snapshot(lab) == before


def test_version_token_and_port_checks_fail_each_for_their_reason(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stack stays good; verify is told a different pin, token and bind address.
    monkeypatch.setattr(versions, "mlflow_version", lambda: "0.0.1")
    told = dataclasses.replace(lab_settings(lab), jupyter_token="not-the-token")
    told = dataclasses.replace(told, bind_address="0.0.0.0")
    results = {r.name: r for r in verify.run(told)}
    failed = {name: r.detail for name, r in results.items() if not r.ok}
    assert set(failed) == {"mlflow version", "jupyter api", "ports"}, failed
    running = versions.pinned()["mlflow"]
    assert failed["mlflow version"].startswith(f"MLflow {running} is running, the lab pins 0.0.1")
    assert "Jupyter refuses the lab's token" in failed["jupyter api"]
    assert failed["ports"] == (
        f"mlflow publishes 127.0.0.1:{lab.mlflow_port}, the settings say "
        f"0.0.0.0:{lab.mlflow_port}: {verify.UP_FIX}"
    )


# ------------------------------------------------------ the session stack, broken


def test_a_stopped_jupyter_fails_every_check_that_needs_it(lab: Lab) -> None:
    container = lab.container("jupyter")
    lab.docker("stop", container)
    try:
        code, checks, _ = run_verify(lab.env)
        assert code == 1
        failed = failing(checks)
        assert set(failed) == {"containers"} | JUPYTER_SIDE, failed
        for name, detail in failed.items():
            assert "jupyter" in detail, (name, detail)
        assert failed["containers"] == "the jupyter container is exited: start it with `invoke up`"
        assert "/api/kernelspecs does not answer" in failed["jupyter api"]
    finally:
        lab.invoke("up")
    wait_until(lambda: lab.status()["ready"], timeout=60, interval=1, what="the lab ready again")


def test_a_missing_lab_fails_the_lab_material_check_only(lab: Lab) -> None:
    aside = f"{layout.WORKSPACE}/.verify-test-aside"
    jupyter = lab.container("jupyter")
    lab.docker("exec", jupyter, "mv", LAB_FOLDER, aside)
    try:
        code, checks, _ = run_verify(lab.env)
    finally:
        lab.docker("exec", jupyter, "mv", aside, LAB_FOLDER)
    assert code == 1
    failed = failing(checks)
    assert list(failed) == ["lab material"], failed
    assert failed["lab material"].startswith(f"{LAB_FOLDER} lacks README.md")
    assert "`invoke clone`" in failed["lab material"]


# ------------------------------------------- a second, mis-configured stack

# The Jupyter side's artifact mount as compose.yaml writes it, minus its ":ro".
WRITABLE_ARTIFACTS = re.search(
    r"- (mlflow-artifacts:\S+):ro\s*$", COMPOSE_FILE.read_text(encoding="utf-8"), re.M
)
OVERRIDE = """
services:
  mlflow:
    environment:
      LAB_MLFLOW_ALLOWED_HOSTS: "{hosts}"
  jupyter:
    volumes:
      - {artifacts}
"""


@dataclasses.dataclass
class Miswired:
    """A second lab (own project, ports, volumes) whose compose file is overridden."""

    env: dict[str, str]
    override: Path
    mlflow_port: int

    def compose(self, *args: str) -> None:
        result = subprocess.run(
            [
                *("docker", "compose", "-f", str(COMPOSE_FILE), "-f", str(self.override)),
                *("-p", self.env["LAB_PROJECT"], *args),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STACK_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"compose {args} failed:\n{result.stderr}"

    def start(self, allowed_hosts: str) -> None:
        """(Re)start it with only `allowed_hosts` and a writable artifact store in Jupyter."""
        assert WRITABLE_ARTIFACTS is not None
        self.override.write_text(
            OVERRIDE.format(hosts=allowed_hosts, artifacts=WRITABLE_ARTIFACTS.group(1)),
            encoding="utf-8",
        )
        self.compose("up", "--detach", "--wait", "--wait-timeout", str(STACK_TIMEOUT_S - 30))

    def container(self, service: str) -> str:
        return f"{self.env['LAB_PROJECT']}-{service}-1"


@pytest.fixture(scope="module")
def miswired(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Miswired]:
    state_dir = tmp_path_factory.mktemp("miswired-state")
    env = {**lab.env, **lab_env(state_dir), "LAB_PROJECT": f"{lab.project}-miswired"}
    stack = Miswired(env, state_dir / "override.yaml", int(env["LAB_MLFLOW_PORT"]))
    try:
        # MLflow accepts this machine's Host only, not the notebooks' 127.0.0.1:8080.
        stack.start(f"127.0.0.1:{stack.mlflow_port}")
        run_invoke(env, "clone", timeout=STACK_TIMEOUT_S)
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans")


def test_wrong_allowed_hosts_fail_the_notebook_path_while_health_passes(
    miswired: Miswired,
) -> None:
    code, checks, _ = run_verify(miswired.env)
    assert code == 1
    failed = failing(checks)
    assert set(failed) == {"api from notebook", "artifact store"}, failed
    # /health skips the Host check: it passes, and so does the kernel's call to it.
    assert checks["mlflow health"]["ok"] and checks["notebook kernel"]["ok"]
    assert failed["api from notebook"].startswith(
        'MLflow refuses the notebooks\' Host 127.0.0.1:8080 (403 "Invalid Host header")'
    )
    assert "is writable in the jupyter container" in failed["artifact store"]


def test_allowed_hosts_without_this_machines_address_fail_the_host_path(
    miswired: Miswired,
) -> None:
    miswired.start("127.0.0.1:8080")  # recreates the mlflow container only
    code, checks, _ = run_verify(miswired.env)
    assert code == 1
    failed = failing(checks)
    expected = {"mlflow ui", "api from host", "tracking round trip", "artifact store"}
    assert set(failed) == expected, failed
    host = f"127.0.0.1:{miswired.mlflow_port}"
    for name in ("mlflow ui", "api from host", "tracking round trip"):
        assert failed[name].startswith(
            f'MLflow refuses Host {host} (403 "Invalid Host header") though /health answers'
        ), failed[name]
    assert checks["no trace"]["detail"] == "nothing was created"


def test_a_stopped_mlflow_fails_health_and_the_kernel(miswired: Miswired) -> None:
    subprocess.run(
        ["docker", "stop", miswired.container("mlflow")],
        capture_output=True,
        timeout=60,
        check=True,
    )
    code, checks, _ = run_verify(miswired.env)
    assert code == 1
    failed = failing(checks)
    assert failed["containers"] == "the mlflow container is exited: start it with `invoke up`"
    url = f"http://127.0.0.1:{miswired.mlflow_port}"
    for name in ("mlflow health", "mlflow version", "mlflow ui", "api from host"):
        assert failed[name].startswith(f"{url}/"), failed[name]
        assert "does not answer" in failed[name]
    assert failed["notebook kernel"].startswith("in the mlops kernel: ")
    # Jupyter itself is fine.
    assert checks["jupyter api"]["ok"] and checks["lab material"]["ok"]


# -------------------------------------------------------------------------- doctor


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield int(sock.getsockname()[1])


def timed_invoke(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_invoke(env, *args, check=False, timeout=VERIFY_TIMEOUT_S)
    return result, time.monotonic() - started


def doctor_checks(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]]]:
    result, _ = timed_invoke(env, "doctor", "--json")
    return result.returncode, {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_doctor_accepts_the_labs_own_ports_and_names_another_holder(
    lab: Lab, held_port: int
) -> None:
    _, own = doctor_checks(lab.env)
    assert own["docker engine"]["ok"] and own["compose"]["ok"]
    assert own["ports"]["ok"], own["ports"]

    code, checks = doctor_checks({**lab.env, "LAB_JUPYTER_PORT": str(held_port)})
    assert code == 1
    detail = checks["ports"]["detail"]
    assert not checks["ports"]["ok"]
    assert f"port {held_port} (LAB_JUPYTER_PORT) on 127.0.0.1 is in use by python" in detail
    assert f"pid {os.getpid()})" in detail
    assert detail.endswith("set LAB_JUPYTER_PORT to a free port in .env")


def container_ids(lab: Lab) -> list[str]:
    return [
        lab.docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", lab.container(s)).stdout
        for s in ("mlflow", "jupyter")
    ]


def test_up_fails_within_5_s_on_a_failed_check_and_touches_nothing(
    lab: Lab, held_port: int
) -> None:
    before = container_ids(lab)
    taken, elapsed = timed_invoke({**lab.env, "LAB_MLFLOW_PORT": str(held_port)}, "up")
    assert taken.returncode == 1
    assert elapsed < 5, elapsed
    assert taken.stderr.strip().startswith(f"error: port {held_port} (LAB_MLFLOW_PORT)")
    assert taken.stderr.strip().count("\n") == 0

    no_engine = {**lab.env, "DOCKER_HOST": f"unix://{lab.state_dir}/no-such-docker.sock"}
    down, elapsed = timed_invoke(no_engine, "up")
    assert down.returncode == 1
    assert elapsed < 5, elapsed
    assert "error: the Docker engine is not running or not reachable: start it" in down.stderr
    code, checks = doctor_checks(no_engine)
    assert code == 1 and not checks["docker engine"]["ok"]
    assert "sudo systemctl start docker" in checks["docker engine"]["detail"]

    assert container_ids(lab) == before
