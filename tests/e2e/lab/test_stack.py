"""The lab stack as instructors and students meet it (issue: the lab stack)."""

from __future__ import annotations

import json
import textwrap
import urllib.parse
import uuid

import requests

from mlflow_lab.core import versions
from tests.e2e.conftest import CONTAINER_TRACKING_URI, Lab
from tests.helpers import wait_until

CLIENT_ROUND_TRIP = textwrap.dedent(
    """
    import json, os, tempfile, uuid
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri("{uri}")
    name = "e2e-" + uuid.uuid4().hex[:8]
    experiment_id = mlflow.create_experiment(name)
    experiment = mlflow.get_experiment(experiment_id)
    payload = "hello from the notebook side " + uuid.uuid4().hex
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("rmse", 0.25)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "note.txt")
            with open(path, "w") as handle:
                handle.write(payload)
            mlflow.log_artifact(path)
    back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt")
    fetched = MlflowClient().get_run(run.info.run_id)
    print(json.dumps({{
        "experiment_id": experiment_id,
        "artifact_location": experiment.artifact_location,
        "run_id": run.info.run_id,
        "params": fetched.data.params,
        "metrics": fetched.data.metrics,
        "artifact_ok": open(back).read() == payload,
    }}))
    """
)


def round_trip(lab: Lab) -> dict[str, object]:
    result: dict[str, object] = lab.json_in(
        "jupyter", CLIENT_ROUND_TRIP.format(uri=CONTAINER_TRACKING_URI)
    )
    return result


def test_up_prints_both_urls_and_status_tells_the_truth(lab: Lab) -> None:
    output = lab.up_output.stdout  # type: ignore[attr-defined]
    assert lab.mlflow_url in output
    assert f"{lab.jupyter_url}/lab?token={urllib.parse.quote(lab.token, safe='')}" in output
    report = lab.status()
    assert report["ready"] is True
    for service in ("mlflow", "jupyter"):
        entry = report["services"][service]
        assert entry["state"] == "running", entry
        assert entry["health"] == "healthy", entry
        assert entry["responding"] is True, entry
    assert report["services"]["jupyter"]["token"] == lab.token
    assert report["services"]["mlflow"]["url"] == lab.mlflow_url


def test_mlflow_serves_ui_and_pinned_version(lab: Lab) -> None:
    page = requests.get(f"{lab.mlflow_url}/", timeout=10)
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    version = requests.get(f"{lab.mlflow_url}/version", timeout=10)
    assert version.text.strip() == versions.mlflow_version()


def test_mlflow_host_check_allows_the_lab_and_refuses_a_foreign_host(lab: Lab) -> None:
    api = f"{lab.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(api, timeout=10).status_code == 200
    foreign = requests.get(api, headers={"Host": "attacker.example.com"}, timeout=10)
    assert foreign.status_code == 403
    assert "Invalid Host header" in foreign.text


def test_jupyter_requires_the_token(lab: Lab) -> None:
    without = requests.get(f"{lab.jupyter_url}/api/contents", timeout=10)
    assert without.status_code == 403
    contents = f"{lab.jupyter_url}/api/contents"
    wrong = requests.get(contents, params={"token": "not-the-token"}, timeout=10)
    assert wrong.status_code == 403
    with_token = requests.get(contents, params={"token": lab.token}, timeout=10)
    assert with_token.status_code == 200
    assert len(lab.token) >= 32


def test_jupyter_default_kernel_is_mlops(lab: Lab) -> None:
    specs = requests.get(
        f"{lab.jupyter_url}/api/kernelspecs", params={"token": lab.token}, timeout=10
    ).json()
    assert specs["default"] == "mlops"
    assert set(specs["kernelspecs"]) == {"mlops"}
    assert specs["kernelspecs"]["mlops"]["spec"]["display_name"] == "Python (mlops)"


