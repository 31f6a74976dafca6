"""The class stack's life: up, down, destroy, status, and the MLflow accounts tool."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any

from mlflow_lab import CLASSROOM_FILE
from mlflow_lab.classroom import images, node_files, roster, state, swarm
from mlflow_lab.classroom.hub import Hub
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker, ports
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import course

SERVICES = ("hub", "mlflow", "db")
# The global service whose task on a machine proves it can take students
# (docker/hub/placement.py); `up` waits for it here, or the first student finds no machine.
READY_SERVICE = "ready"
CLASS_LABEL = "org.mlflow-lab.class"  # on student services and volumes (jupyterhub_config.py)
STUDENT_LABEL = "org.mlflow-lab.student"
# On the one-off services that reach a volume on another machine (remote_volume.py); not
# the student labels, so no student server is counted for them.
ONEOFF_LABEL = "org.mlflow-lab.oneoff"
READY_TIMEOUT_S = 300
ACCOUNTS_SCRIPT = "/usr/local/lib/mlflow-lab/class_accounts.py"
HTTP_WARNING = (
    "warning: the hub serves plain HTTP: passwords cross the classroom network readable; "
    "set LAB_CLASS_TLS_CERT and LAB_CLASS_TLS_KEY for HTTPS"
)


def service_name(settings: ClassSettings, service: str) -> str:
    return f"{settings.stack}_{service}"


def hub(settings: ClassSettings) -> Hub:
    """The hub's API with the instructor's scripts token."""
    return Hub(settings.hub_url, state.secret(settings, "hub-api-token"), settings.tls_cert)


def deployed(settings: ClassSettings) -> bool:
    return bool(swarm.services(settings.stack))


def _port_check(settings: ClassSettings) -> None:
    if deployed(settings) or ports.is_free(settings.bind_address, settings.port):
        return
    holder = ports.process_on_port(settings.port) or "another program"
    container = ports.container_on_port(settings.port)
    if container:
        holder = f"container {container[0]}"
    raise LabError(
        f"port {settings.port} (LAB_CLASS_PORT) on {settings.bind_address} is in use by "
        f"{holder}: stop it, or set LAB_CLASS_PORT to a free port in .env"
    )


NO_COURSE = "/dev/null"


def _course_env(settings: ClassSettings) -> tuple[dict[str, str], str | None]:
    """Fetch the course repo into the class's cache; the stack's variables and a warning."""
    fetched = course.fetch_course_repo(settings.course_lab)
    # The readiness check mounts what a student server mounts: the course copy when the
    # class has one (the hub mounts it only then), else a file every Linux machine has, so
    # that a machine needs no course folder for a class without a course.
    env = {"CLASS_COURSE_CACHE": "", "CLASS_COURSE_NAME": "", "CLASS_READY_COURSE": NO_COURSE}
    if fetched.cache is not None:
        env = {
            "CLASS_COURSE_CACHE": fetched.cache.name,
            "CLASS_COURSE_NAME": course.repo_name(settings.lab.repo_url),
            "CLASS_READY_COURSE": str(settings.course_dir),
        }
    return env, fetched.warning


def tls_id(settings: ClassSettings) -> str:
    """A fingerprint of the hub's certificate and key, empty for plain HTTP."""
    if settings.tls_cert is None or settings.tls_key is None:
        return ""
    digest = hashlib.sha256(settings.tls_cert.read_bytes())
    digest.update(settings.tls_key.read_bytes())
    return digest.hexdigest()[:16]


def stack_env(settings: ClassSettings, course_env: dict[str, str]) -> dict[str, str]:
    # The student image's ID is what the hub spawns (classroom.yaml says why).
    ids = {
        f"CLASS_{name.upper()}_IMAGE_ID": docker.image_id(settings.image(name)) or ""
        for name in (*SERVICES, "notebook")
    }
    return {**settings.stack_env(), **course_env, **ids, "CLASS_TLS_ID": tls_id(settings)}


