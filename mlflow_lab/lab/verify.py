"""`invoke verify`: the running lab checked along the paths students take, leaving no trace.

MLflow's /health skips its Host-header check, so a stack can look healthy while
every notebook call gets 403 "Invalid Host header". The checks here therefore call
the API as the notebooks do (from inside the Jupyter container, through its
127.0.0.1:8080 forward), run code in the notebooks' kernel, and log a run with an
artifact through the server. That throwaway experiment is then removed from
MLflow's database and artifact store, so the UI shows only what students made and
the next experiment a student creates gets the ID it would have had anyway.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import docker, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.http import DIRECT
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import course, datasets, doctor, layout
from mlflow_lab.lab.compose import JUPYTER, MLFLOW, SERVICES, LabCompose
from mlflow_lab.lab.doctor import CheckResult

BUDGET_S = 15.0
HTTP_TIMEOUT_S = 5.0
KERNEL_TIMEOUT_S = 12.0
API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
ARTIFACTS_SCHEME = "mlflow-artifacts:/"
EXPERIMENT_PREFIX = "mlflow-lab-verify-"
ARTIFACT_NAME = "verify.txt"
BUNDLED_LAB_SOURCE = PROJECT_ROOT / "lab"
JUPYTER_CONFIG = PROJECT_ROOT / "docker" / "jupyter" / "jupyter_server_config.json"
UP_FIX = "run `invoke up` to recreate it with the lab's settings"


class CheckFailed(Exception):
    """A check's failure: the message is its one line, with the fix."""


def kernel_name() -> str:
    """The notebooks' kernel: the Jupyter server's default, as its config sets it."""
    config = json.loads(JUPYTER_CONFIG.read_text(encoding="utf-8"))
    return str(config["MultiKernelManager"]["default_kernel_name"])


PROBE = layout.tool("lab_probe.py")
HARD_DELETE = layout.tool("hard_delete.py")


@dataclass
class Session:
    """One verify run: the stack's state and what the checks created on it."""

    settings: Settings
    services: dict[str, dict[str, str]]
    deadline: float
    experiment_id: str | None = None
    experiment_name: str = ""
    artifact_relative: str = ""  # of the uploaded artifact, below the artifact root
    payload: str = ""
    inspected: dict[str, dict[str, Any]] = field(default_factory=dict)

    def left(self, cap: float = HTTP_TIMEOUT_S) -> float:
        return max(0.5, min(cap, self.deadline - time.monotonic()))

    def container(self, service: str) -> str:
        info = self.services.get(service)
        if info is None:
            raise CheckFailed(
                f"the {service} container does not exist: start the lab with `invoke up`"
            )
        if info["state"] != "running":
            raise CheckFailed(
                f"the {service} container is {info['state']}: start it with `invoke up`"
            )
        return info["container"]

    def probe(self, service: str, script: str, *args: str, cap: float = HTTP_TIMEOUT_S) -> Any:
        """Run one of the lab's scripts in a service's container; the JSON it prints."""
        container = self.container(service)
        try:
            result = docker.exec_in(container, "python3", script, *args, timeout=self.left(cap) + 2)
        except docker.DockerError:
            raise CheckFailed(
                f"the {service} container did not answer in time: see `invoke logs {service}`"
            ) from None
        if not result.ok:
            raise CheckFailed(
                f"in the {service} container: {result.last_line()}: see `invoke logs {service}`"
            )
        return json.loads(result.lines()[-1])

    def http(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        fix: str,
    ) -> tuple[int, str, bytes]:
        """(status, content type, body) from this machine; CheckFailed when nothing answers."""
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with DIRECT.open(request, timeout=self.left()) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise CheckFailed(f"{url} does not answer ({reason}): {fix}") from None

    def mlflow_api(self, endpoint: str, payload: dict[str, Any] | None = None) -> Any:
        """Call MLflow's REST API through the published port; its JSON answer."""
        url = f"{self.settings.mlflow_url}{API}/{endpoint}"
        method = "GET" if payload is None else "POST"
        status, _, body = self.http(
            method,
            url,
            body=None if payload is None else json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            fix="see `invoke logs mlflow`",
        )
        if _host_refusal(status, body):
            raise CheckFailed(_refused(url))
        if status != 200:
            raise CheckFailed(
                f"MLflow answered {endpoint} with {status} ({_snippet(body)}): see "
                "`invoke logs mlflow`"
            )
        return json.loads(body)


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:160] or "empty"


