"""Benchmark: the lab stack against a bare `mlflow server`, measured side by side.

The baseline is what a user would otherwise do: `pip install mlflow==<ours>` and
`mlflow server` with its defaults, on the same kind of SQLite store and artifact
directory, its database already migrated. Every figure is a median of the rounds.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import docker, ports, versions
from mlflow_lab.core import http as local_http
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import class_load, images
from mlflow_lab.lab.class_load import Api
from mlflow_lab.lab.compose import SERVICES, LabCompose

NATIVE_VENV = images.BUILD_DIR / "bench-native-venv"
NATIVE_PORT = 15999
IDLE_SETTLE_S = 10


@dataclass
class Figures:
    up_s: list[float] = field(default_factory=list)
    memory_mb: float = 0.0
    sequential_per_s: float = 0.0
    concurrent_points_per_s: float = 0.0
    concurrent_p99_s: float = 0.0
    concurrent_errors: int = 0


# --- load on a tracking server (same client code for both sides) ---


def sequential_throughput(port: int, calls: int) -> float:
    """log-metric calls per second from one client."""
    api = Api(f"http://127.0.0.1:{port}")
    try:
        experiment_id = api.create_experiment()
        run = api.call("POST", "runs/create", {"experiment_id": experiment_id})
        run_id = str(run["run"]["info"]["run_id"])  # type: ignore[index]
        started = time.perf_counter()
        for step in range(calls):
            api.call(
                "POST",
                "runs/log-metric",
                {
                    "run_id": run_id,
                    "key": "loss",
                    "value": 1.0 / (step + 1),
                    "timestamp": 0,
                    "step": step,
                },
            )
        return calls / (time.perf_counter() - started)
    finally:
        api.close()


def concurrent_load(port: int, clients: int, batches: int) -> tuple[float, float, int]:
    """(points per second, p99 request latency in s, errors) for `clients` parallel clients."""
    result = class_load.run_load(f"http://127.0.0.1:{port}", clients, batches)
    return result.points_per_s, result.p99_s, len(result.errors)


# --- memory ---


def pss_mb(pids: list[int]) -> float:
    """Proportional set size of these processes, in MB (shared pages counted fairly)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def container_pids(container: str) -> list[int]:
    out = docker.run("top", container, "-eo", "pid").stdout.split()[1:]
    return [int(p) for p in out]


# --- the native baseline ---


