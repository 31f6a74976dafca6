"""`invoke classroom.verify`: the running class checked the way a student uses it.

Two throwaway students (`probe-<hex>`) are enrolled as `classroom.students add` does
(MLflow user, workspace and role; a roster entry the hub reads). The first logs in
through the hub's real /hub/login, starts their server through the hub's API (a Swarm
service, as any student's), and runs the tracking round trip in their server's `mlops`
kernel: the kernel is started through the student's own Jupyter server inside their
container (`docker exec` of the lab's lab_probe.py with the student's hub token), so the
code runs with exactly the MLflow login and workspace the hub handed that server. The
second logs in too, and its MLflow login (run from the first one's server, where the
client is) must not read, tag or delete the first one's run, nor list their workspace.

Both probes are removed at the end whatever happened (hub user, roster entry, MLflow user
and workspace, their server's service and volume), and a last check says nothing is left.
Probes an interrupted run left behind are marked in the roster and removed first.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow_lab.classroom import roster, stack, swarm
from mlflow_lab.classroom.hub import Hub, HubError, wait_ready
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import layout
from mlflow_lab.lab.doctor import CheckResult

PROBE_PREFIX = "probe-"
PROBE_MARK = "probe"  # in the probe's roster entry: what a later run may remove
SPAWN_TIMEOUT_S = 240.0
KERNEL_TIMEOUT_S = 120.0
EXPERIMENT = "mlflow-lab-verify"
KERNEL = "mlops"
LOGS_FIX = "see `invoke classroom.logs`"

# In the probe student's server (docker/class-notebook/class_probe.py).
PROBE = layout.tool("class_probe.py")


REFUSALS = {"PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST", "sees nothing"}


class CheckFailed(Exception):
    """A check's failure: the message is its one line, with the fix."""


@dataclass
class Probe:
    name: str
    password: str
    session: Hub | None = None
    container: str = ""


@dataclass
class Run:
    settings: ClassSettings
    probes: list[Probe] = field(default_factory=list)
    run_id: str = ""
    results: list[CheckResult] = field(default_factory=list)

    def check(self, name: str, body: Callable[[], str]) -> bool:
        try:
            detail = body()
        except (CheckFailed, LabError) as exc:
            self.results.append(CheckResult(name, False, str(exc)))
            return False
        self.results.append(CheckResult(name, True, detail))
        return True


def _new_probe(settings: ClassSettings) -> Probe:
    taken = roster.read_accounts(settings)
    while True:
        name = f"{PROBE_PREFIX}{secrets.token_hex(4)}"
        if name not in taken:
            return Probe(name, roster.new_password())


def enroll(settings: ClassSettings, probe: Probe) -> None:
    """As `students add` does (MLflow first, roster last), marked as a probe."""
    stack.accounts(settings, "add", probe.name, password=probe.password)
    accounts = roster.read_accounts(settings)
    accounts[probe.name] = {
        "password": roster.hash_password(probe.password),
        "name": "classroom.verify probe",
        "admin": False,
        PROBE_MARK: True,
    }
    roster.write_accounts(settings, accounts)


def _volumes_of(settings: ClassSettings, name: str) -> list[str]:
    volumes = swarm.volumes(f"{stack.STUDENT_LABEL}={name}")
    return [v for v in volumes if v.startswith(f"{settings.stack}_")]


def remove(settings: ClassSettings, name: str) -> None:
    """Everything of the probe `name`: roster, hub user and server, MLflow, volume."""
    accounts = roster.read_accounts(settings)
    if accounts.pop(name, None) is not None:
        roster.write_accounts(settings, accounts)
    api = stack.hub(settings)
    api.api("DELETE", f"/users/{name}/server", ok=(400, 404))
    api.api("DELETE", f"/users/{name}", ok=(404,))
    service = stack.student_service(settings, name)
    if service:
        swarm.remove_services([service])
    stack.accounts(settings, "remove", name, "--delete-data")
    # The service's container lingers for a moment after `service rm`.
    deadline = time.monotonic() + 60
    volumes = _volumes_of(settings, name)
    while volumes and time.monotonic() < deadline:
        if docker.run("volume", "rm", *volumes, check=False).ok:
            break
        time.sleep(1)
        volumes = _volumes_of(settings, name)


