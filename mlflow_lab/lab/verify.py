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
import subprocess
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

from invoke.context import Context

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import engine, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.http import DIRECT
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import course, datasets, doctor, stack
from mlflow_lab.lab.compose import SERVICES, Compose
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


# Inside the Jupyter container, with the proxy settings the notebooks get: what a
# notebook's first call sees.
NOTEBOOK_GET = """
import json, sys, urllib.error, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        status, body = response.status, response.read(400)
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read(400)
except OSError as exc:
    status, body = 0, str(getattr(exc, "reason", exc)).encode()
print(json.dumps({"status": status, "body": body.decode("utf-8", "replace")}))
"""

# Inside the Jupyter container: start a kernel through the server's REST API, run code
# in it over the websocket, shut it down. It is never saved anywhere: no file is left.
KERNEL_RUN = """
import json, os, sys, time, urllib.request, uuid
import websocket
kernel_name, code, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
base = "127.0.0.1:8888"
auth = {"Authorization": "token " + os.environ["JUPYTER_TOKEN"]}
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request("http://" + base + path, data=data, method=method,
                                     headers={**auth, "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None
deadline = time.monotonic() + timeout
kernel = call("POST", "/api/kernels", {"name": kernel_name})
result = {"kernel": kernel["name"], "status": "timeout", "output": ""}
try:
    ws = websocket.create_connection(
        "ws://" + base + "/api/kernels/" + kernel["id"] + "/channels",
        header=[k + ": " + v for k, v in auth.items()], timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "verify",
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    output = []
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        message = json.loads(ws.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            output.append(content["text"])
        elif kind == "error":
            output.append(content["ename"] + ": " + content["evalue"])
        elif kind == "execute_reply":
            result.update(status=content["status"], output="".join(output).strip())
            break
    ws.close()
except websocket.WebSocketTimeoutException:
    pass
finally:
    call("DELETE", "/api/kernels/" + kernel["id"])
print(json.dumps(result))
"""

# Inside the Jupyter container: is the artifact store mounted read-only, and does it
# show the artifact just uploaded through the server? Nothing is written to find out.
ARTIFACT_VIEW = """
import json, os, sys
mount, relative, expected = sys.argv[1], sys.argv[2], sys.argv[3]
# A volume on the same file system as its parent is invisible to os.path.ismount.
options = None
with open("/proc/self/mountinfo", encoding="utf-8") as handle:
    for line in handle:
        fields = line.split()
        if fields[4] == mount:
            options = fields[5].split(",")
found = {"mounted": options is not None, "readonly": "ro" in (options or []), "same": None}
if relative:
    try:
        with open(os.path.join(mount, relative), encoding="utf-8") as handle:
            found["same"] = handle.read() == expected
    except OSError:
        found["same"] = False
print(json.dumps(found))
"""

# Inside the Jupyter container: which of these files are missing from the lab folder.
MISSING_FILES = """
import json, os, sys
folder, names = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([n for n in names if not os.path.isfile(os.path.join(folder, n))]))
"""