def test_jupyter_image_has_the_lab_packages_and_the_same_mlflow(lab: Lab) -> None:
    found = lab.json_in(
        "jupyter",
        "import json, mlflow, pandas, sklearn, matplotlib, PIL, yaml, torch\n"
        "print(json.dumps({'mlflow': mlflow.__version__, 'torch': torch.__version__,"
        " 'cuda': torch.cuda.is_available()}))",
    )
    assert found["mlflow"] == versions.mlflow_version()
    assert found["torch"].endswith("+cpu")
    server_version = lab.python_in("mlflow", "import mlflow; print(mlflow.__version__)").strip()
    assert server_version == found["mlflow"]


# What the course does: log an sklearn model with no serialization arguments, load it back.
SKLEARN_LOG_MODEL = textwrap.dedent(
    """
    import json, uuid
    import mlflow, mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri("http://127.0.0.1:8080")
    mlflow.set_experiment("e2e-sklearn-" + uuid.uuid4().hex[:8])
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model")
    flavor = mlflow.models.get_model_info(info.model_uri).flavors["sklearn"]
    loaded = mlflow.sklearn.load_model(info.model_uri)
    print(json.dumps({"flavor": flavor,
                      "prediction": loaded.predict([[0.0], [1.0]]).tolist()}))
    """
)


def test_the_courses_sklearn_log_model_saves_a_pickle_model_not_skops(lab: Lab) -> None:
    # The course's notebooks call log_model/load_model without skops trusted types: that
    # works only while MLflow's default format is (cloud)pickle, as in the pinned MLflow.
    found = lab.json_in("jupyter", SKLEARN_LOG_MODEL)
    assert found["flavor"]["serialization_format"] in ("cloudpickle", "pickle"), found
    assert found["flavor"]["pickled_model"].endswith(".pkl"), found
    assert found["prediction"] == [0, 1]


def test_a_token_with_url_characters_gets_the_lab_up_and_its_printed_url_opens_it(
    lab: Lab,
) -> None:
    token = "a+b&c#d%e"
    try:
        # Before: `a+b` reached Jupyter as `a b`, readiness never came, and `up` waited
        # 300 s, then stopped the lab.
        up = lab.invoke("up", env={"LAB_JUPYTER_TOKEN": token}, timeout=240)
        printed = next(
            line.split()[1] for line in up.stdout.splitlines() if line.startswith("JupyterLab")
        )
        assert printed == f"{lab.jupyter_url}/lab?token=a%2Bb%26c%23d%25e"
        api = printed.replace("/lab?", "/api/contents?")
        assert requests.get(api, timeout=10).status_code == 200
        assert requests.get(printed, timeout=10).status_code == 200
        report = lab.invoke("status", "--json", env={"LAB_JUPYTER_TOKEN": token}).stdout
        assert json.loads(report)["ready"] is True
    finally:
        lab.invoke("up", timeout=240)
    assert requests.get(api, timeout=10).status_code == 403, "the lab's own token is back"


def test_notebook_side_round_trip_through_the_server(lab: Lab) -> None:
    result = round_trip(lab)
    assert str(result["artifact_location"]).startswith("mlflow-artifacts:/")
    assert result["params"] == {"alpha": "0.5"}
    assert result["metrics"] == {"rmse": 0.25}
    assert result["artifact_ok"] is True


def test_artifact_store_is_mounted_read_only_in_jupyter(lab: Lab) -> None:
    result = round_trip(lab)
    mount = "/home/student/workspace/mlflowserver-lab/mlartifacts"
    check = lab.json_in(
        "jupyter",
        textwrap.dedent(
            f"""
            import json, os, pathlib
            root = pathlib.Path("{mount}/{result["experiment_id"]}")
            found = [p.name for p in root.rglob("note.txt")]
            try:
                open("{mount}/probe", "w")
                writable = True
            except OSError:
                writable = False
            print(json.dumps({{"found": found, "writable": writable}}))
            """
        ),
    )
    assert check["found"] == ["note.txt"]
    assert check["writable"] is False


