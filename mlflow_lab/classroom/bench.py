"""`invoke bench --classroom N`: a class's load on the classroom server, and the baseline.

The class: its own stack (BENCH_STACK, a free port, a temporary state dir; never the
user's class), N students enrolled as `classroom.students add` does, all logging in at
/hub/login and starting their servers at once, then all running the lab script at once
(class_bench.py `lab` in each server, every MLflow call timed). Then idle memory (PSS of
each container's processes) of the student servers and of hub, MLflow and database.

The baseline is what a course does without us: one all-in-one container per student from
the lab's jupyter image (the same packages), running `mlflow server` with its defaults
(only the port is the lab's 8080, which the lab script calls) and JupyterLab. As many as
fit the free memory with a margin, at most BASELINE_CAP; the same timed lab script in
all of them at once, each against its own server.

`--soak MINUTES`: N/2 students log in, run the lab, stop their server and log out, over
and over; hub, MLflow and database memory sampled each minute; at the end every run the
labs made must be in MLflow (counted with the instructor's login).

Everything is removed at the end, also on a failure or Ctrl-C; a swarm it had to create
is left again.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.classroom import bench_figures as fig
from mlflow_lab.classroom import stack, state, swarm
from mlflow_lab.classroom import students as students_module
from mlflow_lab.classroom.hub import Hub, wait_ready
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker, ports
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import bench as lab_bench
from mlflow_lab.lab import layout
from mlflow_lab.lab.screenshots import LAB_EXPERIMENT, LAB_SCRIPT

BENCH_STACK = "mlflow-class-bench"
BENCH_LABEL = "org.mlflow-lab.bench"
DEFAULT_STUDENTS = 20
SMOKE_STUDENTS = 3
TOOL = layout.tool("class_bench.py")
TOOL_SOURCE = PROJECT_ROOT / "docker" / "class-notebook" / "class_bench.py"
# The lab as the image ships it: a student's server places this very file in the
# workspace, and the all-in-one containers (no hub, no placement) have it too.
SCRIPT = f"{layout.BUNDLED_LAB_SOURCE}/{Path(LAB_SCRIPT).name}"
SPAWN_TIMEOUT_S = 300.0
LAB_TIMEOUT_S = 3600.0
IDLE_SETTLE_S = 30.0
SAMPLE_EVERY_S = 15.0
SOAK_SAMPLE_S = 60.0
JUPYTER_PORT = 8888
# The class's MLflow by its service name, as the student servers reach it (jupyterhub_config.py).
MLFLOW_ON_CLASS_NETWORK = "http://mlflow:8080"

T = TypeVar("T")


# -- the machine -------------------------------------------------------------------------


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def busy_core_s() -> float:
    """CPU time the whole machine has spent busy since boot, in core-seconds."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def container_mb(container: str) -> float:
    """PSS of every process in the container (shared pages counted fairly)."""
    try:
        return lab_bench.pss_mb(lab_bench.container_pids(container))
    except docker.DockerError:
        return 0.0  # it stopped meanwhile


def students_wanted(flag: str | bool) -> int:
    """--classroom's value: a number of students, the default when given alone (True)."""
    if flag is True:
        return DEFAULT_STUDENTS
    text = str(flag).strip()
    if not text.lstrip("-").isdigit():
        raise LabError(f"--classroom {text}: give a number of students, e.g. --classroom 20")
    return int(text)


def check_students(students: int) -> None:
    if students < 1:
        raise LabError(f"--classroom {students}: give a number of students of at least 1")
    available = mem_available_mb()
    if available < fig.memory_needed_mb(students):
        raise LabError(
            f"not enough free memory for {students} students: they need about "
            f"{fig.memory_needed_mb(students) / 1024:.1f} GiB, this machine has "
            f"{available / 1024:.1f} GiB available: use --classroom "
            f"{max(1, fig.most_students(available))} or free memory"
        )


# -- the class ---------------------------------------------------------------------------