# Inside the MLflow container, as the user owning the database: hard-delete the
# throwaway experiment, its runs and their artifacts. REST can only mark them deleted;
# a deleted experiment would still hold its name and its ID.
HARD_DELETE = """
import json, os, shutil, sqlite3, sys
from pathlib import Path
experiment_id, name, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
db, root = os.environ["LAB_MLFLOW_DB"], Path(os.environ["LAB_MLFLOW_ARTIFACTS"]).resolve()
if os.stat(db).st_uid != os.getuid():
    # SQLite would create the -wal/-shm files under this user, locking the server out.
    sys.exit(f"runs as uid {os.getuid()}, but {db} belongs to uid {os.stat(db).st_uid}")
conn = sqlite3.connect(db, timeout=10, isolation_level=None)
# On: a row still pointing at the experiment or a run aborts the whole transaction.
conn.execute("PRAGMA foreign_keys = ON")
conn.execute("BEGIN IMMEDIATE")
try:
    row = conn.execute(
        "SELECT name, artifact_location FROM experiments WHERE experiment_id = ?",
        (experiment_id,)).fetchone()
    if row is None or row[0] != name or not name.startswith(prefix):
        sys.exit(f"experiment {experiment_id} is not {name!r}: nothing deleted")
    location = row[1] or ""
    runs = [r for (r,) in conn.execute(
        "SELECT run_uuid FROM runs WHERE experiment_id = ?", (experiment_id,))]
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = {t: {c[1] for c in conn.execute(f'PRAGMA table_info("{t}")')} for t in tables}
    children = [t for t in tables if t not in ("runs", "experiments")]
    for table in children:
        if "run_uuid" in columns[table]:
            conn.executemany(f'DELETE FROM "{table}" WHERE run_uuid = ?', [(r,) for r in runs])
    conn.executemany("DELETE FROM runs WHERE run_uuid = ?", [(r,) for r in runs])
    for table in children:
        if "experiment_id" in columns[table]:
            conn.execute(f'DELETE FROM "{table}" WHERE experiment_id = ?', (experiment_id,))
    conn.execute("DELETE FROM experiments WHERE experiment_id = ?", (experiment_id,))
    # MLflow's experiments table has a plain INTEGER PRIMARY KEY: SQLite gives a new
    # experiment max(id) + 1, so without this row the next ID is what it was before.
    # A table made with AUTOINCREMENT keeps a high-water mark instead: wind it back
    # when it still points at this experiment.
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        conn.execute(
            "UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'experiments' AND seq = ?",
            (int(experiment_id),))
    conn.execute("COMMIT")
except BaseException:
    conn.execute("ROLLBACK")
    raise
removed = []
if location.startswith("mlflow-artifacts:/"):
    folder = (root / location.removeprefix("mlflow-artifacts:/")).resolve()
    if folder.parent != root:
        sys.exit(f"artifact folder {folder} is outside {root}: left in place")
    for run in runs:
        if (folder / run).exists():
            shutil.rmtree(folder / run)
            removed.append(str(folder / run))
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        removed.append(str(folder))
print(json.dumps({"runs": len(runs), "removed": removed}))
"""


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

    def python_in(self, service: str, script: str, *args: str, cap: float = HTTP_TIMEOUT_S) -> Any:
        """Run a script in a service's container; the JSON it prints."""
        return self.json_from(service, ["python3", "-", *args], script, cap=cap)

    def json_from(
        self, service: str, command: list[str], stdin: str = "", cap: float = HTTP_TIMEOUT_S
    ) -> Any:
        """Run a command in a service's container; the JSON document it prints last."""
        container = self.container(service)
        try:
            result = subprocess.run(
                ["docker", "exec", "-i", container, *command],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.left(cap) + 2,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CheckFailed(
                f"the {service} container did not answer in time: see `invoke logs {service}`"
            ) from None
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            raise CheckFailed(
                f"in the {service} container: {lines[-1]}: see `invoke logs {service}`"
            )
        return json.loads(result.stdout.strip().splitlines()[-1])

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
    uri = stack.NOTEBOOK_TRACKING_URI
    host = urllib.parse.urlsplit(uri).netloc
    found = s.python_in(
        "jupyter", NOTEBOOK_GET, f"{uri}{API}/experiments/search?max_results=1", str(s.left())
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
        result = subprocess.run(
            ["docker", "inspect", container],
            capture_output=True,
            text=True,
            timeout=s.left(),
            check=False,
        )
        if result.returncode != 0:
            raise CheckFailed(f"`docker inspect {container}` failed: {UP_FIX}")
        s.inspected[service] = json.loads(result.stdout)[0]
    return s.inspected[service]


def _artifact_mount(s: Session) -> dict[str, Any]:
    """The Jupyter container's mount of the volume MLflow keeps its artifacts in."""
    mlflow = _inspect(s, "mlflow")
    env = dict(item.split("=", 1) for item in mlflow["Config"]["Env"] if "=" in item)
    store = env.get("LAB_MLFLOW_ARTIFACTS", "")
    volume = next((m.get("Name") for m in mlflow["Mounts"] if m.get("Destination") == store), None)
    mount: dict[str, Any] | None = next(
        (m for m in _inspect(s, "jupyter")["Mounts"] if volume and m.get("Name") == volume),
        None,
    )
    if mount is None:
        raise CheckFailed(f"the artifact store is not mounted in the jupyter container: {UP_FIX}")
    return mount


def check_artifact_store(s: Session) -> str:
    mount = _artifact_mount(s)
    where = str(mount["Destination"])
    found = s.python_in("jupyter", ARTIFACT_VIEW, where, s.artifact_relative, s.payload)
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
    uri = stack.NOTEBOOK_TRACKING_URI
    code = (
        "import mlflow, sklearn, torch, urllib.request\n"
        f"print(urllib.request.urlopen('{uri}/health', timeout=5).read().decode())"
    )
    found = s.python_in(
        "jupyter",
        KERNEL_RUN,
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
    folder = PurePosixPath(course.WORKSPACE) / course.BUNDLED_LAB_DIR
    expected = sorted(
        p.name for p in BUNDLED_LAB_SOURCE.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    missing = s.python_in("jupyter", MISSING_FILES, str(folder), json.dumps(expected))
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
    present = s.json_from("jupyter", ["python3", datasets.CONTAINER_SCRIPT, "list"])
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
        "mlflow": (s.settings.bind_address, s.settings.mlflow_port),
        "jupyter": (s.settings.bind_address, s.settings.jupyter_port),
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
    result = subprocess.run(
        ["docker", "exec", "-i", container, "python3", "-", experiment_id, name, EXPERIMENT_PREFIX],
        input=HARD_DELETE,
        capture_output=True,
        text=True,
        timeout=HTTP_TIMEOUT_S * 2,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise CheckFailed(
            f"removing the throwaway experiment {name} failed ({lines[-1]}): delete it in "
            f"the MLflow UI at {settings.mlflow_url}"
        )
    removed = json.loads(result.stdout.strip().splitlines()[-1])
    return f"experiment {experiment_id} ({name}) and {removed['runs']} run(s) removed"


def check_no_trace(s: Session) -> str:
    if s.experiment_id is None:
        return "nothing was created"
    return remove_experiment(s.settings, s.container("mlflow"), s.experiment_id, s.experiment_name)


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
    except (subprocess.TimeoutExpired, TimeoutError):
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


def run(ctx: Context, settings: Settings) -> list[CheckResult]:
    """Every check, in CHECKS order; none stops the others."""
    engine.engine_version()
    started = time.monotonic()
    session = Session(settings, Compose(ctx, settings).services(), started + BUDGET_S)
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


def show(ctx: Context, settings: Settings, *, as_json: bool) -> None:
    """Run the checks and print them; LabError (exit 1) when any failed."""
    started = time.monotonic()
    results = run(ctx, settings)
    if not as_json:
        print(f"Lab '{settings.project}' ({time.monotonic() - started:.1f} s):")
    doctor.show(results, as_json=as_json, command="invoke verify")