def _host_refusal(status: int, body: bytes) -> bool:
    return status == 403 and b"Invalid Host header" in body


def _refused(url: str) -> str:
    host = urllib.parse.urlsplit(url).netloc
    return (
        f'MLflow refuses Host {host} (403 "Invalid Host header") though /health answers: '
        f"{UP_FIX} (allowed hosts: compose.yaml, LAB_EXTRA_ALLOWED_HOSTS)"
    )


# --------------------------------------------------------------------------- checks


def check_containers(s: Session) -> str:
    for service in SERVICES:
        s.container(service)
        health = s.services[service]["health"]
        if health not in ("", "healthy"):
            raise CheckFailed(
                f"the {service} container is {health}: wait a little, or see "
                f"`invoke logs {service}`"
            )
    return "mlflow and jupyter are running and healthy"


def check_health(s: Session) -> str:
    url = f"{s.settings.mlflow_url}/health"
    status, _, body = s.http("GET", url, fix="see `invoke logs mlflow`, then `invoke up`")
    if status != 200:
        raise CheckFailed(f"{url} answered {status} ({_snippet(body)}): see `invoke logs mlflow`")
    return f"{url} answers {_snippet(body)}"


def check_version(s: Session) -> str:
    url = f"{s.settings.mlflow_url}/version"
    status, _, body = s.http("GET", url, fix="see `invoke logs mlflow`")
    running, pinned = body.decode("utf-8", "replace").strip(), versions.mlflow_version()
    if status != 200 or running != pinned:
        raise CheckFailed(
            f"MLflow {running or status} is running, the lab pins {pinned} "
            "(docker/constraints.txt): run `invoke up` to rebuild and restart it"
        )
    return f"MLflow {running}, as pinned"


def check_ui(s: Session) -> str:
    url = f"{s.settings.mlflow_url}/"
    status, content_type, body = s.http("GET", url, fix="see `invoke logs mlflow`")
    if _host_refusal(status, body):
        raise CheckFailed(_refused(url))
    if status != 200 or "text/html" not in content_type or b"<html" not in body.lower():
        raise CheckFailed(
            f"{url} answered {status} {content_type or 'without a type'}, not the MLflow UI "
            "page: see `invoke logs mlflow`"
        )
    return f"{url} serves the UI page"


def check_api_from_host(s: Session) -> str:
    url = f"{s.settings.mlflow_url}{API}/experiments/search?max_results=1"
    host = urllib.parse.urlsplit(url).netloc
    status, _, body = s.http("GET", url, fix="see `invoke logs mlflow`")
    if _host_refusal(status, body):
        raise CheckFailed(_refused(url))
    if status != 200:
        raise CheckFailed(f"the API answered {status} ({_snippet(body)}): see `invoke logs mlflow`")
    return f"the API answers Host {host}"


def check_api_from_notebook(s: Session) -> str:
    uri = layout.NOTEBOOK_TRACKING_URI
    host = urllib.parse.urlsplit(uri).netloc
    found = s.probe(
        JUPYTER,
        PROBE,
        "notebook-get",
        f"{uri}{API}/experiments/search?max_results=1",
        str(s.left()),
    )
    status, body = int(found["status"]), str(found["body"]).encode()
    if _host_refusal(status, body):
        raise CheckFailed(
            f'MLflow refuses the notebooks\' Host {host} (403 "Invalid Host header") though '
            f"/health answers: its allowed hosts must include {host}: {UP_FIX}"
        )
    if status == 0:
        raise CheckFailed(
            f"nothing answers {uri} in the jupyter container ({found['body']}): its forward "
            "to the mlflow service is down: see `invoke logs jupyter`, then `invoke up`"
        )
    if status != 200:
        raise CheckFailed(
            f"{uri} answered {status} in the jupyter container ({_snippet(body)}): see "
            "`invoke logs mlflow`"
        )
    return f"the API answers the notebooks' Host {host} (from the jupyter container)"


