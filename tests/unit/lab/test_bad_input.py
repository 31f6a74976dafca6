"""Bad input through the real command line: one line naming the setting and the fix.

Each case runs `python -m invoke ...` as a user would, with every lab setting given
explicitly, and checks: non-zero exit, exactly one line on stderr, no traceback, and
that nothing was started. A few cases need the Docker engine (the port check runs
after the engine check); the rest never reach it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from mlflow_lab.core import docker, settings
from mlflow_lab.core.docker import Result
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import backup, course
from tests.helpers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CLI_TIMEOUT_S = 60


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def docker_engine() -> None:
    """Skip unless an engine answers now: asked per test, not once at import time, so an
    engine that starts a moment after collection still runs these cases."""
    if not docker_available():
        pytest.skip("needs a Docker engine")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without any LAB_ setting, plus a throwaway lab."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    return {
        **clean,
        "LAB_PROJECT": f"bad-input-{os.getpid()}",
        "LAB_MLFLOW_PORT": str(free_port()),
        "LAB_JUPYTER_PORT": str(free_port()),
        "LAB_STATE_DIR": str(tmp_path / "state"),
        "LAB_JUPYTER_TOKEN": "t" * 48,
    }


def cli(
    *args: str, env: dict[str, str], cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    # stdin is not a terminal, as in CI or a script: nobody can answer a question.
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def containers_of(project: str) -> list[str]:
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return listing.stdout.split()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LAB_MLFLOW_PORT", "eighty"),
        ("LAB_MLFLOW_PORT", "70000"),
        ("LAB_JUPYTER_PORT", "0"),
        ("LAB_JUPYTER_PORT", "-1"),
    ],
)
def test_port_setting_that_is_not_a_port(env: dict[str, str], name: str, value: str) -> None:
    result = cli("up", env={**env, name: value})
    assert_one_line_error(result, name, repr(value), "1 to 65535")


@pytest.mark.parametrize("value", ["localhost", "999.1.1.1", "127.0.0", "::1x"])
def test_invalid_bind_address(env: dict[str, str], value: str) -> None:
    result = cli("up", env={**env, "LAB_BIND_ADDRESS": value})
    assert_one_line_error(result, "LAB_BIND_ADDRESS", "127.0.0.1")


@pytest.mark.parametrize("value", ["0.0.0.0", "192.168.1.20"])
def test_a_bind_address_open_to_the_network_is_refused(env: dict[str, str], value: str) -> None:
    result = cli("up", env={**env, "LAB_BIND_ADDRESS": value})
    assert_one_line_error(result, "LAB_BIND_ADDRESS", "no login", "`invoke classroom.up`")


def test_docker_engine_unreachable(env: dict[str, str]) -> None:
    unreachable = {**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    for task in (["up"], ["down"], ["status"], ["destroy", "--yes"]):
        result = cli(*task, env=unreachable)
        assert_one_line_error(result, "Docker engine", "start it")


@pytest.mark.usefixtures("docker_engine")
def test_port_in_use_is_named_within_a_minute_before_any_build(env: dict[str, str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        # An image tag nobody has: were the port check late, `up` would start a build.
        result = cli("up", env={**env, "LAB_MLFLOW_PORT": str(port), "LAB_IMAGE_TAG": "none"})
        elapsed = time.monotonic() - started
    line = assert_one_line_error(result, f"port {port}", "LAB_MLFLOW_PORT", "free port")
    assert "python" in line or "pid" in line or "another program" in line, line
    assert elapsed < 60
    assert "Building" not in result.stdout
    assert containers_of(env["LAB_PROJECT"]) == []


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project without its local state, so a `.env` can be placed in it."""
    copy = tmp_path / "project"
    shutil.copytree(
        PROJECT_ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".lab-*", ".*_cache", "__pycache__", ".benchmarks", ".env"
        ),
    )
    return copy


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("THIS IS NOT A SETTING", [".env line 2", "NAME=value", "fix or remove"]),
        ("LAB_MLFLOW_PROT=8080", [".env line 2", "LAB_MLFLOW_PROT", ".env.example"]),
        ("=8080", [".env line 2", "NAME=value"]),
        # Compose would substitute `$b` here: refused with the fix, not read another way.
        ("LAB_JUPYTER_TOKEN=a$b", [".env line 2", "LAB_JUPYTER_TOKEN", "single quotes"]),
    ],
)
def test_malformed_dotenv_line(
    env: dict[str, str], project_copy: Path, line: str, words: list[str]
) -> None:
    (project_copy / ".env").write_text(f"# the lab\n{line}\n", encoding="utf-8")
    for task in ("up", "status", "destroy"):
        result = cli(task, env=env, cwd=project_copy)
        assert_one_line_error(result, *words)
    assert (project_copy / ".env").read_text(encoding="utf-8") == f"# the lab\n{line}\n"


