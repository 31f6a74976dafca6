"""The lab material in the live stack: the bundled lab runs, course notebooks run unchanged."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tests.e2e.conftest import Lab, run_invoke

WORKSPACE = "/home/student/workspace"
BUNDLED = f"{WORKSPACE}/mlflow-tracking-lab"
LAB_SCRIPT_TIMEOUT_S = 240  # the lab must run in 2 minutes on 2 cores; leave room for CI noise

RESULTS = textwrap.dedent(
    """
    import json, tempfile
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri("http://127.0.0.1:8080")
    client = MlflowClient()
    exp = client.get_experiment_by_name("mlflow-tracking-lab")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    newest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        newest[run.info.run_name] = run  # the latest run of each name
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags
               and sum(c.data.tags.get("mlflow.parentRunId") == r.info.run_id for c in runs) >= 3]
    histories = [len(client.get_metric_history(r.info.run_id, k))
                 for r in newest.values() for k in r.data.metrics]
    suffixes = set()
    for run in newest.values():
        stack = [""]
        while stack:
            for item in client.list_artifacts(run.info.run_id, stack.pop() or None):
                if item.is_dir:
                    stack.append(item.path)
                else:
                    suffixes.add(item.path.rsplit(".", 1)[-1])
    custom_tags = {k for r in runs for k in r.data.tags if not k.startswith("mlflow.")}
    flavors = {}
    for model in mlflow.search_logged_models(experiment_ids=[exp.experiment_id],
                                             output_format="list"):
        loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
        flavor = loaded.metadata.flavors.keys() & {"sklearn", "pytorch"}
        example = loaded.input_example
        if flavor and example is not None:
            flavors[flavor.pop()] = len(loaded.predict(example))
    print(json.dumps({
        "experiment_id": exp.experiment_id,
        "artifact_location": exp.artifact_location,
        "runs": len(runs),
        "max_params": max(len(r.data.params) for r in runs),
        "max_history": max(histories),
        "suffixes": sorted(suffixes),
        "parents": len(parents),
        "custom_tags": sorted(custom_tags),
        "predictions": flavors,
    }))
    """
)


def test_bundled_lab_is_in_the_workspace(lab: Lab) -> None:
    listing = lab.python_in(
        "jupyter", f"import os; print('\\n'.join(sorted(os.listdir('{BUNDLED}'))))"
    ).split()
    assert {"mlflow_tracking_lab.ipynb", "mlflow_tracking_lab.py", "README.md"} <= set(listing)


def test_unreachable_course_repo_costs_only_a_warning(lab: Lab) -> None:
    output = lab.up_output.stdout  # type: ignore[attr-defined]
    warning = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    assert "git://127.0.0.1:9/no-such-course.git" in warning[0]
    assert "bundled lab (mlflow-tracking-lab/)" in warning[0]


def test_up_whose_bundled_lab_cannot_be_placed_says_the_lab_is_up_with_its_urls(
    lab: Lab,
) -> None:
    # A student's git command in progress (a fresh index.lock) in their copy of the lab.
    lock = f"{BUNDLED}/.git/index.lock"
    lab.python_in("jupyter", f"open({lock!r}, 'w').close()")
    try:
        up = lab.invoke("up", check=False, timeout=240)
    finally:
        lab.python_in("jupyter", f"import os; os.remove({lock!r})")
    assert up.returncode == 0, up
    assert "Traceback" not in up.stdout + up.stderr
    warnings = [line for line in up.stdout.splitlines() if "was not placed" in line]
    assert len(warnings) == 1, up.stdout
    assert warnings[0].startswith(
        "warning: the lab is up, but the bundled lab (mlflow-tracking-lab/) was not placed ("
    )
    assert "index.lock" in warnings[0]
    assert warnings[0].endswith("run `invoke clone` to place it")
    assert lab.mlflow_url in up.stdout and f"{lab.jupyter_url}/lab?token=" in up.stdout
    assert lab.status()["ready"] is True
    # The retry it names works once the lock is gone.
    clone = lab.invoke("clone", check=False)
    assert "Bundled lab:" in clone.stdout, clone


def test_lab_script_runs_top_to_bottom_and_produces_every_part(lab: Lab) -> None:
    for _ in range(2):  # and again: new runs, no errors
        lab.python_in(
            "jupyter",
            f"import os, runpy; os.chdir('{BUNDLED}');"
            f" runpy.run_path('{BUNDLED}/mlflow_tracking_lab.py', run_name='__main__')",
            timeout=LAB_SCRIPT_TIMEOUT_S,
        )
    found = lab.json_in("jupyter", RESULTS)
    assert found["artifact_location"] == f"mlflow-artifacts:/{found['experiment_id']}"
    assert found["runs"] >= 12, found  # at least 6 runs per pass
    assert found["max_params"] >= 5
    assert found["max_history"] >= 10
    assert {"png", "csv", "json"} <= set(found["suffixes"])
    assert found["parents"] >= 1
    assert found["custom_tags"], "the lab sets custom tags"
    assert found["predictions"].keys() == {"sklearn", "pytorch"}
    assert all(n > 0 for n in found["predictions"].values())


def test_lab_notebook_executes_with_no_cell_error(lab: Lab) -> None:
    lab.python_in(
        "jupyter",
        textwrap.dedent(
            f"""
            import os, nbformat
            from nbclient import NotebookClient
            os.chdir("{BUNDLED}")
            nb = nbformat.read("mlflow_tracking_lab.ipynb", as_version=4)
            NotebookClient(nb, timeout=300, kernel_name="mlops").execute()
            errors = [o for c in nb.cells for o in c.get("outputs", [])
                      if o.get("output_type") == "error"]
            assert not errors, errors
            first = "".join(o.get("text", "") for o in nb.cells[2].get("outputs", []))
            print(first)
            """
        ),
        timeout=LAB_SCRIPT_TIMEOUT_S,
    )


COURSE_NOTEBOOK_CALLS = textwrap.dedent(
    """
    # Exactly the calls course notebooks written for MLflow 3.x before 3.14 make.
    import glob, json
    import mlflow, numpy as np, torch
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    mlflow.set_tracking_uri("http://127.0.0.1:8080")
    exp = mlflow.set_experiment("course-notebook-compat")
    X, y = load_iris(return_X_y=True)
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    signature = infer_signature(X, rf.predict(X))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(sk_model=rf, artifact_path="model",
                                        signature=signature, input_example=X[:3])
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    xt = torch.tensor(X[:3], dtype=torch.float32)
    with mlflow.start_run():
        tinfo = mlflow.pytorch.log_model(pytorch_model=net, name="torch-model",
                                         signature=infer_signature(X[:3].astype("float32"),
                                                                   net(xt).detach().numpy()),
                                         input_example=X[:3].astype("float32"))
    mlflow.sklearn.autolog()
    with mlflow.start_run() as auto_run:
        RandomForestClassifier(n_estimators=3).fit(X, y)
    mlflow.sklearn.autolog(disable=True)
    auto = mlflow.get_run(auto_run.info.run_id)
    root = "/home/student/workspace/mlflowserver-lab/mlartifacts"
    local = f"{root}/{exp.experiment_id}/models/{info.model_id}/artifacts"
    tlocal = f"{root}/{exp.experiment_id}/models/{tinfo.model_id}/artifacts"
    print(json.dumps({
        "sk": mlflow.pyfunc.load_model(local).predict(X[:3]).tolist(),
        "sk_native": mlflow.sklearn.load_model(local).predict(X[:3]).tolist(),
        "torch": list(mlflow.pytorch.load_model(tlocal)(xt).shape),
        "autolog_params": len(auto.data.params),
        "autolog_metrics": sorted(auto.data.metrics),
    }))
    """
)


def test_course_notebook_calls_run_unchanged(lab: Lab) -> None:
    found = lab.json_in("jupyter", COURSE_NOTEBOOK_CALLS, timeout=LAB_SCRIPT_TIMEOUT_S)
    assert found["sk"] == found["sk_native"]
    assert len(found["sk"]) == 3
    assert found["torch"] == [3, 3]
    assert found["autolog_params"] >= 5
    assert "training_accuracy_score" in found["autolog_metrics"]


def test_clone_places_and_resyncs_the_course_repo_without_losing_work(
    lab: Lab, course_repo: tuple[str, Path]
) -> None:
    url, work = course_repo
    env = {**lab.env, "LAB_REPO_URL": url, "LAB_REPO_BRANCH": "dev"}
    dest = f"{WORKSPACE}/course"

    def clone() -> subprocess.CompletedProcess[str]:
        return run_invoke(env, "clone", timeout=300)

    first = clone()
    assert "Course repo: cloned" in first.stdout
    # The student edits one file and deletes another; the teacher changes both and adds one.
    lab.python_in(
        "jupyter",
        f"import os; open('{dest}/README.md', 'w').write('student notes\\n');"
        f" os.remove('{dest}/01_intro.ipynb')",
    )
    (work / "README.md").write_text("v2\n", encoding="utf-8")
    (work / "02_next.ipynb").write_text('{"cells": []}\n', encoding="utf-8")
    git = ["git", "-c", "user.name=Teacher", "-c", "user.email=t@example.org", "-C", str(work)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v2"], check=True)

    second = clone()
    assert "Course repo: updated" in second.stdout, second.stdout
    state = lab.json_in(
        "jupyter",
        f"import json, os; print(json.dumps({{'readme': open('{dest}/README.md').read(),"
        f" 'files': sorted(os.listdir('{dest}'))}}))",
    )
    assert state["readme"] == "student notes\n", "the student's edit wins"
    assert {"01_intro.ipynb", "02_next.ipynb"} <= set(state["files"])

    missing = run_invoke({**env, "LAB_REPO_BRANCH": "no-such-branch"}, "clone", check=False)
    assert missing.returncode == 0, "a missing branch is a warning, not a failure"
    assert "warning: course repo" in missing.stdout
    assert "no-such-branch" in missing.stdout


def test_the_tasks_change_nothing_in_the_users_home(lab: Lab, tmp_path: Path) -> None:
    # Compose used to be offered to the docker CLI as a plugin in ~/.docker: a link that
    # broke the user's own `docker compose` once the venv was gone.
    home = tmp_path / "home"
    home.mkdir()
    env = {**lab.env, "HOME": str(home)}
    env.pop("DOCKER_CONFIG", None)
    for task in (["up"], ["status"], ["doctor"], ["verify"]):
        run_invoke(env, *task, check=task[0] != "doctor")  # doctor: the ports are the lab's
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
