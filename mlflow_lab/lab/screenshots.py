"""The lab's two UIs in headless Chromium: the README's screenshots and the browser tests.

`invoke screenshots` writes docs/*.png from the running lab; tests/e2e/test_browser.py
drives the very same pages through these helpers, so the pictures show what the tests
check. Playwright drives Debian's Chromium: a browser download is not possible in an
offline classroom, and Playwright is imported only when a browser is wanted, so the
other tasks work without the dev requirements.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.http import DIRECT
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab.compose import JUPYTER, LabCompose
from mlflow_lab.lab.course import BUNDLED_LAB_DIR
from mlflow_lab.lab.layout import WORKSPACE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Chromium's own background calls (component updates, sync, field trials) are
    # refused on a closed network; without these flags they keep connections pending
    # and a "network idle" wait never ends.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
# Both UIs are single-page apps: the load event comes with an empty skeleton and the
# content only once their first API calls answer, so every wait is for content, bounded.
UI_TIMEOUT_MS = 30_000
# The lab's first cell imports torch, sklearn and MLflow: seconds on 2 cores, more under load.
KERNEL_TIMEOUT_MS = 120_000
HTTP_TIMEOUT_S = 10
LAB_SCRIPT_TIMEOUT_S = 600

DOCS_DIR = PROJECT_ROOT / "docs"
LAB_EXPERIMENT = "mlflow-tracking-lab"
LAB_NOTEBOOK = f"{BUNDLED_LAB_DIR}/mlflow_tracking_lab.ipynb"
LAB_SCRIPT = f"{WORKSPACE}/{BUNDLED_LAB_DIR}/mlflow_tracking_lab.py"
# Runs of the bundled lab the pictures and tests look at (names set in lab/).
CHART_RUN = "pytorch-mlp"  # a metric logged over 30 steps, and a logged model
CHART_METRIC = "train_loss"
ARTIFACT_RUN = "artifacts-demo"
ARTIFACT_PNG = "plots/loss_curve.png"
# A JupyterLab layout of its own, deleted afterwards: the student's layout stays as it was.
SCREENSHOT_WORKSPACE = "mlflow-lab-screenshots"


@dataclass(frozen=True)
class LabRuns:
    """The lab's experiment in MLflow and the newest run of each name."""

    experiment_id: str
    runs: dict[str, str]

    def run_id(self, name: str) -> str:
        if name not in self.runs:
            raise LabError(f"the lab's experiment has no run named {name!r}: run the lab again")
        return self.runs[name]


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with DIRECT.open(request, timeout=HTTP_TIMEOUT_S) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        raise LabError(f"{method} {url} answered {exc.code}: see `invoke logs`") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"{url} does not answer ({exc}): is the lab up? (`invoke status`)") from None
    return json.loads(text) if text else None


def find_lab_runs(mlflow_url: str) -> LabRuns | None:
    """The lab's runs from MLflow's REST API; None when the lab has not run yet."""
    api = f"{mlflow_url}/api/2.0/mlflow"
    found = http_json("POST", f"{api}/experiments/search", {"max_results": 1000})
    ids = [e["experiment_id"] for e in found.get("experiments", []) if e["name"] == LAB_EXPERIMENT]
    if not ids:
        return None
    search = {"experiment_ids": ids, "max_results": 1000, "order_by": ["attributes.start_time ASC"]}
    runs = http_json("POST", f"{api}/runs/search", search).get("runs", [])
    # Oldest first, so the newest run of each name wins.
    newest = {r["info"]["run_name"]: r["info"]["run_id"] for r in runs}
    return LabRuns(ids[0], newest) if newest else None


def run_lab_script(settings: Settings) -> None:
    """Run the bundled lab top to bottom in the Jupyter container, as a student would."""
    script = PurePosixPath(LAB_SCRIPT)
    result = LabCompose(settings).exec(
        JUPYTER, "python3", script.name, workdir=str(script.parent), timeout=LAB_SCRIPT_TIMEOUT_S
    )
    if not result.ok:
        raise LabError(f"the lab script failed in the jupyter container: {result.last_line()}")


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise LabError(
            "Playwright is not installed: .venv/bin/pip install -r requirements-dev.txt"
        ) from None
    if not CHROMIUM.exists():
        raise LabError(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser) -> Page:
    """A page in a fresh profile: empty localStorage, as on a student's first visit."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context.new_page()


# --------------------------------------------------------------------------- MLflow UI


def open_mlflow_home(page: Page, mlflow_url: str) -> None:
    page.goto(f"{mlflow_url}/")
    page.get_by_text("Welcome to MLflow").wait_for()


def open_runs(page: Page, mlflow_url: str, lab: LabRuns) -> None:
    """The lab's experiment page, once its runs table shows the lab's runs."""
    page.goto(f"{mlflow_url}/#/experiments/{lab.experiment_id}")
    page.get_by_role("link", name=CHART_RUN, exact=True).first.wait_for()


def open_run(page: Page, mlflow_url: str, lab: LabRuns, name: str, tab: str = "") -> None:
    """A run's page (tab: "" for the overview, or e.g. "model-metrics", "artifacts")."""
    url = f"{mlflow_url}/#/experiments/{lab.experiment_id}/runs/{lab.run_id(name)}"
    page.goto(f"{url}/{tab}" if tab else url)
    page.get_by_role("heading", name=name).first.wait_for()


def open_metric_chart(page: Page, mlflow_url: str, lab: LabRuns) -> None:
    open_run(page, mlflow_url, lab, CHART_RUN, "model-metrics")
    chart_title = page.get_by_text(CHART_METRIC, exact=True).first
    chart_title.wait_for()
    # The line is drawn once the metric history has arrived.
    page.locator(".js-plotly-plot .scatterlayer path.js-line").first.wait_for()