def test_malformed_dotenv_through_settings_load(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LAB_MLFLOW_PORT 8080\n", encoding="utf-8")
    with pytest.raises(LabError, match=r"\.env line 1: .* is not NAME=value"):
        settings.load(environ={"LAB_JUPYTER_TOKEN": "x" * 48}, env_file=env_file)


@pytest.mark.usefixtures("docker_engine")
def test_destroy_without_yes_and_no_terminal_refuses(env: dict[str, str]) -> None:
    result = cli("destroy", env=env)
    assert_one_line_error(result, "--yes")


def test_restore_without_yes_and_no_terminal_refuses_before_touching_anything(
    env: dict[str, str], tmp_path: Path
) -> None:
    archive = write_backup(tmp_path / "good.tar.gz")
    result = cli("restore", str(archive), env=env)
    if docker_available():
        assert_one_line_error(result, "--yes")
    else:
        assert_one_line_error(result, "Docker engine")


def test_backup_needs_an_output(env: dict[str, str]) -> None:
    assert_one_line_error(cli("backup", env=env), "--output FILE")


def write_backup(path: Path, *, db_bytes: bytes | None = None, sha: str | None = None) -> Path:
    """A small backup in the real format, built on the host."""
    parts: dict[str, bytes] = {}
    db_path = path.with_suffix(".db")
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE runs (id TEXT)")
        conn.execute("INSERT INTO runs VALUES ('r1')")
    conn.close()
    parts["mlflow.db"] = db_bytes if db_bytes is not None else db_path.read_bytes()
    for name in ("artifacts.tar", "workspace.tar"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            data = f"content of {name}".encode()
            info = tarfile.TarInfo("./file.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        parts[name] = buffer.getvalue()
    manifest = {
        "format": backup.FORMAT,
        "version": backup.VERSION,
        "created": "2026-01-01T00:00:00+00:00",
        "project": "mlflow-lab",
        "parts": {
            name: {"size": len(data), "sha256": sha or hashlib.sha256(data).hexdigest()}
            for name, data in parts.items()
        },
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *parts.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_good_backup_file_validates(tmp_path: Path) -> None:
    lab = settings.load(
        environ={"LAB_JUPYTER_TOKEN": "x" * 48, "LAB_STATE_DIR": str(tmp_path / "state")},
        env_file=tmp_path / "none.env",
    )
    manifest = backup.validate(write_backup(tmp_path / "good.tar.gz"), lab)
    assert manifest["format"] == backup.FORMAT


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad-checksum", "not-sqlite", "empty"])
def test_restore_of_a_damaged_file_is_one_line_and_changes_nothing(
    env: dict[str, str], tmp_path: Path, damage: str
) -> None:
    archive = tmp_path / "backup.tar.gz"
    if damage == "truncated":
        write_backup(archive)
        data = archive.read_bytes()
        archive.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        archive.write_bytes(b"\x1f\x8b" + os.urandom(4000))
    elif damage == "bad-checksum":
        write_backup(archive, sha="0" * 64)
    elif damage == "not-sqlite":
        write_backup(archive, db_bytes=b"not a database at all" * 100)
    else:
        archive.write_bytes(gzip.compress(b""))
    before = archive.read_bytes()
    # An unreachable engine proves validation comes first: nothing else is even tried.
    result = cli("restore", "--yes", str(archive), env={**env, "DOCKER_HOST": "unix:///nowhere"})
    assert_one_line_error(result, str(archive), "not a usable lab backup", "nothing was changed")
    assert archive.read_bytes() == before


def test_restore_of_a_missing_file(env: dict[str, str], tmp_path: Path) -> None:
    result = cli("restore", "--yes", str(tmp_path / "nope.tar.gz"), env=env)
    assert_one_line_error(result, "nope.tar.gz", "does not exist")


def test_full_disk_during_a_build_is_named_with_the_fix() -> None:
    build = ("/venv/bin/docker-compose", "-f", "compose.yaml", "-p", "lab", "build", "mlflow")
    failed = Result(
        build,
        1,
        stdout="Step 5/9 : RUN pip install ...",
        stderr="failed to copy files: write /var/lib/docker/tmp/x: no space left on device",
    )
    line = docker.failure(failed)
    assert "disk is full" in line
    assert "docker system prune" in line
    assert "\n" not in line
    other = Result(build, 1, stderr="some other failure\n")
    assert docker.failure(other) == "`docker compose build` failed: some other failure"


def test_unreachable_or_missing_course_repo_warns_and_falls_back(tmp_path: Path) -> None:
    base = settings.load(
        environ={"LAB_JUPYTER_TOKEN": "x" * 48, "LAB_STATE_DIR": str(tmp_path / "state")},
        env_file=tmp_path / "none.env",
    )
    for url in (f"file://{tmp_path}/no-such-repo.git", "git://127.0.0.1:9/no-such.git"):
        lab = settings.Settings(**{**base.__dict__, "repo_url": url})
        fetched = course.fetch_course_repo(lab)
        assert fetched.cache is None
        assert fetched.warning is not None
        assert "could not be fetched" in fetched.warning
        assert "bundled lab" in fetched.warning


def test_git_reads_the_course_url_as_a_url_never_as_an_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = settings.load(
        environ={"LAB_JUPYTER_TOKEN": "x" * 48, "LAB_STATE_DIR": str(tmp_path / "state")},
        env_file=tmp_path / "none.env",
    )
    # Settings refuse such a URL; a Settings made in code (bench, tests) skips that check.
    marker = tmp_path / "ran"
    lab = dataclasses.replace(base, repo_url=f"--upload-pack=touch {marker};")
    calls: list[list[str]] = []
    real_git = course._git

    def recording(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return real_git(args, cwd)

    monkeypatch.setattr(course, "_git", recording)
    fetched = course.fetch_course_repo(lab)
    assert fetched.cache is None and fetched.warning and "could not be fetched" in fetched.warning
    clone = next(args for args in calls if args[0] == "clone")
    assert clone[clone.index("--") + 1] == lab.repo_url
    assert not marker.exists()
