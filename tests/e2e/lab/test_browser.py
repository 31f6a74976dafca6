"""The two UIs in a real browser (headless Chromium), as a student sees them after the lab.

The pages are driven through mlflow_lab.lab.screenshots, the same helpers that take the
README's pictures. Every wait is bounded; a failing test saves a screenshot and names
it in its message.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page

from mlflow_lab.lab import screenshots as ui
from mlflow_lab.lab.course import BUNDLED_LAB_DIR
from mlflow_lab.lab.stack import NOTEBOOK_TRACKING_URI
from tests.e2e.conftest import Lab, served_course_repo
from tests.e2e.pages import screenshot_on_failure

COURSE_REPO = "MLOps"  # the course repository's real name, so the workspace looks as in class
NOTIFICATION_PLUGIN = "@jupyterlab/apputils-extension:notification"
NEWS_PROMPT = "Would you like to get notified about official Jupyter news?"
# JupyterLab asks about news a few seconds after it starts: wait that long for a prompt.
NEWS_PROMPT_GRACE_MS = 8_000


@pytest.fixture(scope="module")
def lab_runs(lab: Lab) -> ui.LabRuns:
    """The lab has run once, top to bottom, in the Jupyter container."""
    lab.python_in(
        "jupyter",
        f"import os, runpy; os.chdir({str(Path(ui.LAB_SCRIPT).parent)!r});"
        f" runpy.run_path({ui.LAB_SCRIPT!r}, run_name='__main__')",
        timeout=ui.LAB_SCRIPT_TIMEOUT_S,
    )
    found = ui.find_lab_runs(lab.mlflow_url)
    assert found is not None, "the lab ran but MLflow lists no run of it"
    return found


@pytest.fixture(scope="module")
def course_in_workspace(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The course repository placed in the workspace by `invoke clone`, as in class."""
    with served_course_repo(tmp_path_factory.mktemp("browser-course"), COURSE_REPO) as server:
        lab.invoke("clone", env={"LAB_REPO_URL": server.url, "LAB_REPO_BRANCH": "dev"})
        yield COURSE_REPO


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with ui.chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = ui.new_page(browser)
    yield page
    page.context.close()


@pytest.fixture
def own_kernels(lab: Lab) -> Iterator[None]:
    """Kernels the test starts (by opening a notebook) are shut down afterwards."""

    def sessions() -> set[str]:
        url = f"{lab.jupyter_url}/api/sessions?token={urllib.parse.quote(lab.token, safe='')}"
        return {s["id"] for s in ui.http_json("GET", url)}

    before = sessions()
    yield
    for session in sessions() - before:
        token = urllib.parse.quote(lab.token, safe="")
        ui.http_json("DELETE", f"{lab.jupyter_url}/api/sessions/{session}?token={token}")


def local_storage(page: Page, key: str) -> Any:
    raw = page.evaluate("key => window.localStorage.getItem(key)", key)
    return None if raw is None else json.loads(raw)


def covered_by(locator: Locator) -> str:
    """What is on top at the centre of `locator`: "" when it is the element itself."""
    return str(
        locator.evaluate(
            """el => {
                const r = el.getBoundingClientRect();
                const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                if (!top) return "nothing";
                return el === top || el.contains(top) ? "" : top.outerHTML;
            }"""
        )
    )[:300]


# --------------------------------------------------------------------------- MLflow UI


def test_mlflow_ui_opens_on_classic_tracking_with_no_telemetry_notice(
    lab: Lab, page: Page, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path, "mlflow-home"):
        ui.open_mlflow_home(page, lab.mlflow_url)
        assert local_storage(page, "mlflow.workflowType_v1") == "machine_learning"
        sidebar = page.locator("aside")
        # The model-training sidebar: the model registry, none of GenAI's prompts.
        sidebar.get_by_text("Model registry", exact=True).wait_for()
        assert sidebar.get_by_text("Prompts", exact=True).count() == 0
        assert page.get_by_text("Information about UI telemetry").count() == 0
        # A student who picks GenAI keeps it: the lab's default applies to a first visit only.
        sidebar.get_by_text("GenAI", exact=True).click()
        sidebar.get_by_text("Prompts", exact=True).wait_for()
        page.reload()
        sidebar.get_by_text("Prompts", exact=True).wait_for()
        assert local_storage(page, "mlflow.workflowType_v1") == "genai"


