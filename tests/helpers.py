"""Small helpers shared by the unit and end-to-end tests."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker, settings
from mlflow_lab.core.docker import DockerError, Result
from mlflow_lab.core.ports import free_port

__all__ = [
    "FakeDocker",
    "Result",
    "container_module",
    "fake_california_archive",
    "free_port",
    "isolate_settings",
    "self_signed_cert",
    "served",
    "served_folder",
    "wait_until",
]


def isolate_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from a temp state dir, a fixed token and no .env: nothing from this machine."""
    for name in settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LAB_JUPYTER_TOKEN", "t" * 48)
    monkeypatch.setattr(settings, "ENV_FILE", tmp_path / "no.env")


def class_settings_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stack: str = "room"
) -> ClassSettings:
    """A class's settings (stack `stack`, state dir in tmp_path/class), nothing from this
    machine."""
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_CLASS_STATE_DIR", str(tmp_path / "class"))
    monkeypatch.setenv("LAB_CLASS_STACK", stack)
    return class_settings.load(env_file=tmp_path / "no.env")


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 1.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # a probe that raises simply is not ready yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def container_module(image: str, name: str) -> ModuleType:
    """A module that runs inside an image (docker/IMAGE/NAME.py), imported for its tests."""
    path = PROJECT_ROOT / "docker" / image / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses and pickling look the module up by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- a fake of the Docker gateway ------------------------------------------------------

# What a rule answers: a Result (its argv is replaced by the call's), a str (the stdout
# of a success), a function of the call's argv, an exception to raise (a timeout, a
# missing binary), or a list of these answered in turn (the last one repeats).
Answer = Result | str | Callable[[list[str]], Result | str] | BaseException
# The real compose_argv, for the tests of the gateway itself.
REAL_COMPOSE_ARGV = docker.compose_argv


@dataclasses.dataclass(frozen=True)
class Call:
    """One Docker call the code under test made."""

    argv: list[str]
    env: Mapping[str, str] | None
    input: str | None
    timeout: float | None

    @property
    def line(self) -> str:
        return " ".join(self.argv)