def leftovers(settings: ClassSettings, names: list[str]) -> list[str]:
    """What of these probes is still there, one phrase each."""
    found: list[str] = []
    accounts = roster.read_accounts(settings)
    hub_users = {u["name"] for u in stack.hub(settings).users()}
    mlflow = stack.accounts(settings, "list")
    for name in names:
        if name in accounts:
            found.append(f"roster entry {name}")
        if name in hub_users:
            found.append(f"hub user {name}")
        if name in mlflow.get("users", []):
            found.append(f"MLflow user {name}")
        if name in mlflow.get("workspaces", []):
            found.append(f"MLflow workspace {name}")
        service = stack.student_service(settings, name)
        if service:
            found.append(f"service {service}")
        found.extend(f"volume {v}" for v in _volumes_of(settings, name))
    return found


def stale_probes(settings: ClassSettings) -> list[str]:
    return sorted(
        name
        for name, entry in roster.read_accounts(settings).items()
        if entry.get(PROBE_MARK) and name.startswith(PROBE_PREFIX)
    )


# -- the checks ----------------------------------------------------------------------------


def _json_line(text: str, what: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise CheckFailed(f"{what} printed no result ({docker.last_line(text) or 'nothing'})")


def _probe(container: str, args: list[str], env: dict[str, str], what: str) -> Any:
    result = docker.exec_in(container, "python3", PROBE, *args, env=env, timeout=120)
    if not result.ok:
        raise CheckFailed(f"{what} failed: {result.last_line()}: {LOGS_FIX}")
    return _json_line(result.stdout, what)


def _login(run: Run) -> str:
    first, second = run.probes
    if Hub(run.settings.hub_url, cafile=run.settings.tls_cert).login(
        first.name, first.password + "x"
    ):
        raise CheckFailed(
            f"the hub let {first.name} in with a wrong password: check "
            "docker/hub/roster_auth.py and the hub's image (`invoke classroom.up`)"
        )
    for probe in run.probes:
        session = Hub(run.settings.hub_url, cafile=run.settings.tls_cert)
        if not session.login(probe.name, probe.password):
            raise CheckFailed(
                f"{probe.name} could not log in at {run.settings.hub_url}/hub/login: {LOGS_FIX} hub"
            )
        session.token = session.user_token(probe.name, note="classroom.verify")
        probe.session = session
    return f"{first.name} and {second.name} logged in at /hub/login; a wrong password was refused"


def _server(run: Run) -> str:
    probe = run.probes[0]
    assert probe.session is not None
    started = time.monotonic()
    probe.session.api("POST", f"/users/{probe.name}/server", ok=(400,))
    try:
        wait_ready(probe.session, probe.name, timeout=SPAWN_TIMEOUT_S)
    except HubError as exc:
        raise CheckFailed(f"{exc}: `invoke classroom.logs hub`") from None
    service = stack.student_service(run.settings, probe.name) or "(none)"
    container = swarm.container_of(service)
    if container is None:
        raise CheckFailed(f"{probe.name}'s server is ready but service {service} has no container")
    probe.container = container
    status, _, text = probe.session.request("GET", f"/user/{probe.name}/api/status")
    if status != 200:
        raise CheckFailed(
            f"the hub's proxy answered /user/{probe.name}/api/status with {status} "
            f"({text[:120]}): {LOGS_FIX} hub"
        )
    return (
        f"{probe.name}'s server (Swarm service {service}) ready in "
        f"{time.monotonic() - started:.0f} s, reached through the hub's proxy"
    )


def _tracking(run: Run) -> str:
    probe = run.probes[0]
    assert probe.session is not None
    payload = secrets.token_hex(8)
    # What a student's notebook cell would run: the lab guide's calls, from the probe file.
    code = (
        f"import json, sys; sys.path.insert(0, {str(layout.TOOLS)!r}); import class_probe; "
        f"print(json.dumps(class_probe.track({EXPERIMENT!r}, {payload!r})))"
    )
    driver = docker.exec_in(
        probe.container,
        "python3",
        PROBE,
        "kernel-run",
        KERNEL,
        str(KERNEL_TIMEOUT_S),
        input=code,
        env={"JUPYTER_TOKEN": probe.session.token},
        timeout=KERNEL_TIMEOUT_S + 30,
    )
    if not driver.ok:
        raise CheckFailed(f"the {KERNEL} kernel could not run: {driver.last_line()}: {LOGS_FIX}")
    kernel = _json_line(driver.stdout, "the kernel probe")
    if kernel.get("status") != "ok":
        raise CheckFailed(
            f"the tracking code in {probe.name}'s {KERNEL} kernel ended {kernel.get('status')}: "
            f"{docker.last_line(str(kernel.get('output', '')))}: {LOGS_FIX} mlflow"
        )
    found = _json_line(str(kernel.get("output", "")), "the tracking code")
    wanted = {
        "user": probe.name,
        "workspace": probe.name,
        "param": payload,
        "metric": 1.5,
        "artifact": payload,
    }
    wrong = {k: found.get(k) for k, v in wanted.items() if found.get(k) != v}
    if wrong:
        raise CheckFailed(f"the round trip read back {wrong}, not {wanted}: {LOGS_FIX} mlflow")
    run.run_id = str(found["run"])
    return (
        f"{probe.name}'s {KERNEL} kernel logged run {run.run_id} in workspace {probe.name} "
        "(param, metric, artifact read back)"
    )


def _isolation(run: Run) -> str:
    first, second = run.probes
    env = {
        "MLFLOW_TRACKING_USERNAME": second.name,
        "MLFLOW_TRACKING_PASSWORD": second.password,
        "MLFLOW_WORKSPACE": second.name,
    }
    outcome = _probe(first.container, ["attack", run.run_id], env, f"{second.name}'s client")
    browse_env = {**env, "MLFLOW_WORKSPACE": first.name}
    outcome.update(_probe(first.container, ["browse"], browse_env, f"{second.name}'s client"))
    let_in = sorted(k for k, v in outcome.items() if v not in REFUSALS)
    if let_in:
        raise CheckFailed(
            f"{second.name}'s MLflow login could {', '.join(let_in)} {first.name}'s run "
            f"({outcome}): check the student role's grants in class_accounts.py"
        )
    intact = _probe(first.container, ["intact", run.run_id], {}, "the run's owner")
    if intact != {"stage": "active", "tag": None}:
        raise CheckFailed(f"{first.name}'s run was changed by {second.name}: {intact}")
    codes = ", ".join(f"{k} {v}" for k, v in outcome.items())
    return f"{second.name} was refused {first.name}'s run ({codes}); the run is unchanged"


def _cleanup(run: Run) -> str:
    names = [p.name for p in run.probes]
    errors: list[str] = []
    for name in names:
        try:
            remove(run.settings, name)
        except LabError as exc:
            errors.append(str(exc))
    left = leftovers(run.settings, names)
    if left:
        first = f" (first error: {errors[0]})" if errors else ""
        raise CheckFailed(
            f"left behind: {', '.join(left)}{first}: run `invoke classroom.verify` again "
            "(it removes earlier probes first)"
        )
    return f"removed {' and '.join(names)}: hub users, MLflow users and workspaces, server, volume"


def run_checks(settings: ClassSettings) -> list[CheckResult]:
    if not stack.deployed(settings):
        raise LabError(
            f"the class {settings.stack} is not running: start it with `invoke classroom.up`"
        )
    run = Run(settings)
    stale = stale_probes(settings)
    for name in stale:
        remove(settings, name)
    run.check("hub", lambda: _hub_answers(settings, stale))
    run.probes = [_new_probe(settings), _new_probe(settings)]
    if run.probes[0].name == run.probes[1].name:
        run.probes[1] = _new_probe(settings)
    try:
        steps = (
            ("enrol", lambda: _enroll_all(run)),
            ("login", lambda: _login(run)),
            ("server", lambda: _server(run)),
            ("tracking", lambda: _tracking(run)),
            ("isolation", lambda: _isolation(run)),
        )
        failed = ""
        for name, body in steps:
            if failed:
                run.results.append(CheckResult(name, False, f"not checked: {failed} failed"))
            elif not run.check(name, body):
                failed = name
    finally:
        run.check("cleanup", lambda: _cleanup(run))
    return run.results


def _hub_answers(settings: ClassSettings, stale: list[str]) -> str:
    if not stack.hub(settings).answers():
        raise CheckFailed(f"the hub at {settings.hub_url} does not answer: {LOGS_FIX} hub")
    removed = f"; removed earlier probes {', '.join(stale)}" if stale else ""
    return f"{settings.hub_url} answers its API{removed}"


def _enroll_all(run: Run) -> str:
    for probe in run.probes:
        enroll(run.settings, probe)
    return (
        f"{' and '.join(p.name for p in run.probes)}: MLflow users, workspaces and roles, "
        "roster entries"
    )