def bench_settings(user: ClassSettings, folder: Path) -> ClassSettings:
    """The user's class settings (images, limits, workers) on a stack of its own."""
    lab = dataclasses.replace(
        user.lab,
        state_dir=folder / "lab",
        # An unreachable course repo only adds a fetch attempt; the lab script is bundled.
        repo_url="file:///nonexistent/course.git",
    )
    return dataclasses.replace(
        user,
        lab=lab,
        stack=BENCH_STACK,
        port=ports.free_port(),
        bind_address="0.0.0.0",
        state_dir=folder / "class",
        instructor="instructor",
        tls_cert=None,
        tls_key=None,
    )


@contextmanager
def engine_kept() -> Iterator[None]:
    """Leave again a swarm this run had to create, with the docker_gwbridge it brought."""
    was_active = swarm.swarm_state().active
    had_gwbridge = docker.answers("network", "inspect", "docker_gwbridge") is not None
    try:
        yield
    finally:
        if not was_active and swarm.swarm_state().active:
            docker.run("swarm", "leave", "--force", timeout=60, check=False)
            if not had_gwbridge:
                docker.run("network", "rm", "docker_gwbridge", check=False)


@contextmanager
def bench_class(
    user: ClassSettings, students: int
) -> Iterator[tuple[ClassSettings, dict[str, str]]]:
    """A deployed class with `students` enrolled; their passwords. Destroyed afterwards."""
    if swarm.swarm_state().active and stack.deployed(dataclasses.replace(user, stack=BENCH_STACK)):
        raise LabError(
            f"a stack {BENCH_STACK} is already deployed (an interrupted benchmark?): remove "
            f"it with `docker stack rm {BENCH_STACK}`, then run the benchmark again"
        )
    with tempfile.TemporaryDirectory(prefix="class-bench-") as tmp, engine_kept():
        settings = bench_settings(user, Path(tmp))
        try:
            stack.up(settings)
            roster = Path(tmp) / "roster.csv"
            names = [f"bench-{n:02d}" for n in range(1, students + 1)]
            roster.write_text("username,name\n" + "".join(f"{u},{u}\n" for u in names))
            print(f"Enrolling {students} students...", flush=True)
            made = students_module.add(settings, roster)
            yield settings, {name: password for name, _, password in made}
        finally:
            print(f"Removing the benchmark's class {BENCH_STACK}...", flush=True)
            stack.destroy(settings, yes=True)


def all_at_once(work: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run every callable in its own thread, all released together; their results."""
    gate = threading.Barrier(len(work))

    def released(body: Callable[[], T]) -> T:
        gate.wait()
        return body()

    pool = ThreadPoolExecutor(max_workers=len(work))
    try:
        futures = {who: pool.submit(released, body) for who, body in work.items()}
        return {who: future.result() for who, future in futures.items()}
    finally:
        # On Ctrl-C, no wait for labs still running: the teardown removes their containers,
        # which ends them; threads still at the gate are let go.
        gate.abort()
        pool.shutdown(wait=False, cancel_futures=True)


def log_in(settings: ClassSettings, user: str, password: str) -> Hub:
    session = Hub(settings.hub_url)
    if not session.login(user, password):
        raise LabError(f"{user} could not log in at {settings.hub_url}/hub/login")
    session.token = session.user_token(user, note="class-bench")
    return session


def spawn(settings: ClassSettings, user: str, password: str) -> tuple[Hub, float]:
    """Log in and start the server as the student does; the session and when it was ready."""
    session = log_in(settings, user, password)
    session.api("POST", f"/users/{user}/server", ok=(400,))
    wait_ready(session, user, timeout=SPAWN_TIMEOUT_S)
    return session, time.monotonic()


def server_container(settings: ClassSettings, user: str) -> str:
    service = stack.student_service(settings, user) or ""
    container = swarm.container_of(service) if service else None
    if container is None:
        raise LabError(f"{user}'s server is ready but has no container on this node")
    return container


def lab_in(container: str, who: str) -> fig.LabRun:
    try:
        result = docker.exec_in(container, "python3", TOOL, "lab", SCRIPT, timeout=LAB_TIMEOUT_S)
    except docker.DockerError as exc:
        return fig.LabRun(who=who, failed=str(exc)[:300])
    return fig.parse_lab_run(who, result.stdout, result.stderr, result.code)


@dataclasses.dataclass
class Sampled:
    peak_mb: float = 0.0
    busy_core_s: float = 0.0


def labs_everywhere(containers: dict[str, str]) -> tuple[list[fig.LabRun], Sampled]:
    """The lab in every container at once; the containers' memory peak while they ran."""
    sampled = Sampled()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_EVERY_S):
            total = sum(container_mb(c) for c in containers.values())
            sampled.peak_mb = max(sampled.peak_mb, total)

    sampler = threading.Thread(target=sample, daemon=True)
    began = busy_core_s()
    sampler.start()
    try:
        runs = all_at_once({who: partial(lab_in, c, who) for who, c in containers.items()})
    finally:
        done.set()
        sampler.join()
    sampled.busy_core_s = busy_core_s() - began
    return list(runs.values()), sampled


