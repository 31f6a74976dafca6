"""The Docker gateway without Docker: failure lines, argv building, parsing, Compose choice.

Real processes where the gateway's own process handling is under test (small shell
scripts named `docker` / `docker-compose` in a temp folder); the fake gateway where
only what is asked and how the answer is read matter.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from mlflow_lab import COMPOSE_FILE
from mlflow_lab.core import docker
from mlflow_lab.core.docker import DockerError, Result
from mlflow_lab.core.errors import LabError
from tests.helpers import REAL_COMPOSE_ARGV, FakeDocker


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def failed(stderr: str = "", stdout: str = "", argv: tuple[str, ...] = ("docker", "build")) -> str:
    return docker.failure(Result(argv, 1, stdout, stderr))


# ------------------------------------------------------------------ failure lines


def test_a_full_disk_is_named_with_the_fix_whatever_the_call() -> None:
    line = failed("failed to copy: write /var/lib/docker/tmp/x: No space left on device\n")
    assert line == (
        "the disk is full: free space (e.g. `docker system prune`) and run the command "
        "again; no lab data was touched"
    )
    assert failed(stdout="ENOSPC? no space left on device") == line, "stdout counts too"


@pytest.mark.parametrize(
    "said",
    [
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?",
        "error during connect: Get http://%2F%2F.%2Fpipe%2Fdocker_engine/v1.24/info",
    ],
)
def test_an_engine_that_is_gone_says_how_to_start_it(said: str) -> None:
    line = failed(f"{said}\n")
    assert line.startswith("the Docker engine is not running or not reachable: start it")
    assert "systemctl start docker" in line and "\n" not in line


def test_otherwise_the_last_line_that_says_something_without_colours() -> None:
    stderr = (
        "#5 [build 3/7] RUN pip install -r requirements.txt\n"
        "\x1b[31mERROR: failed to solve: process did not complete successfully\x1b[0m\n"
        "\x1b[0m\n   \n"
    )
    assert failed(stderr, stdout="Step 5/9 : RUN x\n") == (
        "`docker build` failed: ERROR: failed to solve: process did not complete successfully"
    )


def test_errors_come_before_output_and_the_exit_code_when_nothing_was_said() -> None:
    assert failed("", "only on stdout\n") == "`docker build` failed: only on stdout"
    assert failed("the error\n", "the output\n") == "`docker build` failed: the error"
    assert docker.failure(Result(("docker", "pull", "x"), 3)) == (
        "`docker pull x` failed: exit code 3"
    )


def test_the_fix_comes_last() -> None:
    result = Result(("docker", "volume", "rm", "v"), 1, "", "volume is in use\n")
    assert docker.failure(result, "stop the lab first") == (
        "`docker volume rm` failed: volume is in use: stop the lab first"
    )


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (("/usr/bin/docker", "image", "inspect", "--format", "{{.Id}}", "x"),
         "docker image inspect"),
        (("/usr/bin/docker", "start", "m1"), "docker start m1"),
        (("/usr/bin/docker", "exec", "-i", "c1", "python3"), "docker exec"),
        # Compose's -f FILE -p PROJECT come first; the subcommand is what tells.
        (("/venv/bin/docker-compose", "-f", "/x/compose.yaml", "-p", "lab", "build", "mlflow"),
         "docker compose build"),
        (("/usr/bin/docker", "compose", "-f", "/x/compose.yaml", "-p", "lab", "up", "--no-start"),
         "docker compose up"),
        (("/venv/bin/docker-compose", "version", "--short"), "docker compose version"),
    ],
)  # fmt: skip
def test_a_call_is_shown_as_a_user_would_type_it(argv: tuple[str, ...], shown: str) -> None:
    assert Result(argv, 1).what == f"`{shown}`"


# ----------------------------------------------------------- the process runner


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The only folder on PATH (this machine's docker is out of reach), for scripts that
    stand in for docker; they call other programs by absolute path."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_run_captures_text_and_passes_input_and_env(fake_bin: Path) -> None:
    script(fake_bin / "docker", 'echo "args: $*"; echo "env: $LAB_X"; /bin/cat; echo warn >&2')
    result = docker.run("info", "--format", "x", input="from stdin\n")
    assert result.ok and result.argv == (str(fake_bin / "docker"), "info", "--format", "x")
    assert result.stdout == "args: info --format x\nenv: \nfrom stdin\n"
    assert result.stderr == "warn\n"
    with_env = docker.call([str(fake_bin / "docker")], env={"LAB_X": "1"}, input="")
    assert "env: 1" in with_env.stdout
    assert "LAB_X" not in os.environ, "the variables go to the call only"


def test_a_failed_call_is_one_line_with_its_result(fake_bin: Path) -> None:
    script(fake_bin / "docker", 'echo "Error response from daemon: No such image: x" >&2; exit 1')
    with pytest.raises(DockerError) as raised:
        docker.run("rmi", "x", fix="nothing to remove")
    assert str(raised.value) == (
        "`docker rmi x` failed: Error response from daemon: No such image: x: nothing to remove"
    )
    assert raised.value.result is not None and raised.value.result.code == 1
    unchecked = docker.run("rmi", "x", check=False)
    assert not unchecked.ok and unchecked.code == 1
    assert docker.answers("rmi", "x") is None, "a question's failure is a no"


def test_a_call_that_hangs_is_one_line_after_its_timeout(fake_bin: Path) -> None:
    script(fake_bin / "docker", "exec /bin/sleep 10")
    with pytest.raises(DockerError) as raised:
        docker.run("info", timeout=0.2)
    assert str(raised.value) == (
        "`docker info` did not finish within 0.2 s: check the Docker engine (`docker info`), "
        "then try again"
    )
    assert docker.answers("info", timeout=0.2) is None


def test_a_missing_program_is_one_line(fake_bin: Path) -> None:
    with pytest.raises(LabError) as raised:
        docker.run("info")
    assert str(raised.value) == "the `docker` command is not installed: install Docker Engine first"
    with pytest.raises(LabError, match=r"^/nowhere/docker-compose is not installed: install"):
        docker.call(["/nowhere/docker-compose", "version"])
    with pytest.raises(LabError, match="is not installed"):
        docker.call_lines(["/nowhere/docker"], on_line=print)


def test_call_lines_hands_each_line_on_and_keeps_the_tail(fake_bin: Path) -> None:
    build = script(fake_bin / "docker", 'echo "Step 1/2 : FROM x"; echo oops >&2; exit 2')
    seen: list[str] = []
    result = docker.call_lines([str(build), "build"], on_line=seen.append)
    assert seen == ["Step 1/2 : FROM x", "oops"]
    assert result.code == 2 and result.last_line() == "oops"


def test_stream_moves_bytes_and_keeps_errors(fake_bin: Path, tmp_path: Path) -> None:
    cat = script(fake_bin / "docker", "/bin/cat; echo done >&2")
    source, target = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(bytes(range(256)))
    with source.open("rb") as src, target.open("wb") as out:
        result = docker.stream([str(cat), "load"], stdin=src, stdout=out, timeout=10)
    assert target.read_bytes() == bytes(range(256)) and result.stderr == "done\n"
    full = script(fake_bin / "docker", "echo 'write /x: no space left on device' >&2; exit 1")
    with pytest.raises(DockerError, match=r"^the disk is full"):
        docker.stream([str(full), "load"], timeout=10)


# ------------------------------------------------------------------- the engine


def test_engine_version_and_its_two_failures(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker version --format \{\{\.Server\.Version\}\}$", stdout="27.3.1\n")
    assert docker.engine_version() == "27.3.1"
    fake_docker.on(r"^docker version", code=1, stderr="Cannot connect to the Docker daemon")
    with pytest.raises(LabError, match=r"^the Docker engine is not running or not reachable"):
        docker.engine_version()
    fake_docker.on(r"^docker version", DockerError("`docker version` did not finish"))
    with pytest.raises(LabError, match=r"^the Docker engine did not answer within 4 s: start"):
        docker.engine_version(timeout=4)
    assert [c.timeout for c in fake_docker.calls] == [10, 10, 4]


def test_info_is_a_dict_or_none(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker info --format \{\{json \.\}\}$", stdout='{"DockerRootDir": "/d"}')
    assert docker.info() == {"DockerRootDir": "/d"}
    fake_docker.on(r"^docker info", stdout="not json")
    assert docker.info() is None
    fake_docker.on(r"^docker info", code=1, stderr="Cannot connect to the Docker daemon")
    assert docker.info() is None


def test_free_space_measures_the_engines_root_when_it_is_here(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    fake_docker.on(r"^docker info --format \{\{\.DockerRootDir\}\}$", stdout=f"{tmp_path}\n")
    where, free = docker.free_space()
    assert where == str(tmp_path) and free > 0
    assert docker.free_space(str(tmp_path / "in-a-vm"))[0] == "/"


def test_image_label_and_id(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"image inspect --format \{\{index \.Config\.Labels \"org\.x\"\}\} a:1$",
                   stdout="abc\n")  # fmt: skip
    fake_docker.on(r"image inspect --format .* b:1$", stdout="<no value>\n")
    fake_docker.on(r"image inspect --format .* c:1$", code=1, stderr="No such image: c:1")
    assert docker.image_label("a:1", "org.x") == "abc"
    assert docker.image_label("b:1", "org.x") == "", "unlabelled"
    assert docker.image_label("c:1", "org.x") is None, "absent"
    fake_docker.on(r"^docker image inspect --format \{\{\.Id\}\} a:1$", stdout="sha256:1\n")
    assert docker.image_id("a:1") == "sha256:1"
    assert docker.image_id("c:1") is None


def test_exec_in_builds_its_argv(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker exec", stdout="ok\n")
    docker.exec_in("c1", "python3", "x.py", input="data", user="student", env={"A": "1"})
    docker.exec_in("c1", "true")
    assert fake_docker.argvs == [
        ["docker", "exec", "-i", "--user", "student", "--env", "A=1", "c1", "python3", "x.py"],
        ["docker", "exec", "c1", "true"],
    ]
    assert fake_docker.calls[0].input == "data"


def test_inspect_one_reads_the_document_or_none(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker inspect m1$", stdout=json.dumps([{"Id": "m1"}]))
    fake_docker.on(r"^docker inspect gone$", code=1, stderr="Error: No such object: gone")
    assert docker.inspect_one("m1") == {"Id": "m1"}
    assert docker.inspect_one("gone") is None


# -------------------------------------------------------------------- containers


def test_containers_filters_by_every_label_and_reads_one_line_each(
    fake_docker: FakeDocker,
) -> None:
    fake_docker.on(r"^docker ps", stdout="a1\n\n  \nb2\n")
    assert docker.containers({"x": "1", "y": "two"}) == ["a1", "b2"]
    assert fake_docker.argvs[0] == [
        "docker", "ps", "--no-trunc", "--format", "{{.ID}}", "--all",
        "--filter", "label=x=1", "--filter", "label=y=two",
    ]  # fmt: skip
    docker.containers({}, "{{.Names}}", all=False)
    assert "--all" not in fake_docker.argvs[1]


def test_containers_of_an_engine_that_is_away_are_none(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker ps", code=1, stderr="Cannot connect to the Docker daemon")
    assert docker.containers({"x": "1"}) == []


# ----------------------------------------------------------------------- Compose


def test_compose_argv_puts_file_and_project_first(fake_docker: FakeDocker) -> None:
    project = docker.Compose(COMPOSE_FILE, "lab-x", {"LAB_A": "1"})
    assert project.argv("up", "--no-start") == [
        "docker", "compose", "-f", str(COMPOSE_FILE), "-p", "lab-x", "up", "--no-start",
    ]  # fmt: skip
    fake_docker.on(r"^docker compose -f \S+ -p lab-x stop$")
    project.run("stop")
    assert fake_docker.calls[0].env == {"LAB_A": "1"}


def test_compose_containers_are_this_projects_wanted_services(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker ps", stdout="mlflow m1\njupyter j1\nhelper h1\nbroken\n")
    project = docker.Compose(COMPOSE_FILE, "lab-x")
    assert project.containers(["mlflow", "jupyter", "broken"]) == {"mlflow": "m1", "jupyter": "j1"}
    argv = fake_docker.argvs[0]
    assert "label=com.docker.compose.project=lab-x" in argv
    assert "label=com.docker.compose.oneoff=False" in argv
    assert '{{.Label "com.docker.compose.service"}} {{.ID}}' in argv


@pytest.mark.parametrize("as_array", [False, True])
def test_compose_states_read_both_ps_formats(fake_docker: FakeDocker, as_array: bool) -> None:
    items = [
        {"Service": "mlflow", "State": "running", "Health": "healthy", "Name": "lab-mlflow-1"},
        {"Service": "jupyter", "State": "exited", "Name": "lab-jupyter-1"},
    ]
    text = json.dumps(items) if as_array else "\n".join(json.dumps(i) for i in items)
    fake_docker.on(r"^docker compose .* ps --all --format json$", stdout=text)
    assert docker.Compose(COMPOSE_FILE, "lab-x").states() == {
        "mlflow": {"state": "running", "health": "healthy", "container": "lab-mlflow-1"},
        "jupyter": {"state": "exited", "health": "", "container": "lab-jupyter-1"},
    }


def test_compose_states_of_no_containers(fake_docker: FakeDocker) -> None:
    fake_docker.on(r" ps --all --format json$", stdout="\n")
    assert docker.Compose(COMPOSE_FILE, "lab-x").states() == {}


def test_compose_running_asks_for_running_containers_only(fake_docker: FakeDocker) -> None:
    fake_docker.on(r"^docker ps", ["", "abc\n"])
    project = docker.Compose(COMPOSE_FILE, "lab-x")
    assert not project.running()
    assert project.running()
    assert all("--all" not in argv for argv in fake_docker.argvs)


# ------------------------------------------------------------ which Compose runs


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A venv folder, a PATH folder, and an empty HOME and DOCKER_CONFIG to watch."""
    venv, on_path = tmp_path / "venv" / "bin", tmp_path / "path"
    venv.mkdir(parents=True)
    on_path.mkdir()
    home, config = tmp_path / "home", tmp_path / "docker-config"
    home.mkdir()
    config.mkdir()
    monkeypatch.setattr(docker.sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    REAL_COMPOSE_ARGV.cache_clear()
    yield {"venv": venv, "path": on_path, "home": home, "config": config}
    REAL_COMPOSE_ARGV.cache_clear()


def compose_says(version: str) -> str:
    return f'[ "$1 $2" = "version --short" ] && echo {version} && exit 0; exit 1'


def docker_plugin_says(version: str) -> str:
    return f'[ "$1 $2 $3" = "compose version --short" ] && echo {version} && exit 0; exit 1'


def untouched(*folders: Path) -> None:
    for folder in folders:
        assert list(folder.rglob("*")) == [], f"something was written in {folder}"


def test_the_venvs_compose_binary_comes_first(machine: dict[str, Path]) -> None:
    venv_compose = script(machine["venv"] / "docker-compose", compose_says("2.30.0"))
    script(machine["path"] / "docker-compose", compose_says("v2.29.1"))
    script(machine["path"] / "docker", docker_plugin_says("v2.28.0"))
    assert REAL_COMPOSE_ARGV() == (str(venv_compose),)
    untouched(machine["home"], machine["config"])


def test_a_compose_v1_binary_is_passed_over_for_the_plugin(machine: dict[str, Path]) -> None:
    script(machine["venv"] / "docker-compose", compose_says("1.29.2"))
    path_compose = script(machine["path"] / "docker-compose", compose_says("v2.29.1"))
    assert REAL_COMPOSE_ARGV() == (str(path_compose),)
    REAL_COMPOSE_ARGV.cache_clear()
    path_compose.unlink()
    docker_cli = script(machine["path"] / "docker", docker_plugin_says("v2.28.0"))
    assert REAL_COMPOSE_ARGV() == (str(docker_cli), "compose")
    untouched(machine["home"], machine["config"])


def test_no_compose_says_how_to_install_it_and_installs_nothing(
    machine: dict[str, Path],
) -> None:
    script(machine["venv"] / "docker-compose", "exit 1")  # broken: not v2
    script(
        machine["path"] / "docker",
        "echo \"docker: 'compose' is not a docker command.\" >&2; exit 1",
    )
    with pytest.raises(LabError) as raised:
        REAL_COMPOSE_ARGV()
    line = str(raised.value)
    assert line.startswith("Docker Compose v2 or later is missing: install Docker Compose v2")
    assert "pip install -r requirements.txt" in line and "docker-compose-plugin" in line
    assert "\n" not in line
    untouched(machine["home"], machine["config"])
    assert sorted(p.name for p in machine["venv"].iterdir()) == ["docker-compose"]


def test_the_choice_is_made_once(machine: dict[str, Path]) -> None:
    counter = machine["home"].parent / "asked"
    script(
        machine["venv"] / "docker-compose",
        f"echo x >> {counter}; echo v2.30.0",
    )
    assert REAL_COMPOSE_ARGV() == REAL_COMPOSE_ARGV()
    assert counter.read_text().count("x") == 1


def test_the_fake_gateway_fails_a_call_nobody_scripted(fake_docker: FakeDocker) -> None:
    # The fake itself: an unscripted call must fail the test, not pass it silently.
    with pytest.raises(pytest.fail.Exception, match="unexpected Docker call"):
        docker.run("system", "prune", "--force")
    fake_docker.unmatched.clear()  # seen: do not fail this test again at teardown
    assert sys.modules["mlflow_lab.core.docker"].call == fake_docker.call