def check_round_trip(s: Session) -> str:
    s.experiment_name = f"{EXPERIMENT_PREFIX}{uuid.uuid4().hex[:12]}"
    created = s.mlflow_api("experiments/create", {"name": s.experiment_name})
    s.experiment_id = str(created["experiment_id"])
    now = int(time.time() * 1000)
    run = s.mlflow_api(
        "runs/create",
        {"experiment_id": s.experiment_id, "start_time": now, "run_name": "lab-verify"},
    )["run"]["info"]
    run_id, artifact_uri = str(run["run_id"]), str(run["artifact_uri"])
    s.mlflow_api("runs/log-parameter", {"run_id": run_id, "key": "alpha", "value": "0.5"})
    s.mlflow_api(
        "runs/log-metric",
        {"run_id": run_id, "key": "rmse", "value": 0.25, "timestamp": now, "step": 0},
    )
    if not artifact_uri.startswith(ARTIFACTS_SCHEME):
        raise CheckFailed(
            f"runs store artifacts at {artifact_uri}, not through the server "
            f"({ARTIFACTS_SCHEME}): {UP_FIX}"
        )
    s.artifact_relative = f"{artifact_uri.removeprefix(ARTIFACTS_SCHEME)}/{ARTIFACT_NAME}"
    s.payload = f"mlflow-lab verify {uuid.uuid4().hex}"
    url = f"{s.settings.mlflow_url}{ARTIFACTS_API}/{s.artifact_relative}"
    fix = "see `invoke logs mlflow`"
    status, _, body = s.http("PUT", url, body=s.payload.encode(), fix=fix)
    if status != 200:
        raise CheckFailed(f"uploading an artifact got {status} ({_snippet(body)}): {fix}")
    status, _, body = s.http("GET", url, fix=fix)
    if status != 200 or body.decode("utf-8", "replace") != s.payload:
        raise CheckFailed(f"the uploaded artifact came back as {status} {_snippet(body)}: {fix}")
    logged = s.mlflow_api(f"runs/get?run_id={run_id}")["run"]["data"]
    params = {p["key"]: p["value"] for p in logged.get("params", [])}
    metrics = {m["key"]: m["value"] for m in logged.get("metrics", [])}
    if params != {"alpha": "0.5"} or metrics != {"rmse": 0.25}:
        raise CheckFailed(f"the run came back with params {params}, metrics {metrics}: {fix}")
    return "experiment, run, param, metric and artifact went in and came back out"


def _inspect(s: Session, service: str) -> dict[str, Any]:
    if service not in s.inspected:
        container = s.container(service)
        result = docker.inspect(container, timeout=s.left())
        if not result.ok:
            raise CheckFailed(f"`docker inspect {container}` failed: {UP_FIX}")
        s.inspected[service] = result.json()[0]
    return s.inspected[service]


def _artifact_mount(s: Session) -> dict[str, Any]:
    """The Jupyter container's mount of the volume MLflow keeps its artifacts in."""
    mlflow = _inspect(s, MLFLOW)
    env = dict(item.split("=", 1) for item in mlflow["Config"]["Env"] if "=" in item)
    store = env.get("LAB_MLFLOW_ARTIFACTS", "")
    volume = next((m.get("Name") for m in mlflow["Mounts"] if m.get("Destination") == store), None)
    mount: dict[str, Any] | None = next(
        (m for m in _inspect(s, JUPYTER)["Mounts"] if volume and m.get("Name") == volume),
        None,
    )
    if mount is None:
        raise CheckFailed(f"the artifact store is not mounted in the jupyter container: {UP_FIX}")
    return mount


def check_artifact_store(s: Session) -> str:
    mount = _artifact_mount(s)
    where = str(mount["Destination"])
    found = s.probe(JUPYTER, PROBE, "artifact-view", where, s.artifact_relative, s.payload)
    if not found["mounted"]:
        raise CheckFailed(f"{where} is not a mount in the jupyter container: {UP_FIX}")
    if mount.get("RW") or not found["readonly"]:
        raise CheckFailed(
            f"{where} is writable in the jupyter container (only MLflow may write there): {UP_FIX}"
        )
    if found["same"] is False:
        raise CheckFailed(
            f"the artifact uploaded through MLflow is not visible in {where}: the two "
            f"containers use different volumes: {UP_FIX}"
        )
    seen = ", showing the uploaded artifact" if found["same"] else ""
    return f"{where} is mounted read-only in the jupyter container{seen}"