def shared_mb(settings: ClassSettings) -> dict[str, float]:
    found = {}
    for service in stack.SERVICES:
        container = swarm.container_of(stack.service_name(settings, service))
        found[service] = container_mb(container) if container else 0.0
    return found


def stored_runs(settings: ClassSettings, users: list[str]) -> dict[str, list[str]]:
    """Every user's lab runs as MLflow has them, read with the instructor's login from a
    one-off container on the class network (MLflow's port is not published)."""
    result = docker.run(
        "run",
        "--rm",
        "-i",
        "--network",
        settings.network,
        "--label",
        f"{BENCH_LABEL}={BENCH_STACK}",
        "--env",
        f"MLFLOW_TRACKING_URI={MLFLOW_ON_CLASS_NETWORK}",
        "--env",
        f"MLFLOW_TRACKING_USERNAME={settings.instructor}",
        settings.image("notebook"),
        "python3",
        TOOL,
        "runs",
        LAB_EXPERIMENT,
        *users,
        input=state.secret(settings, "instructor-password"),
        timeout=600,
        check=False,
    )
    answer = fig.parse_json_line(result.stdout)
    if not result.ok or not isinstance(answer.get("runs"), dict):
        raise LabError(f"could not count the runs in MLflow: {result.last_line()}")
    return {str(k): [str(r) for r in v] for k, v in answer["runs"].items()}


def lost_runs(settings: ClassSettings, runs: list[fig.LabRun]) -> int:
    made: dict[str, set[str]] = {}
    for run in runs:
        made.setdefault(run.who, set()).update(run.run_ids)
    stored = stored_runs(settings, sorted(made))
    return sum(len(ids - set(stored.get(who, []))) for who, ids in made.items())


def measure_class(user: ClassSettings, students: int) -> fig.ClassFigures:
    with bench_class(user, students) as (settings, passwords):
        print(f"{students} students log in and start their servers at once...", flush=True)
        began = time.monotonic()
        spawned: dict[str, tuple[Hub, float] | str] = all_at_once(
            {u: partial(_spawn_or_reason, settings, u, p) for u, p in passwords.items()}
        )
        ready = {u: s[1] - began for u, s in spawned.items() if not isinstance(s, str)}
        not_ready = [f"{u}: {s}" for u, s in spawned.items() if isinstance(s, str)]
        containers = {u: server_container(settings, u) for u in ready}
        print(f"All {students} run the lab script at once...", flush=True)
        runs, sampled = labs_everywhere(containers)
        print(f"Letting the servers settle for {IDLE_SETTLE_S:g} s...", flush=True)
        time.sleep(IDLE_SETTLE_S)
        idle = [container_mb(c) for c in containers.values()]
        return fig.ClassFigures(
            students=students,
            all_ready_s=max(ready.values(), default=0.0),
            median_ready_s=statistics.median(ready.values()) if ready else 0.0,
            not_ready=not_ready,
            load=fig.LoadFigures(runs),
            idle_mb_per_student=statistics.mean(idle) if idle else 0.0,
            shared_mb=shared_mb(settings),
            peak_mb_per_student=sampled.peak_mb / max(1, len(containers)),
            busy_core_s=sampled.busy_core_s,
            lost_runs=lost_runs(settings, runs),
        )


