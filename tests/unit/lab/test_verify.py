"""`invoke verify`'s checks against a fake lab: the fake Docker gateway for the
containers (probes, inspect, hard delete) and a fake HTTP opener for MLflow and Jupyter."""

from __future__ import annotations

import email.message
import io
import json
import re
import urllib.error
import urllib.request
import urllib.response
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.core import settings, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import verify
from mlflow_lab.lab.verify import CheckFailed, Session
from tests.helpers import FakeDocker, isolate_settings

MLFLOW_URL, JUPYTER_URL = "http://127.0.0.1:8080", "http://127.0.0.1:8888"
API = f"{MLFLOW_URL}/api/2.0/mlflow"
PROBE = f"docker exec lab-jupyter-1 python3 {re.escape(verify.PROBE)}"
HARD_DELETE = f"docker exec lab-mlflow-1 python3 {re.escape(verify.HARD_DELETE)}"
Answer = tuple[int, str, bytes]


@dataclass
class FakeHTTP:
    """Stands in for verify's opener: routes `(regex on "METHOD URL") -> answer`; a URL
    no route matches does not answer (connection refused)."""

    routes: list[tuple[re.Pattern[str], Callable[[urllib.request.Request], Answer]]] = field(
        default_factory=list
    )
    asked: list[str] = field(default_factory=list)

    def on(self, pattern: str, answer: Answer | Callable[[urllib.request.Request], Answer]) -> None:
        self.routes.append((re.compile(pattern), answer if callable(answer) else lambda r: answer))

    def open(self, request: urllib.request.Request, timeout: float) -> Any:
        line = f"{request.get_method()} {request.full_url}"
        self.asked.append(line)
        for pattern, answer in reversed(self.routes):
            if pattern.search(line):
                status, content_type, body = answer(request)
                break
        else:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        headers = email.message.Message()
        headers["Content-Type"] = content_type
        if status >= 400:
            raise urllib.error.HTTPError(request.full_url, status, "no", headers, io.BytesIO(body))
        return urllib.response.addinfourl(io.BytesIO(body), headers, request.full_url, status)


def as_json(document: object, status: int = 200) -> Answer:
    return status, "application/json", json.dumps(document).encode()


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.Settings:
    isolate_settings(monkeypatch, tmp_path)
    return settings.load()


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> FakeHTTP:
    """A healthy MLflow and Jupyter as this machine sees them."""
    fake = FakeHTTP()
    monkeypatch.setattr(verify, "DIRECT", fake)
    stored: dict[str, bytes] = {}
    logged: dict[str, Any] = {"params": [], "metrics": []}

    def log(kind: str, request: urllib.request.Request) -> Answer:
        item = json.loads(request.data or b"{}")  # type: ignore[arg-type]
        logged[kind].append({"key": item["key"], "value": item["value"]})
        return as_json({})

    def artifact(request: urllib.request.Request) -> Answer:
        if request.get_method() == "PUT":
            stored[request.full_url] = request.data  # type: ignore[assignment]
            return as_json({})
        return 200, "application/octet-stream", stored[request.full_url]

    fake.on(rf"^GET {MLFLOW_URL}/health$", (200, "text/plain", b"OK"))
    fake.on(rf"^GET {MLFLOW_URL}/version$", (200, "text/plain", versions.mlflow_version().encode()))
    fake.on(rf"^GET {MLFLOW_URL}/$", (200, "text/html; charset=utf-8", b"<!doctype html><html>"))
    fake.on(rf"^GET {API}/experiments/search\?max_results=1$", as_json({"experiments": []}))
    fake.on(rf"^POST {API}/experiments/create$", as_json({"experiment_id": "7"}))
    run = {"run_id": "r1", "artifact_uri": "mlflow-artifacts:/7/r1/artifacts"}
    fake.on(rf"^POST {API}/runs/create$", as_json({"run": {"info": run}}))
    fake.on(rf"^POST {API}/runs/log-parameter$", lambda r: log("params", r))
    fake.on(rf"^POST {API}/runs/log-metric$", lambda r: log("metrics", r))
    fake.on(rf"^GET {API}/runs/get\?run_id=r1$", lambda r: as_json({"run": {"data": logged}}))
    fake.on(
        rf"^(PUT|GET) {MLFLOW_URL}/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/", artifact
    )

    def kernelspecs(request: urllib.request.Request) -> Answer:
        if request.get_header("Authorization") != f"token {'t' * 48}":
            return 403, "application/json", b'{"message": "Forbidden"}'
        return as_json({"default": verify.kernel_name(), "kernelspecs": {}})

    fake.on(rf"^GET {JUPYTER_URL}/api/kernelspecs$", kernelspecs)
    return fake