def up(
    settings: ClassSettings, *, init: bool = True, build: bool = True, verbose: bool = False
) -> None:
    """Swarm, state, images, deploy; return once the hub and MLflow answer."""
    if not CLASSROOM_FILE.is_file():
        raise LabError(f"{CLASSROOM_FILE.name} is missing: restore it from the repository")
    # The images and the port first: a class that cannot start or be reached must not
    # leave a swarm behind.
    todo = images.stale(settings)
    if todo and not build:
        raise LabError(_no_build_line(settings, todo))
    _port_check(settings)
    if swarm.ensure_manager(init=init, advertise=settings.advertise_address):
        where = (
            f"a swarm other machines join at {settings.advertise_address} (`invoke "
            "classroom.status` prints the command)"
            if settings.advertise_address
            else "a one-node swarm"
        )
        print(
            f"This engine was not in a swarm: initialised {where} "
            "(`docker swarm leave --force` undoes it once the class is destroyed)."
        )
    for name in state.ensure(settings):
        print(f"Generated the class's {name} (kept in {settings.secrets_dir}).")
    images.build(settings, todo, verbose=verbose)
    course_env, warning = _course_env(settings)
    if warning:
        print(f"warning: {warning}")
    print(f"Deploying stack {settings.stack}...", flush=True)
    swarm.deploy(settings.stack, CLASSROOM_FILE, stack_env(settings, course_env))
    wait_ready(settings)
    print_ready(settings)


def _no_build_line(settings: ClassSettings, stale: list[str]) -> str:
    """Why --no-build cannot go on: the first missing image (else the first out of date)."""
    missing = [name for name in stale if docker.image_id(settings.image(name)) is None]
    first, *rest = missing or stale
    what = "missing here" if missing else "out of date (built from other files)"
    also = f" (so are {', '.join(rest)})" if rest else ""
    return (
        f"the class image {settings.image(first)} is {what}{also}, and --no-build forbids "
        "building it: "
        "`invoke bundle --classroom` on a machine that has them makes a bundle with the "
        "class's images (then `invoke load FILE` here), or run without --no-build"
    )


