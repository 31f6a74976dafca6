"""`invoke doctor`: the machine's prerequisites, checked before anything is built.

Each check says pass or fail, and on failure what to do, in one line. `invoke up`
runs the same checks first (`require`), so a missing engine, a taken port or a full
disk is reported within seconds instead of after a long build. The result type and
its printing are shared with `invoke verify`.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow_lab.core import docker, ports
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import datasets, images
from mlflow_lab.lab.compose import SERVICES, LabCompose

# `invoke up` must report a failed check within 5 s, so no single call may take longer.
DOCKER_TIMEOUT_S = 4.0
GIB = 1024**3
# The two images and their build layers; once they exist, room for runs and notebooks.
BUILD_DISK_GIB = 4.0
RUN_DISK_GIB = 1.0
MIN_MEMORY_GIB = 2.0
# The architectures the images' packages (PyTorch CPU wheels above all) exist for,
# under the names `uname -m` and the Docker engine use.
SUPPORTED_ARCHITECTURES = frozenset({"x86_64", "amd64", "aarch64", "arm64"})
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str  # what was found; on failure, the problem and its fix


def format_results(results: Sequence[CheckResult]) -> str:
    width = max((len(r.name) for r in results), default=0)
    return "\n".join(f"{'pass' if r.ok else 'FAIL'}  {r.name:{width}}  {r.detail}" for r in results)


def results_json(results: Sequence[CheckResult], **extra: Any) -> str:
    document = {"ok": all(r.ok for r in results), "checks": [asdict(r) for r in results]}
    return json.dumps({**document, **extra}, indent=2)


def show(results: Sequence[CheckResult], *, as_json: bool, command: str) -> None:
    """Print the results; LabError (exit 1) when any check failed."""
    print(results_json(results) if as_json else format_results(results))
    failed = [r for r in results if not r.ok]
    if failed:
        raise LabError(
            f"{len(failed)} of {len(results)} checks failed (first: {failed[0].name}): fix "
            f"what the FAIL lines say, then run `{command}` again"
        )


def _docker_info() -> dict[str, Any] | None:
    return docker.info(timeout=DOCKER_TIMEOUT_S)


def _lab_running(settings: Settings) -> bool:
    """Whether a container of this lab's compose project is running."""
    return LabCompose(settings).running()


def _images_to_build(settings: Settings) -> list[str]:
    return images.stale_images(LabCompose(settings))


def _mem_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        text = meminfo.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def check_engine() -> CheckResult:
    try:
        version = docker.engine_version(timeout=DOCKER_TIMEOUT_S)
    except LabError as exc:
        return CheckResult("docker engine", False, str(exc))
    return CheckResult("docker engine", True, f"Docker Engine {version} answers")


def check_compose() -> CheckResult:
    try:
        command = " ".join(docker.compose_argv())
    except LabError as exc:
        return CheckResult("compose", False, str(exc))
    return CheckResult("compose", True, f"`{command}` is available")


def check_ports(settings: Settings) -> CheckResult:
    problems = ports.port_problems(settings)
    if problems:
        return CheckResult("ports", False, "; ".join(problems))
    return CheckResult(
        "ports",
        True,
        f"{settings.mlflow_port} (LAB_MLFLOW_PORT) and {settings.jupyter_port} "
        f"(LAB_JUPYTER_PORT) on {settings.bind_address} are free or this lab's own",
    )


def check_disk(info: dict[str, Any] | None, to_build: list[str]) -> CheckResult:
    where, free = docker.free_space(str(info.get("DockerRootDir") or "") if info else "")
    needed = BUILD_DISK_GIB if to_build else RUN_DISK_GIB
    purpose = f"to build the {' and '.join(to_build)} image" if to_build else "for the lab's data"
    found = f"{free / GIB:.1f} GiB free on {where}"
    if free < needed * GIB:
        return CheckResult(
            "disk",
            False,
            f"{found}, {needed:g} GiB needed {purpose}: free space there "
            "(e.g. `docker system prune`), then try again",
        )
    return CheckResult("disk", True, f"{found} ({needed:g} GiB needed {purpose})")