def check_jupyter_api(s: Session) -> str:
    url = f"{s.settings.jupyter_url}/api/kernelspecs"
    fix = "see `invoke logs jupyter`, then `invoke up`"
    status, _, body = s.http(
        "GET", url, headers={"Authorization": f"token {s.settings.jupyter_token}"}, fix=fix
    )
    if status == 403:
        raise CheckFailed(
            f"Jupyter refuses the lab's token (LAB_JUPYTER_TOKEN or the one kept in "
            f"{s.settings.state_dir}): {UP_FIX}"
        )
    if status != 200:
        raise CheckFailed(f"{url} answered {status} ({_snippet(body)}): {fix}")
    default = json.loads(body).get("default")
    if default != kernel_name():
        raise CheckFailed(f"Jupyter's default kernel is {default}, not {kernel_name()}: {UP_FIX}")
    status, _, _ = s.http("GET", url, fix=fix)
    if status != 403:
        raise CheckFailed(
            f"Jupyter answers without the token ({status}): anyone who reaches "
            f"{s.settings.jupyter_url} can run code: {UP_FIX}"
        )
    return "answers with the token, refuses without it (403)"


def check_kernel(s: Session) -> str:
    uri = layout.NOTEBOOK_TRACKING_URI
    code = (
        "import mlflow, sklearn, torch, urllib.request\n"
        f"print(urllib.request.urlopen('{uri}/health', timeout=5).read().decode())"
    )
    found = s.probe(
        JUPYTER,
        PROBE,
        "kernel-run",
        kernel_name(),
        code,
        str(s.left(KERNEL_TIMEOUT_S)),
        cap=KERNEL_TIMEOUT_S,
    )
    if found["status"] == "timeout":
        raise CheckFailed(
            f"the {found['kernel']} kernel did not finish importing mlflow, sklearn and torch "
            f"and calling {uri}/health in time: see `invoke logs jupyter`"
        )
    if found["status"] != "ok":
        raise CheckFailed(
            f"in the {found['kernel']} kernel: {found['output'] or 'failed'}: {UP_FIX}"
        )
    return f"the {found['kernel']} kernel imports mlflow, sklearn, torch and reaches {uri}/health"