# A page expression: the natural width of each <img> on screen (0 until it is decoded).
# The UI previews an artifact from a blob: URL, so the file name is not in its src.
SHOWN_IMAGE_WIDTHS = (
    "() => [...document.images]"
    ".filter(i => i.getBoundingClientRect().width > 0).map(i => i.naturalWidth)"
)


def open_png_artifact(page: Page, mlflow_url: str, lab: LabRuns) -> None:
    """The artifacts tab with the lab's PNG selected, once the preview has decoded it."""
    open_run(page, mlflow_url, lab, ARTIFACT_RUN, "artifacts")
    folder, _, name = ARTIFACT_PNG.rpartition("/")
    if folder:
        page.get_by_text(folder, exact=True).first.click()
    page.get_by_text(name, exact=True).first.click()
    page.get_by_text(ARTIFACT_PNG, exact=True).first.wait_for()  # the preview's title
    page.wait_for_function(f"() => ({SHOWN_IMAGE_WIDTHS})().some(w => w > 0)")


# --------------------------------------------------------------------------- JupyterLab


def open_jupyterlab(page: Page, jupyter_url: str, token: str, workspace: str = "") -> None:
    """JupyterLab logged in with the token, once the file browser lists the workspace."""
    # A named workspace starts from JupyterLab's default layout, whatever it saved last time.
    path = f"/lab/workspaces/{workspace}?reset&" if workspace else "/lab?"
    page.goto(f"{jupyter_url}{path}token={urllib.parse.quote(token)}")
    page.locator(".jp-DirListing-item").first.wait_for()


def file_browser_item(page: Page, name: str) -> Locator:
    return page.locator(".jp-DirListing-item").filter(
        has=page.locator(".jp-DirListing-itemText", has_text=name)
    )


def default_kernel(jupyter_url: str, token: str) -> str:
    """The display name of the Jupyter server's default kernel, from its API."""
    specs = http_json("GET", f"{jupyter_url}/api/kernelspecs?token={urllib.parse.quote(token)}")
    return str(specs["kernelspecs"][specs["default"]]["spec"]["display_name"])


def open_lab_notebook(page: Page, kernel: str) -> None:
    """Open the bundled lab's notebook from the file browser; return once `kernel` is idle."""
    folder, _, name = LAB_NOTEBOOK.rpartition("/")
    file_browser_item(page, folder).first.dblclick()
    file_browser_item(page, name).first.dblclick()
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
    # The status bar names the notebook's kernel and its state once it has started.
    page.locator(".jp-StatusBar-Widget", has_text=f"{kernel} | Idle").first.wait_for(
        timeout=KERNEL_TIMEOUT_MS
    )


# --------------------------------------------------------------------------- the task


def _jupyter_api(settings: Settings, method: str, path: str) -> Any:
    sep = "&" if "?" in path else "?"
    url = f"{settings.jupyter_url}{path}{sep}token={urllib.parse.quote(settings.jupyter_token)}"
    return http_json(method, url)


def take(settings: Settings, out_dir: Path, *, run_lab: bool) -> list[Path]:
    """Screenshots of both UIs as a student sees them after the lab; the files written."""
    lab = find_lab_runs(settings.mlflow_url)
    if lab is None or not {CHART_RUN, ARTIFACT_RUN} <= lab.runs.keys():
        if not run_lab:
            raise LabError(
                "the MLflow UI has no runs of the lab yet: run the lab notebook first, "
                "or pass --run-lab"
            )
        run_lab_script(settings)
        lab = find_lab_runs(settings.mlflow_url)
        if lab is None:
            raise LabError("the lab ran but MLflow shows none of its runs: see `invoke logs`")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def shot(page: Page, name: str) -> None:
        path = out_dir / name
        page.screenshot(path=str(path))
        written.append(path)

    sessions_before = {s["id"] for s in _jupyter_api(settings, "GET", "/api/sessions")}
    try:
        with chromium() as browser:
            from playwright.sync_api import Error as BrowserError

            try:
                page = new_page(browser)
                open_runs(page, settings.mlflow_url, lab)
                shot(page, "mlflow-ui.png")
                open_metric_chart(page, settings.mlflow_url, lab)
                shot(page, "mlflow-run.png")
                open_png_artifact(page, settings.mlflow_url, lab)
                shot(page, "mlflow-artifacts.png")
                page = new_page(browser)
                open_jupyterlab(
                    page, settings.jupyter_url, settings.jupyter_token, SCREENSHOT_WORKSPACE
                )
                open_lab_notebook(
                    page, default_kernel(settings.jupyter_url, settings.jupyter_token)
                )
                shot(page, "jupyterlab.png")
            except BrowserError as exc:
                first = str(exc).strip().splitlines()[0]
                raise LabError(f"the browser did not get to see the lab ({first})") from None
    finally:
        # Only what the pictures started: the kernel of the opened notebook and the layout.
        # Best effort: a failed clean-up must not hide why the pictures failed.
        with contextlib.suppress(LabError):
            for session in _jupyter_api(settings, "GET", "/api/sessions"):
                if session["id"] not in sessions_before:
                    _jupyter_api(settings, "DELETE", f"/api/sessions/{session['id']}")
        with contextlib.suppress(LabError):  # a layout never saved has nothing to delete
            _jupyter_api(settings, "DELETE", f"/lab/api/workspaces/{SCREENSHOT_WORKSPACE}")
    return written
