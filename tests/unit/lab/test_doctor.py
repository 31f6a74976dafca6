"""`invoke doctor` and the checks `invoke up` runs first: no Docker needed.

Docker is the fake gateway (tests/helpers.py FakeDocker): each test scripts what the
engine answers, and a call it did not script fails it. A port is held by a real socket.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

import tasks
from mlflow_lab.core import docker, settings
from mlflow_lab.core.docker import DockerError
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import doctor, images
from tests.helpers import REAL_COMPOSE_ARGV, FakeDocker, free_port

GIB = 1024**3
VERSION = r"^docker version --format \{\{\.Server\.Version\}\}$"
INFO = r"^docker info --format \{\{json \.\}\}$"


@pytest.fixture
def lab(tmp_path: Path) -> settings.Settings:
    env = {
        "LAB_STATE_DIR": str(tmp_path / "state"),
        "LAB_JUPYTER_TOKEN": "t" * 48,
        "LAB_PROJECT": "doctor-unit",
        "LAB_MLFLOW_PORT": str(free_port()),
        "LAB_JUPYTER_PORT": str(free_port()),
    }
    return settings.load(env, env_file=tmp_path / "no.env")


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# --------------------------------------------------------------------- engine, compose


def test_engine_passes_with_its_version(fake_docker: FakeDocker) -> None:
    fake_docker.on(VERSION, "27.3.1\n")
    result = doctor.check_engine()
    assert result.ok and "27.3.1" in result.detail


def test_engine_not_running_says_how_to_start_it(fake_docker: FakeDocker) -> None:
    fake_docker.fail(VERSION, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
    result = doctor.check_engine()
    assert not result.ok
    assert "not running" in result.detail and "systemctl start docker" in result.detail


def test_engine_that_hangs_fails_within_the_doctor_timeout(fake_docker: FakeDocker) -> None:
    fake_docker.on(VERSION, DockerError("`docker version` did not finish within 4 s"))
    result = doctor.check_engine()
    assert not result.ok and f"within {doctor.DOCKER_TIMEOUT_S:g} s" in result.detail
    assert [c.timeout for c in fake_docker.calls] == [doctor.DOCKER_TIMEOUT_S]


def test_engine_without_the_docker_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    result = doctor.check_engine()
    assert not result.ok and "`docker` command is not installed" in result.detail


@pytest.fixture
def machine(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, Path]]:
    """The real Compose choice over the fake gateway: an empty venv bin folder, an empty
    PATH, and an empty HOME and DOCKER_CONFIG that must stay empty."""
    folders = {name: tmp_path / name for name in ("venv", "path", "home", "docker-config")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setattr(docker, "compose_argv", REAL_COMPOSE_ARGV)
    monkeypatch.setattr(docker.sys, "executable", str(folders["venv"] / "python"))
    monkeypatch.setenv("PATH", str(folders["path"]))
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("DOCKER_CONFIG", str(folders["docker-config"]))
    REAL_COMPOSE_ARGV.cache_clear()
    yield folders
    REAL_COMPOSE_ARGV.cache_clear()


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def nothing_written(machine: dict[str, Path]) -> None:
    for name in ("home", "docker-config"):
        assert list(machine[name].rglob("*")) == [], f"something was written in {name}"


def test_compose_binary_is_run_directly_and_nothing_is_installed(
    fake_docker: FakeDocker, machine: dict[str, Path]
) -> None:
    binary = executable(machine["venv"] / "docker-compose")
    fake_docker.on(rf"^{binary} version --short$", "v2.30.0\n")
    result = doctor.check_compose()
    assert result.ok and result.detail == f"`{binary}` is available"
    nothing_written(machine)


def test_compose_plugin_when_there_is_no_binary_to_run(
    fake_docker: FakeDocker, machine: dict[str, Path]
) -> None:
    fake_docker.on(r"^docker compose version --short$", "2.29.7\n")
    result = doctor.check_compose()
    assert result.ok and "`docker compose`" in result.detail
    nothing_written(machine)


def test_compose_v1_is_not_enough(fake_docker: FakeDocker, machine: dict[str, Path]) -> None:
    binary = executable(machine["path"] / "docker-compose")
    fake_docker.on(rf"^{binary} version --short$", "1.29.2\n")
    fake_docker.fail(r"^docker compose version", "docker: 'compose' is not a docker command.")
    result = doctor.check_compose()
    assert not result.ok and "Compose v2 or later is missing" in result.detail


def test_compose_missing_names_the_package_and_installs_nothing(
    fake_docker: FakeDocker, machine: dict[str, Path]
) -> None:
    fake_docker.fail(r"^docker compose version", "docker: 'compose' is not a docker command.")
    result = doctor.check_compose()
    assert not result.ok
    assert result.detail.startswith("Docker Compose v2 or later is missing: install")
    assert "pip install -r requirements.txt" in result.detail
    assert "docker-compose-plugin" in result.detail
    nothing_written(machine)
    assert list(machine["venv"].iterdir()) == [], "no Compose is put in the venv either"


# --------------------------------------------------------------------------- ports


def test_free_ports_pass(lab: settings.Settings) -> None:
    result = doctor.check_ports(lab)
    assert result.ok and str(lab.mlflow_port) in result.detail


def test_port_held_by_a_process_names_it(
    fake_docker: FakeDocker, lab: settings.Settings, held_port: int
) -> None:
    running_containers(fake_docker, ("web-1", "", "0.0.0.0:80->80/tcp"))
    result = doctor.check_ports(dataclasses.replace(lab, jupyter_port=held_port))
    assert not result.ok
    assert f"port {held_port} (LAB_JUPYTER_PORT)" in result.detail
    assert "set LAB_JUPYTER_PORT to a free port" in result.detail
    if shutil.which("ss"):
        assert f"pid {os.getpid()}" in result.detail
    else:
        assert "another program" in result.detail


def running_containers(fake: FakeDocker, *rows: tuple[str, str, str]) -> None:
    """`docker ps` of running containers: (name, compose project, published ports)."""
    fake.on(
        r"^docker ps --no-trunc --format \{\{\.Names\}\}",
        "".join("\t".join(row) + "\n" for row in rows),
    )


def test_port_held_by_another_container_names_it(
    fake_docker: FakeDocker, lab: settings.Settings, held_port: int
) -> None:
    running_containers(
        fake_docker,
        ("db-1", "", "0.0.0.0:5432->5432/tcp"),
        ("other-mlflow-1", "other", f"127.0.0.1:{held_port}->8080/tcp"),
    )
    result = doctor.check_ports(dataclasses.replace(lab, mlflow_port=held_port))
    assert not result.ok
    assert "in use by container other-mlflow-1" in result.detail
    assert "LAB_MLFLOW_PORT" in result.detail
    assert "--all" not in fake_docker.argvs[0], "only running containers hold ports"


def test_port_held_by_this_labs_own_stack_is_fine(
    fake_docker: FakeDocker, lab: settings.Settings, held_port: int
) -> None:
    running_containers(fake_docker, ("x-mlflow-1", lab.project, f"127.0.0.1:{held_port}->8080/tcp"))
    assert doctor.check_ports(dataclasses.replace(lab, mlflow_port=held_port)).ok


# ---------------------------------------------------------------------------- disk


def disk_with(monkeypatch: pytest.MonkeyPatch, free_gib: float) -> list[str]:
    asked: list[str] = []

    def usage(path: str) -> SimpleNamespace:
        asked.append(str(path))
        return SimpleNamespace(free=int(free_gib * GIB))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    return asked


def test_disk_short_for_a_build_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = disk_with(monkeypatch, 3.0)
    result = doctor.check_disk({"DockerRootDir": str(tmp_path)}, ["mlflow", "jupyter"])
    assert asked == [str(tmp_path)]
    assert not result.ok
    assert f"3.0 GiB free on {tmp_path}" in result.detail
    assert "4 GiB needed to build the mlflow and jupyter image" in result.detail
    assert "docker system prune" in result.detail


def test_disk_enough_for_a_build_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    disk_with(monkeypatch, 4.5)
    assert doctor.check_disk({"DockerRootDir": str(tmp_path)}, ["jupyter"]).ok


def test_disk_with_images_built_needs_room_for_data_only(monkeypatch: pytest.MonkeyPatch) -> None:
    disk_with(monkeypatch, 3.0)
    assert doctor.check_disk(None, []).ok
    disk_with(monkeypatch, 0.5)
    result = doctor.check_disk(None, [])
    assert not result.ok and "1 GiB needed for the lab's data" in result.detail


def test_disk_falls_back_to_root_when_dockers_folder_is_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked = disk_with(monkeypatch, 50)
    result = doctor.check_disk({"DockerRootDir": str(tmp_path / "in-a-vm")}, ["mlflow"])
    assert asked == ["/"] and result.ok and "on /" in result.detail


# -------------------------------------------------------------------------- memory


def test_memory_reads_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  3145728 kB\n", encoding="utf-8")
    assert doctor._mem_available_bytes(meminfo) == 3 * GIB
    assert doctor._mem_available_bytes(tmp_path / "none") is None


def test_memory_short_fails(monkeypatch: pytest.MonkeyPatch, lab: settings.Settings) -> None:
    monkeypatch.setattr(doctor, "_mem_available_bytes", lambda: GIB)
    monkeypatch.setattr(doctor, "_lab_running", lambda s: False)
    result = doctor.check_memory(lab, None)
    assert not result.ok
    assert "1.0 GiB available, 2 GiB needed" in result.detail


def test_memory_short_is_fine_when_the_lab_already_runs(
    monkeypatch: pytest.MonkeyPatch, lab: settings.Settings
) -> None:
    monkeypatch.setattr(doctor, "_mem_available_bytes", lambda: GIB)
    monkeypatch.setattr(doctor, "_lab_running", lambda s: True)
    result = doctor.check_memory(lab, None)
    assert result.ok and "already running" in result.detail


def test_memory_enough_passes(monkeypatch: pytest.MonkeyPatch, lab: settings.Settings) -> None:
    monkeypatch.setattr(doctor, "_mem_available_bytes", lambda: 6 * GIB)
    assert doctor.check_memory(lab, None).ok


def test_memory_without_proc_uses_the_docker_vm(
    monkeypatch: pytest.MonkeyPatch, lab: settings.Settings
) -> None:
    monkeypatch.setattr(doctor, "_mem_available_bytes", lambda: None)
    monkeypatch.setattr(doctor, "_lab_running", lambda s: False)
    result = doctor.check_memory(lab, {"MemTotal": GIB})
    assert not result.ok and "in the Docker VM" in result.detail
    assert doctor.check_memory(lab, {"MemTotal": 4 * GIB}).ok


def test_lab_running_asks_docker_for_this_project(
    fake_docker: FakeDocker, lab: settings.Settings
) -> None:
    fake_docker.on(r"^docker ps ", ["abc123\n", ""])
    assert doctor._lab_running(lab)
    assert f"label=com.docker.compose.project={lab.project}" in fake_docker.argvs[0]
    assert "--all" not in fake_docker.argvs[0], "a stopped lab holds no memory"
    assert not doctor._lab_running(lab)


# -------------------------------------------------------------------- architecture


@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "arm64"])
def test_supported_architectures_pass(arch: str) -> None:
    result = doctor.check_architecture({"Architecture": arch})
    assert result.ok and arch in result.detail


def test_unsupported_architecture_fails() -> None:
    result = doctor.check_architecture({"Architecture": "s390x"})
    assert not result.ok
    assert "s390x (Docker engine) is not supported" in result.detail
    assert "x86_64 and aarch64" in result.detail


def test_architecture_without_engine_uses_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "armv7l")
    result = doctor.check_architecture(None)
    assert not result.ok and "armv7l (this machine)" in result.detail
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert doctor.check_architecture(None).ok


# -------------------------------------------------------------- proxy and CA (info)


def test_proxy_is_shown_without_credentials() -> None:
    env = {"HTTPS_PROXY": "http://alice:s3cret@proxy.example:3128", "no_proxy": "localhost"}
    info = {"HTTPProxy": "http://proxy.example:3128", "NoProxy": "127.0.0.1"}
    result = doctor.check_proxy(info, env)
    assert result.ok
    assert "HTTPS_PROXY=http://***@proxy.example:3128" in result.detail
    assert "NO_PROXY=localhost" in result.detail
    assert "HTTPProxy=http://proxy.example:3128" in result.detail
    assert "s3cret" not in result.detail


def test_no_proxy_anywhere_says_so() -> None:
    result = doctor.check_proxy(None, {})
    assert result.ok and result.detail == "here: none; Docker engine: none"


def test_ca_bundle_is_shown(lab: settings.Settings, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    assert doctor.check_ca(dataclasses.replace(lab, ca_bundle=bundle)).detail.endswith(str(bundle))
    none = doctor.check_ca(dataclasses.replace(lab, ca_bundle=None))
    assert none.ok and "LAB_CA_BUNDLE" in none.detail


# ----------------------------------------------------------------- run, show, up


@pytest.fixture
def healthy_machine(fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    """An engine that answers, no image built yet, plenty of memory and disk."""
    fake_docker.on(VERSION, "27.3.1\n")
    info = {"DockerRootDir": "/", "Architecture": "x86_64", "MemTotal": 8 * GIB}
    fake_docker.on(INFO, json.dumps(info))
    fake_docker.fail(r"^docker image inspect ", "Error: No such image")
    monkeypatch.setattr(doctor, "_mem_available_bytes", lambda: 8 * GIB)
    disk_with(monkeypatch, 100)
    return fake_docker


def test_run_lists_every_check_and_passes_on_a_good_machine(
    healthy_machine: FakeDocker, lab: settings.Settings
) -> None:
    results = doctor.run(lab)
    assert [r.name for r in results] == [
        "docker engine",
        "compose",
        "ports",
        "disk",
        "memory",
        "cpu architecture",
        "proxy",
        "ca bundle",
        "datasets",
    ]
    assert all(r.ok for r in results), results
    # No image exists yet (image inspect fails): the disk must hold a build.
    assert "4 GiB needed to build the mlflow and jupyter image" in results[3].detail
    assert results[1].detail == "`docker compose` is available"
    assert results[5].detail == "x86_64 (Docker engine)"
    doctor.require(lab)
    asked = {line.split(" --")[0] for line in healthy_machine.lines}
    assert asked == {"docker version", "docker info", "docker image inspect"}


def test_without_engine_docker_is_not_asked_again(
    healthy_machine: FakeDocker, lab: settings.Settings
) -> None:
    healthy_machine.fail(VERSION, "Cannot connect to the Docker daemon at unix:///x.sock")
    results = {r.name: r for r in doctor.run(lab)}
    assert not results["docker engine"].ok
    assert "4 GiB needed to build" in results["disk"].detail
    assert results["cpu architecture"].detail.endswith("(this machine)")
    assert all(line.startswith("docker version ") for line in healthy_machine.lines), (
        "asked Docker more although the engine is down"
    )
    with pytest.raises(LabError, match="Docker engine is not running"):
        doctor.require(lab)


def test_show_prints_json_and_fails_when_a_check_fails(capsys: pytest.CaptureFixture[str]) -> None:
    results = [
        doctor.CheckResult("a", True, "fine"),
        doctor.CheckResult("b", False, "broken: fix it"),
    ]
    with pytest.raises(LabError, match=r"1 of 2 checks failed \(first: b\).*`invoke doctor`"):
        doctor.show(results, as_json=True, command="invoke doctor")
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False
    assert printed["checks"][1] == {"name": "b", "ok": False, "detail": "broken: fix it"}
    doctor.show(results[:1], as_json=False, command="invoke doctor")
    assert capsys.readouterr().out.split() == ["pass", "a", "fine"]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The tasks' settings from the environment only (no .env), state in tmp_path."""
    for name in settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings, "ENV_FILE", tmp_path / "no.env")
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))