def check_memory(settings: Settings, info: dict[str, Any] | None) -> CheckResult:
    available = _mem_available_bytes()
    what = "available"
    if available is None and info and info.get("MemTotal"):
        # No /proc/meminfo (macOS, Windows): the engine's VM is what the lab runs in.
        available, what = int(info["MemTotal"]), "in the Docker VM"
    if available is None:
        return CheckResult("memory", True, "cannot tell the free memory here: not checked")
    found = f"{available / GIB:.1f} GiB {what}"
    if available >= MIN_MEMORY_GIB * GIB:
        return CheckResult("memory", True, f"{found} ({MIN_MEMORY_GIB:g} GiB needed)")
    if _lab_running(settings):
        # The running lab's own memory is not "available"; `up` again needs no more.
        return CheckResult("memory", True, f"{found}; the lab is already running")
    return CheckResult(
        "memory",
        False,
        f"{found}, {MIN_MEMORY_GIB:g} GiB needed: close programs or stop other containers "
        "(Docker Desktop: raise its memory limit), then try again",
    )


def check_architecture(info: dict[str, Any] | None) -> CheckResult:
    # The engine's architecture decides which images run (Docker Desktop on Apple
    # silicon reports aarch64); the host's is the fallback.
    arch = str(info.get("Architecture") or "") if info else ""
    source = "Docker engine" if arch else "this machine"
    arch = arch or platform.machine()
    if arch.lower() in SUPPORTED_ARCHITECTURES:
        return CheckResult("cpu architecture", True, f"{arch} ({source})")
    return CheckResult(
        "cpu architecture",
        False,
        f"{arch or 'unknown'} ({source}) is not supported: the lab's images exist for "
        "x86_64 and aarch64 only; use a machine with one of those",
    )


def _without_credentials(value: str) -> str:
    return re.sub(r"(?<=://)[^/@\s]*@", "***@", value)


def check_proxy(
    info: dict[str, Any] | None, environ: Mapping[str, str] | None = None
) -> CheckResult:
    """Informational: the proxy settings this command and the engine see."""
    env = os.environ if environ is None else environ
    seen = []
    for name in PROXY_VARIABLES:
        value = env.get(name) or env.get(name.lower())
        if value:
            seen.append(f"{name}={_without_credentials(value)}")
    host = ", ".join(seen) if seen else "none"
    engine_side = []
    for key in ("HTTPProxy", "HTTPSProxy", "NoProxy"):
        if info and info.get(key):
            engine_side.append(f"{key}={_without_credentials(str(info[key]))}")
    engine_text = ", ".join(engine_side) if engine_side else "none"
    return CheckResult("proxy", True, f"here: {host}; Docker engine: {engine_text}")


def check_ca(settings: Settings) -> CheckResult:
    """Informational: the CA bundle the image builds will trust besides the public CAs."""
    if settings.ca_bundle is None:
        return CheckResult(
            "ca bundle",
            True,
            "none besides the public CAs (behind a TLS-intercepting proxy, set LAB_CA_BUNDLE)",
        )
    return CheckResult("ca bundle", True, f"image builds also trust {settings.ca_bundle}")


def check_datasets(settings: Settings) -> CheckResult:
    """Informational (a lab without them still comes up), unless the list itself is bad."""
    try:
        return CheckResult("datasets", True, datasets.describe(settings))
    except LabError as exc:
        return CheckResult("datasets", False, str(exc))


def run(settings: Settings) -> list[CheckResult]:
    """Every check, in the order they are shown."""
    engine_check = check_engine()
    if not engine_check.ok:
        # Without an engine, the Docker questions would only wait for timeouts.
        info: dict[str, Any] | None = None
        to_build = list(SERVICES)
        compose_check, ports_check = check_compose(), check_ports(settings)
    else:
        # Each of these waits on its own docker command: `up` starts sooner asking at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            info_f = pool.submit(_docker_info)
            to_build_f = pool.submit(_images_to_build, settings)
            compose_f = pool.submit(check_compose)
            ports_f = pool.submit(check_ports, settings)
            info, to_build = info_f.result(), to_build_f.result()
            compose_check, ports_check = compose_f.result(), ports_f.result()
    return [
        engine_check,
        compose_check,
        ports_check,
        check_disk(info, to_build),
        check_memory(settings, info),
        check_architecture(info),
        check_proxy(info),
        check_ca(settings),
        check_datasets(settings),
    ]


def require(settings: Settings) -> None:
    """What `invoke up` runs first: LabError with the first failing check's line."""
    failed = next((r for r in run(settings) if not r.ok), None)
    if failed is not None:
        raise LabError(failed.detail)