def wait_ready(settings: ClassSettings, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    api = hub(settings)
    waiting: list[str] = []
    ready_here = True
    while time.monotonic() < deadline:
        waiting = [s for s in SERVICES if not _healthy(settings, s)]
        ready_here = _ready_here(settings)
        # Through the published port, as a student comes: the login page, not only the API.
        if not waiting and ready_here and api.answers() and api.login_page_answers():
            return
        time.sleep(1)
    if not waiting and not ready_here:
        name = service_name(settings, READY_SERVICE)
        raise LabError(
            f"this machine's readiness check for student servers ({name}) did not start "
            f"within {timeout:g} s: `docker service ps --no-trunc {name}` says why"
        )
    logs = swarm.logs(service_name(settings, waiting[0] if waiting else "hub"), tail=5)
    last = docker.last_line(logs) or "no log lines"
    raise LabError(
        f"the class's {', '.join(waiting) or 'hub'} did not become ready within "
        f"{timeout:g} s (last log line: {last}): see `invoke classroom.logs`"
    )


def _ready_here(settings: ClassSettings) -> bool:
    """The readiness check (global: a task per machine) runs on this machine."""
    name = service_name(settings, READY_SERVICE)
    return swarm.container_of(name) is not None


def _healthy(settings: ClassSettings, service: str) -> bool:
    # The newest task, alone and healthy: right after a deploy that updates a service the
    # old task may still answer, which is no sign the new one will.
    name = service_name(settings, service)
    newest = next(iter(swarm.tasks(name)), {})
    running = swarm.containers_of(name)
    return (
        str(newest.get("CurrentState", "")).startswith("Running")
        and len(running) == 1
        and swarm.health(running[0]) == "healthy"
        and swarm.runs_current_spec(name, running[0])
    )


def join_command(settings: ClassSettings, engine: swarm.SwarmState) -> dict[str, str]:
    """How another machine joins the class (with what it must have), or why none can."""
    return node_files.join_command(settings, engine, service_name(settings, "hub"))


def print_ready(settings: ClassSettings) -> None:
    print(f"The class is ready: {settings.hub_url}")
    print(f"MLflow UI (hub login; students see their own work): {settings.mlflow_ui_url}")
    print(
        f"Instructor: {settings.instructor}, password in "
        f"{state.instructor_password_file(settings)} (also MLflow's admin login)."
    )
    if settings.advertise_address:
        hint = node_files.join_hint(join_command(settings, swarm.swarm_state()))
        if hint:
            print(hint[0].upper() + hint[1:] + ".")
    if not settings.https:
        print(HTTP_WARNING)


def workspace_prefix(stack_name: str) -> str:
    """What each student's workspace volume is named from: this, then their escaped
    username (the hub's ClassSpawner.workspace_template, docker/hub/jupyterhub_config.py)."""
    return f"{stack_name}_workspace-"


def student_services(settings: ClassSettings) -> list[str]:
    return [s["Name"] for s in swarm.services(label=f"{CLASS_LABEL}={settings.stack}")]


def student_service(settings: ClassSettings, user: str) -> str | None:
    """The Swarm service of `user`'s server, found by its labels: its name is
    dockerspawner's escaped username (`probe-1a` becomes `probe-2d1a`)."""
    prefix = f"{settings.stack}-student-"
    for found in swarm.services(label=f"{STUDENT_LABEL}={user}"):
        if str(found.get("Name", "")).startswith(prefix):
            return str(found["Name"])
    return None


def down(settings: ClassSettings) -> None:
    """Remove the stack and the student servers; every volume stays."""
    # A one-off service is removed by the command that made it, unless that was killed.
    oneoffs = [s["Name"] for s in swarm.services(label=f"{ONEOFF_LABEL}={settings.stack}")]
    swarm.remove_services(student_services(settings) + oneoffs)
    swarm.remove_stack(settings.stack)
    print(f"The class stack {settings.stack} is down; every volume is kept (`classroom.up`).")


def class_volumes(settings: ClassSettings) -> list[str]:
    stack_volumes = swarm.volumes(f"{swarm.STACK_LABEL}={settings.stack}")
    return sorted({*stack_volumes, *swarm.volumes(f"{CLASS_LABEL}={settings.stack}")})


def destroy(settings: ClassSettings, *, yes: bool) -> None:
    if not yes:
        raise LabError(
            "destroy deletes every student's notebooks, runs and artifacts: run it again "
            "with --yes if that is what you want"
        )
    down(settings)
    volumes = class_volumes(settings)
    deadline = time.monotonic() + 60
    while volumes:
        result = docker.run("volume", "rm", *volumes, check=False)
        volumes = [v for v in volumes if v in class_volumes(settings)]
        if result.ok or time.monotonic() > deadline:
            break
        time.sleep(1)  # containers of a removed service linger for a moment
    if volumes:
        raise LabError(f"volumes {', '.join(volumes)} are still in use: retry in a minute")
    for path in (settings.roster_file, settings.passwords_file):
        path.unlink(missing_ok=True)
    print(f"Deleted the class {settings.stack}: its stack, student servers and volumes.")


def accounts(settings: ClassSettings, *args: str, password: str | None = None) -> dict[str, Any]:
    """Run the MLflow accounts tool in the MLflow container (its port is not published)."""
    container = swarm.container_of(service_name(settings, "mlflow"))
    if container is None:
        raise LabError("the class's MLflow is not running: start the class with `classroom.up`")
    result = docker.exec_in(container, "python3", ACCOUNTS_SCRIPT, *args, input=password or "")
    try:
        answer: dict[str, Any] = json.loads(docker.last_line(result.stdout) or "{}")
    except ValueError:
        answer = {"error": docker.last_line(result.stderr, result.stdout)}
    if not result.ok or "error" in answer:
        raise LabError(
            f"MLflow refused `{' '.join(args)}`: {answer.get('error', 'no answer')}: see "
            "`invoke classroom.logs mlflow`"
        )
    return answer


# -- status ------------------------------------------------------------------------------------


def _service_report(settings: ClassSettings, service: str) -> dict[str, Any]:
    name = service_name(settings, service)
    task = next(iter(swarm.tasks(name)), {})
    container = swarm.container_of(name)
    return {
        "service": name,
        "state": str(task.get("CurrentState", "absent")),
        "node": str(task.get("Node", "")),
        "health": swarm.health(container) if container else "",
    }


def status(settings: ClassSettings) -> dict[str, Any]:
    engine = swarm.refuse_on_worker("classroom.status")
    up_now = deployed(settings)
    report: dict[str, Any] = {
        "stack": settings.stack,
        "hub_url": settings.hub_url,
        "mlflow_ui_url": settings.mlflow_ui_url,
        "https": settings.https,
        "deployed": up_now,
        "services": {s: _service_report(settings, s) for s in SERVICES} if up_now else {},
        "nodes": [
            {
                "hostname": n.get("Hostname"),
                "status": n.get("Status"),
                "role": n.get("ManagerStatus"),
            }
            for n in swarm.nodes()
        ],
        "join": join_command(settings, engine) if engine.active else {},
        "instructor": settings.instructor,
        "instructor_password_file": str(state.instructor_password_file(settings)),
        "api_token": _token(settings),
        "students": students_report(settings, up_now),
    }
    return report


def _token(settings: ClassSettings) -> str:
    try:
        return state.secret(settings, "hub-api-token")
    except LabError:
        return ""


def students_report(settings: ClassSettings, up_now: bool) -> list[dict[str, Any]]:
    accounts_now = roster.read_accounts(settings)
    servers: dict[str, dict[str, Any]] = {}
    if up_now and (settings.secrets_dir / "hub-api-token").is_file():
        try:
            for user in hub(settings).users():
                servers[user["name"]] = (user.get("servers") or {}).get("", {})
        except LabError:
            pass
    found = []
    for name in sorted(accounts_now):
        if name == settings.instructor:
            continue
        server = servers.get(name, {})
        service = (student_service(settings, name) or "") if server else ""
        task = next(iter(swarm.tasks(service)), {}) if service else {}
        found.append(
            {
                "username": name,
                "display_name": accounts_now[name].get("name", ""),
                "server": "ready" if server.get("ready") else (server.get("pending") or "stopped"),
                "node": str(task.get("Node", "")),
                "swarm_service": service,
            }
        )
    return found


def format_status(report: dict[str, Any]) -> str:
    lines = [f"Class {report['stack']}: {report['hub_url']}"]
    lines.append(f"  MLflow UI: {report['mlflow_ui_url']} (hub login)")
    if not report["deployed"]:
        lines.append("  not deployed (start it with `invoke classroom.up`)")
    for name, svc in report["services"].items():
        lines.append(f"  {name:7} {svc['state']:24} {svc['health'] or '-':10} node {svc['node']}")
    for node in report["nodes"]:
        lines.append(f"  node {node['hostname']} {node['status']} {node['role'] or 'worker'}")
    hint = node_files.join_hint(report["join"])
    if hint:
        lines.append(f"  {hint}")
    lines.append(
        f"  instructor {report['instructor']}: password in {report['instructor_password_file']}"
    )
    lines.append(f"  API token for scripts: {report['api_token']}")
    students = report["students"]
    lines.append(f"  {len(students)} student(s)")
    for s in students:
        where = f"{s['swarm_service']} on {s['node']}" if s["swarm_service"] else ""
        lines.append(f"    {s['username']:20} {s['server']:8} {where}")
    return "\n".join(lines)


def logs(settings: ClassSettings, service: str, tail: int) -> None:
    names = [service] if service else list(SERVICES)
    for name in names:
        if name not in SERVICES:
            raise LabError(f"no class service named {name!r}: use hub, mlflow or db")
        sys.stdout.write(f"== {name} ==\n{swarm.logs(service_name(settings, name), tail)}\n")