def _spawn_or_reason(settings: ClassSettings, user: str, password: str) -> tuple[Hub, float] | str:
    try:
        return spawn(settings, user, password)
    except LabError as exc:
        return str(exc)


# -- the baseline: one all-in-one container per student --------------------------------


def _jupyter_image(settings: ClassSettings) -> str:
    return f"mlflow-lab/jupyter:{settings.lab.image_tag}"


def start_all_in_one(image: str, name: str) -> float:
    """The container, its `mlflow server` (defaults, port 8080) and JupyterLab; when ready."""
    docker.run(
        "run",
        "--detach",
        "--name",
        name,
        "--label",
        f"{BENCH_LABEL}={BENCH_STACK}",
        "--memory",
        f"{fig.BASELINE_MEM_MB}m",
        "--volume",
        f"{TOOL_SOURCE}:{TOOL}:ro",
        image,
        "jupyter",
        "lab",
        f"--port={JUPYTER_PORT}",
        f"--IdentityProvider.token={secrets.token_hex(16)}",
        timeout=120,
    )
    # Started beside JupyterLab in its workspace, as a student would in a terminal there.
    docker.run(
        "exec",
        "--detach",
        "--workdir",
        layout.WORKSPACE,
        name,
        "mlflow",
        "server",
        "--port",
        "8080",
    )
    urls = ["http://127.0.0.1:8080/health", f"http://127.0.0.1:{JUPYTER_PORT}/api"]
    result = docker.exec_in(name, "python3", TOOL, "ready", *urls, timeout=SPAWN_TIMEOUT_S + 30)
    answer = fig.parse_json_line(result.stdout)
    if not answer.get("ready"):
        raise LabError(
            f"the all-in-one container {name} did not answer {answer.get('waiting', urls)}: "
            f"{result.last_line() or 'see `docker logs ' + name + '`'}"
        )
    return time.monotonic()


def measure_baseline(settings: ClassSettings, students: int) -> fig.BaselineFigures | None:
    count = fig.baseline_count(students, mem_available_mb())
    if count == 0:
        print("warning: not enough free memory for even one all-in-one container: no baseline")
        return None
    image = _jupyter_image(settings)
    names = [f"{BENCH_STACK}-aio-{n}" for n in range(1, count + 1)]
    print(f"Baseline: {count} all-in-one containers ({image}) start at once...", flush=True)
    try:
        began = time.monotonic()
        ready = all_at_once({n: partial(start_all_in_one, image, n) for n in names})
        print(f"All {count} run the lab script at once...", flush=True)
        runs, _ = labs_everywhere({n: n for n in names})
        time.sleep(IDLE_SETTLE_S)
        idle = [container_mb(n) for n in names]
        return fig.BaselineFigures(
            containers=count,
            all_ready_s=max(ready.values()) - began,
            load=fig.LoadFigures(runs),
            idle_mb_per_container=statistics.mean(idle),
        )
    finally:
        docker.run("rm", "--force", "--volumes", *names, check=False)


# -- the soak ------------------------------------------------------------------------------


def _stopped(session: Hub, user: str) -> bool:
    model = session.api("GET", f"/users/{user}") or {}
    return not (model.get("servers") or {})


def soak_student(
    settings: ClassSettings,
    user: str,
    password: str,
    deadline: float,
    stop: threading.Event,
    runs: list[fig.LabRun],
) -> int:
    """Log in, run the lab, stop the server, log out, until the deadline; how many logins."""
    logins = 0
    while time.monotonic() < deadline and not stop.is_set():
        try:
            session, _ = spawn(settings, user, password)
            logins += 1
            runs.append(lab_in(server_container(settings, user), user))
            session.api("DELETE", f"/users/{user}/server", ok=(400, 404))
            stop_by = time.monotonic() + SPAWN_TIMEOUT_S
            while not _stopped(session, user) and time.monotonic() < stop_by:
                time.sleep(1)
            session.request("GET", "/hub/logout")
        except LabError as exc:
            runs.append(fig.LabRun(who=user, failed=str(exc)[:300]))
            time.sleep(5)
    return logins