def test_doctor_task_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    environment: None,
    healthy_machine: FakeDocker,
    held_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LAB_MLFLOW_PORT", str(held_port))
    monkeypatch.setenv("LAB_JUPYTER_PORT", str(free_port()))
    running_containers(healthy_machine)  # no container: a process holds it
    with pytest.raises(Exit) as exited:
        tasks.doctor(MockContext(), json_=True)
    assert exited.value.code == 1
    assert str(exited.value.message).count("\n") == 0
    assert str(exited.value.message).startswith("error: 1 of 9 checks failed (first: ports)")
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert not checks["ports"]["ok"] and f"port {held_port}" in checks["ports"]["detail"]


def test_doctor_task_without_compose_says_how_to_install_it_and_writes_nothing(
    environment: None,
    healthy_machine: FakeDocker,
    machine: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy_machine.fail(r"^docker compose version", "docker: 'compose' is not a docker command.")
    with pytest.raises(Exit) as exited:
        tasks.doctor(MockContext())
    assert str(exited.value.message).startswith("error: 1 of 9 checks failed (first: compose)")
    [compose_line] = [line for line in capsys.readouterr().out.splitlines() if " compose " in line]
    assert compose_line.startswith("FAIL  compose")
    assert "pip install -r requirements.txt" in compose_line
    nothing_written(machine)


def test_up_fails_fast_on_a_held_port_before_building(
    monkeypatch: pytest.MonkeyPatch, environment: None, healthy_machine: FakeDocker, held_port: int
) -> None:
    monkeypatch.setenv("LAB_MLFLOW_PORT", str(free_port()))
    monkeypatch.setenv("LAB_JUPYTER_PORT", str(held_port))
    running_containers(healthy_machine)

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built although a check failed")

    monkeypatch.setattr(images, "build", no_build)
    started = time.monotonic()
    with pytest.raises(Exit, match=rf"port {held_port} \(LAB_JUPYTER_PORT\) .* is in use by"):
        tasks.up(MockContext())
    assert time.monotonic() - started < 5
    # Only the checks' questions: nothing was created or started.
    assert not healthy_machine.matching(r"^docker (compose|start|run|create)")