ARTIFACT_MOUNT = "/home/student/workspace/mlflowserver-lab/mlartifacts"


def inspected(service: str, ports: list[tuple[str, str]], mounts: list[dict[str, Any]]) -> str:
    port = "8080/tcp" if service == "mlflow" else "8888/tcp"
    document = {
        "Config": {"Env": ["PATH=/opt/venv/bin", "LAB_MLFLOW_ARTIFACTS=/data/artifacts"]},
        "Mounts": mounts,
        "NetworkSettings": {"Ports": {port: [{"HostIp": ip, "HostPort": p} for ip, p in ports]}},
    }
    return json.dumps([document])


MLFLOW_MOUNTS = [
    {"Name": "mlflow-lab_mlflow-db", "Destination": "/data/db", "RW": True},
    {"Name": "mlflow-lab_mlflow-artifacts", "Destination": "/data/artifacts", "RW": True},
]
JUPYTER_MOUNTS = [
    {"Name": "mlflow-lab_workspace", "Destination": "/home/student/workspace", "RW": True},
    {"Name": "mlflow-lab_mlflow-artifacts", "Destination": ARTIFACT_MOUNT, "RW": False},
]


@pytest.fixture
def containers(fake_docker: FakeDocker) -> FakeDocker:
    """Both containers running and healthy, their probes answering as a good lab's do."""
    fake_docker.on(r"^docker version ", "28.0\n")
    states = [
        {"Service": s, "State": "running", "Health": "healthy", "Name": f"lab-{s}-1"}
        for s in ("mlflow", "jupyter")
    ]
    fake_docker.on(r"^docker compose .* ps --all --format json$", json.dumps(states))
    fake_docker.on(rf"^{PROBE} notebook-get ", '{"status": 200, "body": "{\\"experiments\\": []}"}')
    kernel = {"kernel": "mlops", "status": "ok", "output": "OK"}
    fake_docker.on(rf"^{PROBE} kernel-run mlops ", json.dumps(kernel))
    fake_docker.on(rf"^{PROBE} missing-files ", "[]\n")
    fake_docker.on(r"lab_datasets\.py list$", "{}\n")
    view = {"mounted": True, "readonly": True, "same": True}
    fake_docker.on(rf"^{PROBE} artifact-view {ARTIFACT_MOUNT} 7/r1/artifacts/", json.dumps(view))
    fake_docker.on(
        r"^docker inspect lab-mlflow-1$",
        inspected("mlflow", [("127.0.0.1", "8080")], MLFLOW_MOUNTS),
    )
    fake_docker.on(
        r"^docker inspect lab-jupyter-1$",
        inspected("jupyter", [("127.0.0.1", "8888")], JUPYTER_MOUNTS),
    )
    fake_docker.on(
        rf"^{HARD_DELETE} 7 mlflow-lab-verify-\w+ mlflow-lab-verify-$",
        '{"runs": 1, "removed": []}\n',
    )
    return fake_docker


def session(lab: settings.Settings) -> Session:
    from mlflow_lab.lab.compose import LabCompose

    return Session(lab, LabCompose(lab).services(), deadline=float("inf"))


# ------------------------------------------------------------------ the whole run