def soak(user: ClassSettings, students: int, minutes: float) -> fig.SoakFigures:
    count = max(1, students // 2)
    with bench_class(user, count) as (settings, passwords):
        print(f"Soak: {count} students log in and out for {minutes:g} min...", flush=True)
        runs: list[fig.LabRun] = []
        samples: dict[str, list[float]] = {s: [] for s in stack.SERVICES}
        began = time.monotonic()
        deadline = began + minutes * 60
        stop = threading.Event()  # set on Ctrl-C: no student starts another round
        with ThreadPoolExecutor(max_workers=count) as pool:
            logins = [
                pool.submit(soak_student, settings, u, p, deadline, stop, runs)
                for u, p in passwords.items()
            ]
            try:
                while not all(f.done() for f in logins):
                    time.sleep(1)
                    if time.monotonic() - began >= SOAK_SAMPLE_S * (len(samples["hub"]) + 1):
                        for service, mb in shared_mb(settings).items():
                            samples[service].append(mb)
            finally:
                stop.set()
            total_logins = sum(f.result() for f in logins)
        for service, mb in shared_mb(settings).items():
            samples[service].append(mb)
        return fig.SoakFigures(
            minutes=minutes,
            students=count,
            labs=sum(1 for r in runs if r.latencies_s),
            logins=total_logins,
            samples=samples,
            load=fig.LoadFigures(runs),
            lost_runs=lost_runs(settings, runs),
        )


# -- the task ------------------------------------------------------------------------------


def run(user: ClassSettings, *, students: int, smoke: bool, soak_minutes: float) -> str:
    """Measure; the printed figures (a table, the capacity, or the soak's report)."""
    students = SMOKE_STUDENTS if smoke else students
    if soak_minutes < 0:
        raise LabError(f"--soak {soak_minutes:g}: give the soak's length in minutes (10 or more)")
    check_students(students)  # the soak's half of them needs less
    lab_bench.check_prerequisites()
    cores = os.cpu_count() or 1
    machine = f"{cores} cores, {lab_bench._mem_gib():.0f} GiB, {os.uname().machine}"
    if soak_minutes:
        report = fig.soak_report(soak(user, students, soak_minutes))
        short = " (shorter than the 10 min of a real figure)" if soak_minutes < 10 else ""
        return f"{report}\n\nMachine: {machine}{short}."
    ours = measure_class(user, students)
    base = measure_baseline(user, students)
    cap = fig.capacity(
        students=students,
        cores=cores,
        peak_mb_per_student=ours.peak_mb_per_student,
        idle_mb_per_student=ours.idle_mb_per_student,
        shared_mb=ours.shared_total_mb,
        busy_core_s=ours.busy_core_s,
        load_ok=ours.load.errors == 0 and ours.load.p99_s <= fig.P99_TARGET_S,
    )
    notes = [f"Slowest calls: {', '.join(f'{w} {s:.1f} s' for w, s in ours.load.slowest)}"]
    notes += [f"First errors: {e}" for e in ours.load.first_errors]
    notes += [f"Not ready: {r}" for r in ours.not_ready[:3]]
    limits = f"student servers limited to {user.cpu_limit:g} CPU / {user.mem_limit}"
    return "\n".join(
        [
            fig.table(ours, base),
            "",
            fig.format_capacity(cap, students, cores),
            f"Peak memory per student while the lab ran: {ours.peak_mb_per_student:.0f} MB (PSS).",
            *notes,
            "",
            f"Machine: {machine}; {limits}; MLflow workers {user.mlflow_workers}.",
        ]
    )