def check_lab_material(s: Session) -> str:
    folder = PurePosixPath(layout.WORKSPACE) / course.BUNDLED_LAB_DIR
    expected = sorted(
        p.name for p in BUNDLED_LAB_SOURCE.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    missing = s.probe(JUPYTER, PROBE, "missing-files", str(folder), json.dumps(expected))
    if missing:
        raise CheckFailed(
            f"{folder} lacks {', '.join(missing)}: run `invoke clone` to place the lab again "
            "(students' edits are kept)"
        )
    return f"{folder} has {', '.join(expected)}"


def check_datasets(s: Session) -> str:
    try:
        have, lack = datasets.report(s.settings)
    except LabError as exc:
        raise CheckFailed(str(exc)) from None
    present = s.probe(JUPYTER, datasets.CONTAINER_SCRIPT, "list")
    stale = [name for name in have if not present.get(name)]
    if stale:
        raise CheckFailed(
            f"{', '.join(stale)} cached on this machine but not in the Jupyter container: "
            "run `invoke datasets`, which copies them into the running lab"
        )
    if not have and not lack:
        return "none listed (LAB_DATASETS_FILE)"
    return f"in SCIKIT_LEARN_DATA: {', '.join(have) or 'none'}" + (
        f"; not cached: {', '.join(lack)} (`invoke datasets` where the network allows)"
        if lack
        else ""
    )


def check_ports(s: Session) -> str:
    wanted = {
        MLFLOW: (s.settings.bind_address, s.settings.mlflow_port),
        JUPYTER: (s.settings.bind_address, s.settings.jupyter_port),
    }
    for service, (address, port) in wanted.items():
        bindings = _inspect(s, service)["NetworkSettings"]["Ports"] or {}
        published = {
            (b["HostIp"], int(b["HostPort"])) for spec in bindings.values() if spec for b in spec
        }
        # Publishing on 0.0.0.0 also publishes on IPv6's "::".
        allowed = {(address, port)} | ({("::", port)} if address == "0.0.0.0" else set())
        if (address, port) not in published or not published <= allowed:
            shown = ", ".join(f"{ip}:{p}" for ip, p in sorted(published)) or "nothing"
            raise CheckFailed(
                f"{service} publishes {shown}, the settings say {address}:{port}: {UP_FIX}"
            )
    return ", ".join(f"{service} on {a}:{p}" for service, (a, p) in wanted.items())


def remove_experiment(settings: Settings, container: str, experiment_id: str, name: str) -> str:
    """Hard-delete a verify experiment (runs, artifacts) in the MLflow container."""
    result = docker.exec_in(
        container,
        "python3",
        HARD_DELETE,
        experiment_id,
        name,
        EXPERIMENT_PREFIX,
        timeout=HTTP_TIMEOUT_S * 2,
    )
    if not result.ok:
        raise CheckFailed(
            f"removing the throwaway experiment {name} failed ({result.last_line()}): delete "
            f"it in the MLflow UI at {settings.mlflow_url}"
        )
    removed = json.loads(result.lines()[-1])
    return f"experiment {experiment_id} ({name}) and {removed['runs']} run(s) removed"


def check_no_trace(s: Session) -> str:
    if s.experiment_id is None:
        return "nothing was created"
    return remove_experiment(s.settings, s.container(MLFLOW), s.experiment_id, s.experiment_name)


# Shown in this order; the round trip comes before the checks that look for its
# artifact, and the clean-up last.
CHECKS: tuple[tuple[str, Callable[[Session], str]], ...] = (
    ("containers", check_containers),
    ("mlflow health", check_health),
    ("mlflow version", check_version),
    ("mlflow ui", check_ui),
    ("api from host", check_api_from_host),
    ("api from notebook", check_api_from_notebook),
    ("tracking round trip", check_round_trip),
    ("artifact store", check_artifact_store),
    ("jupyter api", check_jupyter_api),
    ("notebook kernel", check_kernel),
    ("lab material", check_lab_material),
    ("datasets", check_datasets),
    ("ports", check_ports),
    ("no trace", check_no_trace),
)
# The slow one (a kernel importing torch) runs alongside the others.
BACKGROUND = frozenset({"notebook kernel"})


def _result(name: str, check: Callable[[Session], str], s: Session) -> CheckResult:
    try:
        return CheckResult(name, True, check(s))
    except CheckFailed as exc:
        return CheckResult(name, False, str(exc))
    except (docker.DockerError, TimeoutError):
        return CheckResult(name, False, f"no answer within {BUDGET_S:g} s: see `invoke logs`")
    except Exception as exc:  # an answer of an unexpected shape fails this check, not the rest
        text = " ".join(str(exc).split())[:160]
        return CheckResult(
            name, False, f"unexpected {type(exc).__name__} ({text}): see `invoke logs`"
        )


def _result_in_budget(name: str, check: Callable[[Session], str], s: Session) -> CheckResult:
    if time.monotonic() > s.deadline:
        return CheckResult(
            name,
            False,
            f"not run: the checks above used up the {BUDGET_S:g} s budget; fix them first",
        )
    return _result(name, check, s)


def run(settings: Settings) -> list[CheckResult]:
    """Every check, in CHECKS order; none stops the others."""
    docker.engine_version()
    started = time.monotonic()
    session = Session(settings, LabCompose(settings).services(), started + BUDGET_S)
    results: dict[str, CheckResult] = {}
    with ThreadPoolExecutor(max_workers=len(BACKGROUND)) as pool:
        background: dict[str, Future[CheckResult]] = {
            name: pool.submit(_result, name, check, session)
            for name, check in CHECKS
            if name in BACKGROUND
        }
        try:
            for name, check in CHECKS:
                if name not in BACKGROUND and name != "no trace":
                    results[name] = _result_in_budget(name, check, session)
        finally:
            # Whatever happened (Ctrl+C included), the throwaway experiment goes.
            results["no trace"] = _result("no trace", check_no_trace, session)
        for name, future in background.items():
            results[name] = future.result()
    return [results[name] for name, _ in CHECKS]


def show(settings: Settings, *, as_json: bool) -> None:
    """Run the checks and print them; LabError (exit 1) when any failed."""
    started = time.monotonic()
    results = run(settings)
    if not as_json:
        print(f"Lab '{settings.project}' ({time.monotonic() - started:.1f} s):")
    doctor.show(results, as_json=as_json, command="invoke verify")