def test_a_good_lab_passes_every_check_and_leaves_no_trace(
    lab: settings.Settings,
    http: FakeHTTP,
    containers: FakeDocker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = verify.run(lab)
    assert [r.name for r in results] == [name for name, _ in verify.CHECKS]
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    details = {r.name: r.detail for r in results}
    assert details["no trace"].startswith("experiment 7 (mlflow-lab-verify-")
    assert details["no trace"].endswith(") and 1 run(s) removed")
    assert details["ports"] == "mlflow on 127.0.0.1:8080, jupyter on 127.0.0.1:8888"
    assert details["artifact store"] == (
        f"{ARTIFACT_MOUNT} is mounted read-only in the jupyter container, showing the uploaded "
        "artifact"
    )
    [removal] = containers.matching(r"hard_delete\.py")
    name = removal.argv[-2]
    assert re.fullmatch(r"mlflow-lab-verify-[0-9a-f]{12}", name)
    assert name in details["no trace"]
    assert f"GET {MLFLOW_URL}/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/verify.txt" in (
        http.asked
    ), "the artifact was read back"
    verify.show(lab, as_json=True)
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_a_failed_check_still_removes_the_experiment(
    lab: settings.Settings, http: FakeHTTP, containers: FakeDocker
) -> None:
    http.on(rf"^POST {API}/runs/create$", (500, "application/json", b'{"error_code": "X"}'))
    # No artifact was uploaded: the store is looked at without one.
    view = {"mounted": True, "readonly": True, "same": None}
    containers.on(rf"^{PROBE} artifact-view {ARTIFACT_MOUNT}  $", json.dumps(view))
    results = {r.name: r for r in verify.run(lab)}
    assert results["artifact store"].detail == (
        f"{ARTIFACT_MOUNT} is mounted read-only in the jupyter container"
    )
    assert not results["tracking round trip"].ok
    assert results["tracking round trip"].detail == (
        'MLflow answered runs/create with 500 ({"error_code": "X"}): see `invoke logs mlflow`'
    )
    assert results["no trace"].ok and containers.matching(r"hard_delete\.py")
    with pytest.raises(LabError, match=r"checks failed \(first: tracking round trip\)"):
        verify.show(lab, as_json=False)


def test_a_stopped_lab_fails_each_check_in_one_line(
    lab: settings.Settings, http: FakeHTTP, containers: FakeDocker
) -> None:
    containers.on(r" ps --all --format json$", "")
    http.routes.clear()  # nothing answers
    results = verify.run(lab)
    assert not any(r.ok for r in results if r.name != "no trace")
    assert results[0].detail == (
        "the mlflow container does not exist: start the lab with `invoke up`"
    )
    assert all("\n" not in r.detail for r in results)
    assert {r.name: r.detail for r in results}["no trace"] == "nothing was created"
    assert not containers.matching(r"^docker (exec|inspect)")


# ---------------------------------------------------------------- single checks


@pytest.mark.parametrize(
    ("answer", "told"),
    [
        (
            {"status": 403, "body": "Invalid Host header - possible DNS rebinding attack"},
            'MLflow refuses the notebooks\' Host 127.0.0.1:8080 (403 "Invalid Host header")',
        ),
        (
            {"status": 0, "body": "[Errno 111] Connection refused"},
            "nothing answers http://127.0.0.1:8080 in the jupyter container "
            "([Errno 111] Connection refused): its forward",
        ),
        (
            {"status": 502, "body": "Bad gateway"},
            "http://127.0.0.1:8080 answered 502 in the jupyter container (Bad gateway)",
        ),
    ],
)  # fmt: skip
def test_the_notebook_probe_is_read_for_what_went_wrong(
    lab: settings.Settings, containers: FakeDocker, answer: dict[str, Any], told: str
) -> None:
    containers.on(rf"^{PROBE} notebook-get ", f"some noise\n{json.dumps(answer)}\n")
    with pytest.raises(CheckFailed) as raised:
        verify.check_api_from_notebook(session(lab))
    assert str(raised.value).startswith(told)
    argv = containers.matching("notebook-get")[0].argv
    assert argv[-2] == f"{MLFLOW_URL}/api/2.0/mlflow/experiments/search?max_results=1"


def test_a_probe_that_fails_in_its_container_is_its_last_line(
    lab: settings.Settings, containers: FakeDocker
) -> None:
    containers.fail(rf"^{PROBE} missing-files ", "Traceback\nFileNotFoundError: lab_probe.py\n")
    with pytest.raises(CheckFailed) as raised:
        verify.check_lab_material(session(lab))
    assert str(raised.value) == (
        "in the jupyter container: FileNotFoundError: lab_probe.py: see `invoke logs jupyter`"
    )


def test_missing_lab_files_are_named(lab: settings.Settings, containers: FakeDocker) -> None:
    containers.on(rf"^{PROBE} missing-files ", '["README.md"]\n')
    with pytest.raises(
        CheckFailed, match=r"mlflow-tracking-lab lacks README.md: run `invoke clone`"
    ):
        verify.check_lab_material(session(lab))
    names = json.loads(containers.matching("missing-files")[0].argv[-1])
    assert "mlflow_tracking_lab.ipynb" in names and "README.md" in names


def test_a_probe_in_a_stopped_container_is_not_run(
    lab: settings.Settings, containers: FakeDocker
) -> None:
    states = [
        {"Service": "mlflow", "State": "running", "Health": "healthy", "Name": "lab-mlflow-1"},
        {"Service": "jupyter", "State": "exited", "Health": "", "Name": "lab-jupyter-1"},
    ]
    containers.on(r" ps --all --format json$", json.dumps(states))
    with pytest.raises(CheckFailed, match=r"^the jupyter container is exited: start it"):
        verify.check_kernel(session(lab))
    assert not containers.matching(r"^docker exec")


def test_the_hard_delete_failure_says_where_to_delete_by_hand(
    lab: settings.Settings, containers: FakeDocker
) -> None:
    containers.fail(
        rf"^{HARD_DELETE} ",
        "MLflow's database schema is abc123, this script knows da6fb0208061: nothing deleted "
        "(update docker/mlflow/hard_delete.py for the new schema)\n",
    )
    with pytest.raises(CheckFailed) as raised:
        verify.remove_experiment(lab, "lab-mlflow-1", "7", "mlflow-lab-verify-abc")
    assert str(raised.value) == (
        "removing the throwaway experiment mlflow-lab-verify-abc failed (MLflow's database "
        "schema is abc123, this script knows da6fb0208061: nothing deleted (update "
        "docker/mlflow/hard_delete.py for the new schema)): delete it in the MLflow UI at "
        "http://127.0.0.1:8080"
    )


@pytest.mark.parametrize(
    ("bind", "mlflow_ports", "ok"),
    [
        ("127.0.0.1", [("127.0.0.1", "8080")], True),
        ("127.0.0.1", [("0.0.0.0", "8080")], False),
        ("127.0.0.1", [("127.0.0.1", "8080"), ("0.0.0.0", "8080")], False),
        ("127.0.0.1", [("127.0.0.1", "18080")], False),
        ("127.0.0.1", [], False),
    ],
)
def test_ports_must_be_published_where_the_settings_say_only(
    monkeypatch: pytest.MonkeyPatch,
    lab: settings.Settings,
    containers: FakeDocker,
    bind: str,
    mlflow_ports: list[tuple[str, str]],
    ok: bool,
) -> None:
    monkeypatch.setenv("LAB_BIND_ADDRESS", bind)
    lab = settings.load()
    containers.on(
        r"^docker inspect lab-mlflow-1$", inspected("mlflow", mlflow_ports, MLFLOW_MOUNTS)
    )
    containers.on(
        r"^docker inspect lab-jupyter-1$", inspected("jupyter", [(bind, "8888")], JUPYTER_MOUNTS)
    )
    if ok:
        assert verify.check_ports(session(lab)).startswith(f"mlflow on {bind}:8080")
        return
    with pytest.raises(CheckFailed) as raised:
        verify.check_ports(session(lab))
    shown = ", ".join(f"{ip}:{p}" for ip, p in sorted(mlflow_ports)) or "nothing"
    assert str(raised.value) == (
        f"mlflow publishes {shown}, the settings say {bind}:8080: {verify.UP_FIX}"
    )


def test_a_writable_artifact_store_in_jupyter_fails(
    lab: settings.Settings, containers: FakeDocker
) -> None:
    writable = [{**m, "RW": True} for m in JUPYTER_MOUNTS]
    containers.on(r"^docker inspect lab-jupyter-1$", inspected("jupyter", [], writable))
    s = session(lab)
    s.artifact_relative, s.payload = "7/r1/artifacts/verify.txt", "x"
    with pytest.raises(CheckFailed, match=r"is writable in the jupyter container \(only MLflow"):
        verify.check_artifact_store(s)


def test_jupyter_that_answers_without_the_token_fails(
    lab: settings.Settings, http: FakeHTTP, containers: FakeDocker
) -> None:
    http.on(rf"^GET {JUPYTER_URL}/api/kernelspecs$", as_json({"default": verify.kernel_name()}))
    with pytest.raises(CheckFailed, match=r"^Jupyter answers without the token \(200\): anyone"):
        verify.check_jupyter_api(session(lab))


def test_a_version_other_than_the_pinned_one_fails(
    lab: settings.Settings, http: FakeHTTP, containers: FakeDocker
) -> None:
    http.on(rf"^GET {MLFLOW_URL}/version$", (200, "text/plain", b"2.22.0"))
    with pytest.raises(CheckFailed) as raised:
        verify.check_version(session(lab))
    assert str(raised.value).startswith(
        f"MLflow 2.22.0 is running, the lab pins {versions.mlflow_version()}"
    )


def test_an_mlflow_that_refuses_the_host_says_so(
    lab: settings.Settings, http: FakeHTTP, containers: FakeDocker
) -> None:
    http.on(rf"^GET {MLFLOW_URL}/$", (403, "text/plain", b"Invalid Host header"))
    with pytest.raises(CheckFailed, match=r"^MLflow refuses Host 127\.0\.0\.1:8080 \(403"):
        verify.check_ui(session(lab))