class FakeDocker:
    """Stands in for `mlflow_lab.core.docker.call` and its siblings, like invoke's
    MockContext does for `c.run`, one level lower: rules `(regex on " ".join(argv)) ->
    answer`, the newest matching rule wins, every call is recorded, and a call no rule
    matches fails the test (at the call and again at teardown, in case it was caught).

    `docker` is "docker" and Compose is "docker compose", so rules read as commands do:
    `fake.on(r"^docker compose .* up --no-start")`.
    """

    def __init__(self) -> None:
        self.rules: list[tuple[re.Pattern[str], list[Answer]]] = []
        self.calls: list[Call] = []
        self.unmatched: list[str] = []
        self._lock = threading.Lock()

    # -- scripting --------------------------------------------------------------------

    def on(
        self,
        pattern: str,
        answer: Answer | Sequence[Answer] | None = None,
        *,
        stdout: str = "",
        stderr: str = "",
        code: int = 0,
    ) -> FakeDocker:
        """Answer calls matching `pattern` (re.search on the joined argv)."""
        if answer is None:
            answer = Result((), code, stdout, stderr)
        answers = list(answer) if isinstance(answer, list | tuple) else [answer]
        assert answers, "a rule needs at least one answer"
        self.rules.append((re.compile(pattern), answers))
        return self

    def fail(self, pattern: str, stderr: str, *, code: int = 1) -> FakeDocker:
        return self.on(pattern, stderr=stderr, code=code)

    # -- what was called --------------------------------------------------------------

    @property
    def argvs(self) -> list[list[str]]:
        return [call.argv for call in self.calls]

    @property
    def lines(self) -> list[str]:
        return [call.line for call in self.calls]

    def matching(self, pattern: str) -> list[Call]:
        return [call for call in self.calls if re.search(pattern, call.line)]

    # -- answering ----------------------------------------------------------------------

    def answer(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float | None = None,
    ) -> Result:
        argv = [str(a) for a in argv]
        line = " ".join(argv)
        with self._lock:
            self.calls.append(Call(argv, dict(env) if env is not None else None, input, timeout))
            for pattern, answers in reversed(self.rules):
                if pattern.search(line):
                    answer = answers.pop(0) if len(answers) > 1 else answers[0]
                    break
            else:
                self.unmatched.append(line)
                pytest.fail(f"unexpected Docker call (no rule matches): {line}", pytrace=False)
        if isinstance(answer, BaseException):
            raise answer
        result = answer(argv) if callable(answer) else answer
        if isinstance(result, str):
            result = Result((), 0, result)
        return dataclasses.replace(result, argv=tuple(argv))

    def call(
        self,
        argv: Sequence[str],
        *,
        timeout: float = docker.TIMEOUT_S,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        fix: str = "",
    ) -> Result:
        result = self.answer(argv, env=env, input=input, timeout=timeout)
        if check and not result.ok:
            raise DockerError(docker.failure(result, fix), result)
        return result

    def call_lines(
        self,
        argv: Sequence[str],
        *,
        on_line: Callable[[str], None],
        env: Mapping[str, str] | None = None,
    ) -> Result:
        result = self.answer(argv, env=env)
        merged = result.stdout + result.stderr
        for text in merged.splitlines():
            on_line(text)
        return Result(result.argv, result.code, "", merged)

    def stream(
        self,
        argv: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        timeout: float,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        fix: str = "",
    ) -> Result:
        result = self.answer(argv, env=env, timeout=timeout)
        if stdout is not None:
            stdout.write(result.stdout.encode())
        if check and not result.ok:
            raise DockerError(docker.failure(result, fix), result)
        return Result(result.argv, result.code, "", result.stderr)

    def popen(self, args: Sequence[str], **kwargs: Any) -> Any:
        line = " ".join(["docker", *args])
        self.unmatched.append(line)
        pytest.fail(f"unexpected Docker process (popen is not faked): {line}", pytrace=False)

    def attached(self, compose: docker.Compose, *args: str) -> int:
        return self.answer(compose.argv(*args), env=compose.env).code

    # -- installing ---------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
        """Put this fake in place of the gateway's process runners (undone by monkeypatch)."""
        fake = self
        REAL_COMPOSE_ARGV.cache_clear()
        docker.has_buildx.cache_clear()
        monkeypatch.setattr(docker, "_docker_binary", lambda: "docker")
        monkeypatch.setattr(docker, "compose_argv", lambda: ("docker", "compose"))
        monkeypatch.setattr(docker, "call", self.call)
        monkeypatch.setattr(docker, "call_lines", self.call_lines)
        monkeypatch.setattr(docker, "stream", self.stream)
        monkeypatch.setattr(docker, "popen", self.popen)

        def attached(compose: docker.Compose, *args: str) -> int:
            return fake.attached(compose, *args)

        monkeypatch.setattr(docker.Compose, "attached", attached)
        return self

    def check_teardown(self) -> None:
        docker.has_buildx.cache_clear()
        REAL_COMPOSE_ARGV.cache_clear()
        if self.unmatched:
            pytest.fail(
                "unexpected Docker calls (no rule matched): " + "; ".join(self.unmatched),
                pytrace=False,
            )


@contextmanager
def served(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on loopback answering with `handler`, in a thread; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def served_folder(root: Path) -> Iterator[str]:
    """`root` served over HTTP on loopback (a stand-in for figshare); yields its base URL."""
    with served(partial(http.server.SimpleHTTPRequestHandler, directory=str(root))) as url:
        yield url


def fake_california_archive(path: Path, rows: int) -> str:
    """A cal_housing.tgz laid out as figshare's (`rows` rows of 9 columns); its sha256.

    Few rows, so a notebook that loads it shows it read this file and not the real one.
    """
    lines = "".join(
        ",".join(str(float(row * 10 + column)) for column in range(9)) + "\n" for row in range(rows)
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("CaliforniaHousing/cal_housing.data")
        info.size = len(lines)
        tar.addfile(info, io.BytesIO(lines))
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a real file system of `size` (a tmpfs) that fills up; skips without root."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def self_signed_cert(folder: Path, name: str = "hub") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its unencrypted key (openssl CLI: the
    dev requirements have no crypto library, and every Debian has openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    argv = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
    ]  # fmt: skip
    subprocess.run(argv, capture_output=True, check=True)
    return cert, key