def test_containers_run_as_non_root_on_loopback_ports(lab: Lab) -> None:
    for service, port in (("mlflow", lab.mlflow_port), ("jupyter", lab.jupyter_port)):
        uid = lab.docker("exec", lab.container(service), "id", "-u").stdout.strip()
        assert uid != "0", service
        bindings = json.loads(
            lab.docker(
                "inspect", "--format", "{{json .NetworkSettings.Ports}}", lab.container(service)
            ).stdout
        )
        published = [b for spec in bindings.values() if spec for b in spec]
        assert published == [{"HostIp": "127.0.0.1", "HostPort": str(port)}], service


def test_up_again_is_quick_and_changes_nothing(lab: Lab) -> None:
    before = {
        s: lab.docker("inspect", "--format", "{{.Id}}", lab.container(s)).stdout
        for s in ("mlflow", "jupyter")
    }
    lab.invoke("up")
    after = {
        s: lab.docker("inspect", "--format", "{{.Id}}", lab.container(s)).stdout
        for s in ("mlflow", "jupyter")
    }
    assert before == after


# SIGKILL to the container's main process (the child of its init): a crash.
KILL_SERVER = (
    "import os, signal\n"
    "for pid in open('/proc/1/task/1/children').read().split():\n"
    "    os.kill(int(pid), signal.SIGKILL)\n"
)


def test_notebook_side_survives_an_mlflow_crash_and_restart(lab: Lab) -> None:
    container = lab.container("mlflow")
    started = lab.docker("inspect", "--format", "{{.State.StartedAt}}", container).stdout.strip()
    # The server dies as in a crash; the restart policy brings the container back,
    # possibly on another address. Jupyter is not restarted.
    lab.docker("exec", container, "python3", "-c", KILL_SERVER, check=False)

    def back_and_healthy() -> bool:
        health, since = lab.docker(
            "inspect", "--format", "{{.State.Health.Status}} {{.State.StartedAt}}", container
        ).stdout.split()
        return health == "healthy" and since != started

    wait_until(back_and_healthy, timeout=180, interval=2, what="mlflow back after a crash")
    assert round_trip(lab)["artifact_ok"] is True


def test_a_logged_run_and_a_saved_notebook_survive_down_and_up(lab: Lab) -> None:
    result = round_trip(lab)
    name = f"kept-{uuid.uuid4().hex[:8]}.ipynb"
    notebook = f"{lab.jupyter_url}/api/contents/{name}"
    content = {"cells": [], "metadata": {"marker": name}, "nbformat": 4, "nbformat_minor": 5}
    saved = requests.put(
        notebook,
        json={"type": "notebook", "format": "json", "content": content},
        params={"token": lab.token},
        timeout=10,
    )
    assert saved.status_code in (200, 201), saved.text
    lab.invoke("down")
    stopped = lab.status()
    assert stopped["ready"] is False
    assert {s["state"] for s in stopped["services"].values()} == {"exited"}, stopped
    lab.invoke("up")
    run = requests.get(
        f"{lab.mlflow_url}/api/2.0/mlflow/runs/get",
        params={"run_id": result["run_id"]},
        timeout=10,
    ).json()["run"]
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"rmse": 0.25}
    back = lab.python_in(
        "jupyter",
        f"import mlflow; mlflow.set_tracking_uri('{CONTAINER_TRACKING_URI}');"
        f"print(open(mlflow.artifacts.download_artifacts(run_id='{result['run_id']}',"
        " artifact_path='note.txt')).read())",
    )
    assert back.startswith("hello from the notebook side")
    reopened = requests.get(notebook, params={"token": lab.token}, timeout=10)
    assert reopened.json()["content"]["metadata"]["marker"] == name
    # The token is kept across down/up: open tabs and bookmarks keep working.
    assert lab.status()["services"]["jupyter"]["token"] == lab.token
