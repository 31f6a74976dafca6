"""The course's later units in the live lab (issue 14), through notebooks of our own.

Each notebook in notebooks/ follows a unit's pattern (Dataset Versioning, Model
Monitoring, Docker_AND_API's client as a jupytext-paired `.py`) and runs top to bottom
with nbclient in the `mlops` kernel inside the Jupyter container, as a student's would.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

from tests.e2e.conftest import (
    NOTEBOOKS,
    Lab,
    assert_versioning_read_the_cache,
    copy_in,
    housing_mirror,
    run_notebook,
)
from tests.helpers import served_folder


def test_dataset_versioning_notebook_fetches_from_the_cache_with_no_network(
    lab: Lab, tmp_path: Path
) -> None:
    with served_folder(tmp_path) as base:
        listing = housing_mirror(tmp_path, base)
        fetched = lab.invoke("datasets", env={"LAB_DATASETS_FILE": str(listing)})
    assert "Datasets: fetched california_housing" in fetched.stdout, fetched.stdout
    assert "warning:" not in fetched.stdout + fetched.stderr
    assert (lab.state_dir / "datasets" / "cal_housing_py3.pkz").is_file()
    found = run_notebook(lab.container("jupyter"), NOTEBOOKS / "dataset_versioning.ipynb")
    assert_versioning_read_the_cache(found)

    doctor = lab.invoke("doctor", "--json", env={"LAB_DATASETS_FILE": str(listing)}, check=False)
    [line] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "datasets"]
    assert line == {"name": "datasets", "ok": True, "detail": "cached: california_housing"}
    verify = lab.invoke("verify", "--json", env={"LAB_DATASETS_FILE": str(listing)}, check=False)
    [line] = [c for c in json.loads(verify.stdout)["checks"] if c["name"] == "datasets"]
    assert line["ok"] and line["detail"] == "in SCIKIT_LEARN_DATA: california_housing", line


def test_an_unreachable_dataset_source_is_one_warning(lab: Lab, tmp_path: Path) -> None:
    listing = housing_mirror(tmp_path, "http://127.0.0.1:9")  # nothing answers there
    env = {"LAB_DATASETS_FILE": str(listing), "LAB_STATE_DIR": str(tmp_path / "state")}
    result = lab.invoke("datasets", env=env)
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stdout
    assert warnings[0].startswith(
        "warning: dataset california_housing (fetch_california_housing) could not be fetched ("
    )
    assert "Datasets: cached: none; not cached: california_housing" in result.stdout


def test_monitoring_notebook_logs_seaborn_and_scipy_plots(lab: Lab) -> None:
    found = run_notebook(lab.container("jupyter"), NOTEBOOKS / "model_monitoring.ipynb")
    assert found["drift"] is True
    assert found["metrics"] == ["accuracy", "ks_pvalue", "ks_statistic"]
    assert found["artifacts"] == ["drift/histogram.png", "drift/qq.png"]


def test_a_paired_py_opens_as_a_notebook_and_runs(lab: Lab, tmp_path: Path) -> None:
    path = copy_in(lab.container("jupyter"), NOTEBOOKS / "paired_client.py")
    relative = path.removeprefix("/home/student/workspace/")
    url = f"{lab.jupyter_url}/api/contents/{urllib.parse.quote(relative)}?type=notebook&content=1"
    request = urllib.request.Request(url, headers={"Authorization": f"token {lab.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        model = json.loads(response.read())
    assert model["type"] == "notebook", "jupytext serves the .py as a notebook"
    cells = model["content"]["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code", "code"]
    assert model["content"]["metadata"]["kernelspec"]["name"] == "mlops"

    opened = tmp_path / "paired_client.ipynb"
    opened.write_text(json.dumps(model["content"]), encoding="utf-8")
    found = run_notebook(lab.container("jupyter"), opened)
    assert found["png_bytes"] > 0
    assert found["health"] == 200
    assert found["modules"] == ["google.genai", "pyarrow", "scipy", "seaborn", "torch"]