def ensure_native_mlflow() -> Path:
    mlflow_bin = NATIVE_VENV / "bin" / "mlflow"
    wanted = versions.mlflow_version()
    if mlflow_bin.exists():
        probe = subprocess.run(
            [str(NATIVE_VENV / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == wanted:
            return mlflow_bin
    print(f"Installing mlflow=={wanted} in {NATIVE_VENV} for the baseline...")
    subprocess.run([sys.executable, "-m", "venv", str(NATIVE_VENV)], check=True)
    subprocess.run(
        [str(NATIVE_VENV / "bin" / "pip"), "install", "-q", f"mlflow=={wanted}"], check=True
    )
    return mlflow_bin


def _wait_health(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if local_http.answers(f"{url}/health"):
            return True
        time.sleep(0.05)
    return False


@contextmanager
def native_server(mlflow_bin: Path, data: Path) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """A native `mlflow server` with its defaults; yields it and its start time to /health."""
    args = [
        str(mlflow_bin),
        "server",
        "--port",
        str(NATIVE_PORT),
        "--backend-store-uri",
        f"sqlite:///{data}/mlflow.db",
        "--artifacts-destination",
        str(data / "mlartifacts"),
    ]
    began = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        if not _wait_health(f"http://127.0.0.1:{NATIVE_PORT}", 120):
            raise LabError("the native mlflow server did not answer /health within 120 s")
        yield proc, time.perf_counter() - began
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure_native(rounds: int, calls: int, clients: int, batches: int) -> Figures:
    mlflow_bin = ensure_native_mlflow()
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        data = Path(tmp)
        with native_server(mlflow_bin, data):
            pass  # migrate the database once, as the baseline's "already migrated" store
        for round_no in range(rounds):
            with native_server(mlflow_bin, data) as (proc, started_s):
                figures.up_s.append(started_s)
                if round_no == 0:
                    time.sleep(IDLE_SETTLE_S)
                    figures.memory_mb = pss_mb(process_tree(proc.pid))
                    figures.sequential_per_s = sequential_throughput(NATIVE_PORT, calls)
                    (
                        figures.concurrent_points_per_s,
                        figures.concurrent_p99_s,
                        figures.concurrent_errors,
                    ) = concurrent_load(NATIVE_PORT, clients, batches)
    return figures


# --- the stack ---


def _invoke(*args: str, env: dict[str, str]) -> float:
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(
            f"`invoke {' '.join(args)}` failed during the benchmark: "
            f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    return time.perf_counter() - began


def measure_stack(
    settings: Settings, rounds: int, calls: int, clients: int, batches: int
) -> tuple[Figures, float]:
    env = {
        **os.environ,
        **settings.compose_env(),
        "LAB_REPO_URL": settings.repo_url,
        "LAB_REPO_BRANCH": settings.repo_branch,
    }
    figures = Figures()
    _invoke("up", env=env)  # builds if needed; not part of the timing
    running_up = statistics.median(_invoke("up", env=env) for _ in range(rounds))
    for _ in range(rounds):
        _invoke("down", env=env)
        figures.up_s.append(_invoke("up", env=env))
    time.sleep(IDLE_SETTLE_S)
    containers = list(LabCompose(settings).container_ids().values())
    figures.memory_mb = sum(pss_mb(container_pids(c)) for c in containers)
    figures.sequential_per_s = sequential_throughput(settings.mlflow_port, calls)
    (figures.concurrent_points_per_s, figures.concurrent_p99_s, figures.concurrent_errors) = (
        concurrent_load(settings.mlflow_port, clients, batches)
    )
    return figures, running_up


def image_sizes_mb(settings: Settings) -> dict[str, float]:
    sizes = {}
    compose = LabCompose(settings)
    for service in SERVICES:
        out = docker.run("image", "inspect", "--format", "{{.Size}}", compose.image(service))
        sizes[service] = int(out.stdout.strip()) / 1e6
    return sizes


def cold_build_s(settings: Settings) -> float:
    """Base image, MLflow and Jupyter images from nothing: new tags, no build cache."""
    tag = "bench-cold"
    base = f"{images.LOCAL_BASE_REPO}:{tag}"
    # No dataset fetch after the build: a download's time is the network's, not the build's.
    cold = Settings(
        **{**settings.__dict__, "image_tag": tag, "base_image": base, "datasets_file": None}
    )
    began = time.perf_counter()
    images.build_local_base(cold, base)
    images.build(cold, no_cache=True)
    elapsed = time.perf_counter() - began
    compose = LabCompose(cold)
    docker.run("rmi", *(compose.image(s) for s in reversed(SERVICES)), base, check=False)
    return elapsed


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def run(user: Settings, *, rounds: int, smoke: bool, cold: bool) -> str:
    """Measure both sides; the stack runs as its own project, the user's lab is not touched."""
    check_prerequisites()
    calls, clients, batches = (50, 5, 5) if smoke else (300, class_load.CLIENTS, class_load.BATCHES)
    print(f"Native baseline: mlflow server {versions.mlflow_version()} ({rounds} rounds)...")
    native = measure_native(rounds, calls, clients, batches)
    with tempfile.TemporaryDirectory(prefix="bench-state-") as state:
        settings = Settings(
            **{
                **user.__dict__,
                "project": f"{user.project}-bench",
                "mlflow_port": ports.free_port(),
                "jupyter_port": ports.free_port(),
                "bind_address": "127.0.0.1",
                "state_dir": Path(state),
                # An unreachable course repo would only add a fetch attempt to every `up`.
                "repo_url": "file:///nonexistent/course.git",
            }
        )
        print(f"Lab stack '{settings.project}' ({rounds} rounds)...")
        try:
            stack, running_up = measure_stack(settings, rounds, calls, clients, batches)
        finally:
            LabCompose(settings).run("down", "--volumes", "--remove-orphans", check=False)
    sizes = image_sizes_mb(user)
    cold_s = cold_build_s(settings) if cold else None
    up_ours, up_native = statistics.median(stack.up_s), statistics.median(native.up_s)
    rows = [
        (
            "(a) warm `invoke up` until both ready (stack stopped)",
            f"{up_ours:.1f} s",
            f"{up_native:.1f} s",
            _ratio(up_ours, up_native),
            "<= 0.35x",
        ),
        (
            "(a') `invoke up` on a running stack",
            f"{running_up:.1f} s",
            f"{up_native:.1f} s",
            _ratio(running_up, up_native),
            "",
        ),
        (
            "(b) idle memory (PSS, whole stack vs server tree)",
            f"{stack.memory_mb:.0f} MB",
            f"{native.memory_mb:.0f} MB",
            _ratio(stack.memory_mb, native.memory_mb),
            "<= 0.25x",
        ),
        (
            "(c) sequential log_metric throughput",
            f"{stack.sequential_per_s:.0f}/s",
            f"{native.sequential_per_s:.0f}/s",
            _ratio(stack.sequential_per_s, native.sequential_per_s),
            ">= 1.0x",
        ),
        (
            f"(d) {clients} clients: points/s",
            f"{stack.concurrent_points_per_s:.0f}",
            f"{native.concurrent_points_per_s:.0f}",
            _ratio(stack.concurrent_points_per_s, native.concurrent_points_per_s),
            "",
        ),
        (
            f"(d) {clients} clients: p99 latency (errors)",
            f"{stack.concurrent_p99_s:.2f} s ({stack.concurrent_errors})",
            f"{native.concurrent_p99_s:.2f} s ({native.concurrent_errors})",
            "",
            "p99 <= 2 s",
        ),
        (
            "(e) cold build from nothing",
            f"{cold_s / 60:.1f} min" if cold_s is not None else "not run (--cold)",
            "",
            "",
            "<= 5 min",
        ),
        ("(f) image size: mlflow", f"{sizes['mlflow']:.0f} MB", "", "", "<= 600 MB"),
        ("(f) image size: jupyter", f"{sizes['jupyter']:.0f} MB", "", "", "<= 2200 MB"),
    ]
    header = ("Measure", "Lab stack", "Native", "Ratio", "Target")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    machine = f"{os.cpu_count()} cores, {_mem_gib():.0f} GiB, {os.uname().machine}"
    mode = "smoke" if smoke else "full"
    return "\n".join(lines) + f"\n\nMachine: {machine}; {rounds} rounds, {mode} load; medians."


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def check_prerequisites() -> None:
    if not Path("/proc/self/smaps_rollup").exists():
        raise LabError("the benchmark reads /proc: run it on Linux, on the Docker host")
    if shutil.which("docker") is None:
        raise LabError("the benchmark needs the docker command")