def test_mlflow_ui_lists_the_labs_experiment_and_runs_uncovered(
    lab: Lab, lab_runs: ui.LabRuns, page: Page, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path, "mlflow-runs"):
        page.goto(f"{lab.mlflow_url}/#/experiments")
        page.get_by_role("link", name=ui.LAB_EXPERIMENT, exact=True).first.click()
        page.get_by_role("link", name=ui.CHART_RUN, exact=True).first.wait_for()
        assert f"/experiments/{lab_runs.experiment_id}" in page.url
        for name in ("params-demo", "metrics-demo", ui.ARTIFACT_RUN, ui.CHART_RUN):
            run_link = page.get_by_role("link", name=name, exact=True).first
            assert run_link.is_visible(), f"run {name} is not in the runs table"
            assert covered_by(run_link) == "", f"something covers run {name}"
        assert page.get_by_text("Detect Issues").count() == 0, "the GenAI view opened"
        assert page.get_by_role("dialog").count() == 0, "a dialog covers the runs table"


def test_run_page_shows_the_metric_chart_and_the_logged_model(
    lab: Lab, lab_runs: ui.LabRuns, page: Page, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path, "mlflow-run"):
        ui.open_run(page, lab.mlflow_url, lab_runs, ui.CHART_RUN)
        # The logged model, linked from the run's overview.
        page.get_by_text("Logged models (1)").wait_for()
        model_link = page.locator(
            f"a[href*='/experiments/{lab_runs.experiment_id}/models/m-']", has_text="model"
        ).first
        assert model_link.is_visible(), "the run's logged model is not linked"
        ui.open_metric_chart(page, lab.mlflow_url, lab_runs)
        line = page.locator(".js-plotly-plot .scatterlayer path.js-line").first
        box = line.bounding_box()
        assert box and box["width"] > 100, f"the {ui.CHART_METRIC} line is not drawn: {box}"


def test_run_artifacts_show_the_png(
    lab: Lab, lab_runs: ui.LabRuns, page: Page, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path, "mlflow-artifacts"):
        with page.expect_response(lambda r: "/get-artifact?" in r.url) as fetched:
            ui.open_png_artifact(page, lab.mlflow_url, lab_runs)
        response = fetched.value
        assert urllib.parse.quote(ui.ARTIFACT_PNG, safe="") in response.url
        assert response.status == 200 and response.headers["content-type"] == "image/png"
        widths = page.evaluate(ui.SHOWN_IMAGE_WIDTHS)
        assert widths and all(w > 0 for w in widths), f"an image did not render: {widths}"


# --------------------------------------------------------------------------- JupyterLab


def test_jupyterlab_needs_the_token(lab: Lab, page: Page, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path, "jupyter-login"):
        page.goto(f"{lab.jupyter_url}/lab")
        page.locator("input[type='password']").first.wait_for()
        assert "/login" in page.url


def test_jupyterlab_opens_on_the_workspace_with_nothing_on_top(
    lab: Lab, course_in_workspace: str, page: Page, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path, "jupyterlab"):
        ui.open_jupyterlab(page, lab.jupyter_url, lab.token)
        for name in (course_in_workspace, BUNDLED_LAB_DIR):
            item = ui.file_browser_item(page, name)
            item.first.wait_for()
            assert item.count() == 1, f"{name}/ is not in the file browser's root"
        page.wait_for_timeout(NEWS_PROMPT_GRACE_MS)
        assert page.get_by_text(NEWS_PROMPT).count() == 0
        assert page.locator(".jp-Dialog").count() == 0
        # The image's overrides.json is what JupyterLab now takes for the defaults.
        schema = page.evaluate(
            """async (plugin) => {
                const r = await fetch("/lab/api/settings/" + plugin);
                return (await r.json()).schema.properties;
            }""",
            NOTIFICATION_PLUGIN,
        )
        assert schema["fetchNews"]["default"] == "false"
        assert schema["checkForUpdates"]["default"] is False


def test_lab_notebook_starts_the_mlops_kernel_and_reaches_mlflow(
    lab: Lab, own_kernels: None, page: Page, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path, "lab-notebook"):
        kernel = ui.default_kernel(lab.jupyter_url, lab.token)
        assert kernel == "Python (mlops)"
        ui.open_jupyterlab(page, lab.jupyter_url, lab.token)
        ui.open_lab_notebook(page, kernel)
        assert page.locator(".jp-Dialog").count() == 0, "a kernel-selection dialog came up"
        toolbar_kernel = page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").first
        assert toolbar_kernel.inner_text().strip() == kernel
        code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell")
        # The first code cell (imports), then the one connecting to MLflow.
        connect = code_cells.filter(has_text="set_tracking_uri").first
        for cell, expected in (
            (code_cells.first, "MLflow version"),
            (connect, f"Tracking URI: {NOTEBOOK_TRACKING_URI}"),
        ):
            cell.locator(".jp-InputPrompt").first.click()
            page.keyboard.press("Shift+Enter")
            cell.locator(".jp-OutputArea-output", has_text=expected).first.wait_for(
                timeout=ui.KERNEL_TIMEOUT_MS
            )
