"""The class's MLflow UI behind the hub's login (/services/mlflow/), over HTTP and in a
real browser: each student sees their own work, the instructor everyone's.

Two students of this module run the lab in their servers once (module fixture); every
request here comes from this machine through the hub's published port, as a browser's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page

from mlflow_lab.classroom.settings import MLFLOW_UI_PATH
from mlflow_lab.lab import screenshots as ui
from tests.e2e.classroom.conftest import Classroom, docker
from tests.e2e.classroom.test_classroom import LAB_SCRIPT
from tests.e2e.pages import screenshot_on_failure

STUDENTS = ("carol", "dave")  # not test_classroom's: its module removes and restores its own
API = f"{MLFLOW_UI_PATH}ajax-api/2.0/mlflow"
# What a browser adds to the UI's own fetches (no page can forge them): what lets them
# through without an XSRF token.
FETCH = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
TIMEOUT_S = 30
SERVICE_LINK = "mlflow"  # the service's name, as the hub's menu shows it


@pytest.fixture(scope="module")
def students(classroom: Classroom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two students, each of whom has run the lab once in their own server."""
    roster = tmp_path_factory.mktemp("ui-roster") / "class.csv"
    roster.write_text("username,name\n" + "".join(f"{s},{s.title()}\n" for s in STUDENTS))
    classroom.invoke("classroom.students", "add", str(roster))
    passwords = {s: classroom.passwords()[s] for s in STUDENTS}
    containers = {s: classroom.spawn(classroom.login(s, passwords[s]), s) for s in STUDENTS}

    def run_lab(user: str) -> tuple[int, str]:
        done = docker("exec", containers[user], "python3", LAB_SCRIPT, check=False, timeout=900)
        return done.returncode, done.stdout[-2000:] + done.stderr[-3000:]

    with ThreadPoolExecutor(2) as pool:
        for user, (code, output) in zip(STUDENTS, pool.map(run_lab, STUDENTS), strict=True):
            assert code == 0, f"{user}'s lab run failed:\n{output}"
    return passwords


def hub_session(classroom: Classroom, user: str, password: str) -> requests.Session:
    """A browser's session: logged in through /hub/login, as a person does."""
    session = requests.Session()
    session.trust_env = False  # this machine's hub, never through a proxy
    page = session.get(f"{classroom.url}/hub/login", timeout=TIMEOUT_S)
    found = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    xsrf = found.group(1) if found else session.cookies.get("_xsrf", "")
    done = session.post(
        f"{classroom.url}/hub/login?next=",
        data={"username": user, "password": password, "_xsrf": xsrf},
        timeout=TIMEOUT_S,
    )
    assert done.ok and "/hub/login" not in done.url, f"{user} could not log in"
    return session


@pytest.fixture(scope="module")
def sessions(classroom: Classroom, students: dict[str, str]) -> dict[str, requests.Session]:
    """Each student's and the instructor's session, past the service's OAuth round trip."""
    logins = {**students, "instructor": classroom.secret("instructor-password")}
    found = {}
    for user, password in logins.items():
        session = hub_session(classroom, user, password)
        page = session.get(classroom.url + MLFLOW_UI_PATH, timeout=TIMEOUT_S)
        assert page.status_code == 200, f"{user}: {page.status_code} at {page.url}"
        assert page.url == classroom.url + MLFLOW_UI_PATH, page.url
        assert "static-files/static/js/main." in page.text, page.text[:300]
        found[user] = session
    return found


def mlflow(
    classroom: Classroom,
    session: requests.Session,
    method: str,
    path: str,
    workspace: str = "",
    **kwargs: Any,
) -> requests.Response:
    headers = {**FETCH, **({"X-MLFLOW-WORKSPACE": workspace} if workspace else {})}
    return session.request(
        method, f"{classroom.url}{API}/{path}", headers=headers, timeout=TIMEOUT_S, **kwargs
    )


def lab_runs(
    classroom: Classroom, session: requests.Session, workspace: str = ""
) -> dict[str, Any]:
    """The runs of the lab's experiment, as the UI asks for them ({} when none shows)."""
    found = mlflow(
        classroom,
        session,
        "GET",
        "experiments/get-by-name",
        workspace,
        params={"experiment_name": ui.LAB_EXPERIMENT},
    )
    if found.status_code != 200:
        return {}
    experiment = found.json()["experiment"]["experiment_id"]
    runs = mlflow(
        classroom,
        session,
        "POST",
        "runs/search",
        workspace,
        json={"experiment_ids": [experiment], "max_results": 100},
    )
    assert runs.status_code == 200, runs.text
    return {r["info"]["run_id"]: r for r in runs.json().get("runs", [])}


def test_up_and_status_print_the_mlflow_ui_url(classroom: Classroom) -> None:
    url = classroom.url + MLFLOW_UI_PATH
    assert url in classroom.up_output.stdout  # type: ignore[attr-defined]
    assert url in classroom.invoke("classroom.status").stdout
    assert json.loads(classroom.invoke("classroom.status", "--json").stdout)["mlflow_ui_url"] == url


def test_an_anonymous_request_goes_to_the_hubs_login_and_never_to_mlflow(
    classroom: Classroom, students: dict[str, str]
) -> None:
    anonymous = requests.Session()
    anonymous.trust_env = False
    first = anonymous.get(
        f"{classroom.url}{API}/experiments/search", allow_redirects=False, timeout=TIMEOUT_S
    )
    assert first.status_code == 302 and "/hub/api/oauth2/authorize" in first.headers["Location"]
    landed = anonymous.get(f"{classroom.url}{API}/experiments/search", timeout=TIMEOUT_S)
    assert urlsplit(landed.url).path == "/hub/login", landed.url
    assert 'name="password"' in landed.text and '"experiments"' not in landed.text
    posted = anonymous.post(
        f"{classroom.url}{API}/runs/search", json={}, headers=FETCH, timeout=TIMEOUT_S
    )
    assert posted.status_code == 403 and "runs" not in posted.text


def test_each_student_sees_only_their_own_runs_and_the_instructor_sees_both(
    classroom: Classroom, sessions: dict[str, requests.Session]
) -> None:
    carol, dave = (lab_runs(classroom, sessions[s]) for s in STUDENTS)
    assert carol and dave, "a student's UI shows none of their lab runs"
    assert not set(carol) & set(dave)
    # A student naming another's workspace (the UI's selector, a crafted header) still
    # gets their own.
    assert set(lab_runs(classroom, sessions["carol"], "dave")) == set(carol)
    # The instructor (MLflow's admin) picks each student's workspace.
    instructor = sessions["instructor"]
    assert set(lab_runs(classroom, instructor, "carol")) == set(carol)
    assert set(lab_runs(classroom, instructor, "dave")) == set(dave)


def test_a_students_ui_is_told_of_no_workspaces_and_the_instructors_of_them(
    classroom: Classroom, sessions: dict[str, requests.Session]
) -> None:
    """What makes the UI open on the list of workspaces, or on the student's own work."""

    def server_info(user: str) -> requests.Response:
        got = sessions[user].get(
            f"{classroom.url}{MLFLOW_UI_PATH}ajax-api/3.0/mlflow/server-info",
            headers=FETCH,
            timeout=TIMEOUT_S,
        )
        assert got.status_code == 200, got.text
        return got

    student = server_info("carol")
    assert student.json()["workspaces_enabled"] is False, student.text
    # The changed answer's length is its own, not MLflow's.
    assert int(student.headers["Content-Length"]) == len(student.content)
    assert server_info("instructor").json()["workspaces_enabled"] is True


def test_a_student_cannot_fetch_another_students_run_by_id(
    classroom: Classroom, sessions: dict[str, requests.Session]
) -> None:
    carol_run = next(iter(lab_runs(classroom, sessions["carol"])))
    for workspace in ("", "carol"):
        got = mlflow(
            classroom, sessions["dave"], "GET", "runs/get", workspace, params={"run_id": carol_run}
        )
        assert got.status_code in (403, 404), got.text
        assert carol_run not in got.text or "does not exist" in got.text.lower(), got.text
        assert "WWW-Authenticate" not in got.headers
    mine = mlflow(classroom, sessions["carol"], "GET", "runs/get", params={"run_id": carol_run})
    assert mine.status_code == 200 and mine.json()["run"]["info"]["run_id"] == carol_run


def test_a_foreign_sites_request_gets_no_cookie_login(
    classroom: Classroom, sessions: dict[str, requests.Session]
) -> None:
    """A page elsewhere cannot make the student's browser act in MLflow (XSRF)."""
    forged = sessions["carol"].post(
        f"{classroom.url}{API}/experiments/create",
        json={"name": "planted"},
        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
        allow_redirects=False,
        timeout=TIMEOUT_S,
    )
    assert forged.status_code == 403, forged.text
    created = mlflow(
        classroom, sessions["carol"], "GET", "experiments/get-by-name",
        params={"experiment_name": "planted"},
    )  # fmt: skip
    assert created.status_code == 404, created.text


def test_artifacts_stream_through_with_no_mlflow_login_in_the_browser(
    classroom: Classroom, sessions: dict[str, requests.Session]
) -> None:
    session = sessions["carol"]
    runs = lab_runs(classroom, session)
    shown = next(r for r in runs.values() if r["info"]["run_name"] == ui.ARTIFACT_RUN)
    got = session.get(
        f"{classroom.url}{MLFLOW_UI_PATH}get-artifact",
        params={"path": ui.ARTIFACT_PNG, "run_uuid": shown["info"]["run_id"]},
        headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors"},
        stream=True,
        timeout=TIMEOUT_S,
    )
    assert got.status_code == 200, got.text[:300]
    assert got.raw.read(8) == b"\x89PNG\r\n\x1a\n"
    for header in ("WWW-Authenticate", "Set-Cookie"):
        assert header not in got.headers
    cookies = " ".join(f"{c.name}={c.value}" for c in session.cookies)
    assert classroom.passwords()["carol"] not in cookies


# --------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with ui.chromium() as chromium:
        yield chromium


@contextmanager
def user_page(browser: Browser, tmp_path: Path, name: str) -> Iterator[Page]:
    """A fresh browser profile; a failure inside names a screenshot of the page."""
    page = ui.new_page(browser)
    try:
        with screenshot_on_failure(page, tmp_path, name):
            yield page
    finally:
        page.context.close()


def browser_login(page: Page, classroom: Classroom, user: str, password: str) -> None:
    page.goto(f"{classroom.url}/hub/login")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    page.locator("input[type=submit], button[type=submit]").first.click()
    page.wait_for_url(re.compile(r".*/(hub/(home|spawn|spawn-pending)|user)/.*"))


def open_lab_runs(page: Page, lab: tuple[str, list[str]], *, from_sidebar: bool) -> None:
    """The lab's experiment (ID, run names) in the UI's workspace, until its runs show."""
    experiment, runs = lab
    if from_sidebar:
        page.locator("aside").get_by_text("Experiments", exact=True).click()
    main = page.get_by_role("main")
    # By its ID: every workspace has an experiment of that name, and the list of the
    # workspace the UI just left may still show for a moment.
    main.get_by_role("link", name=ui.LAB_EXPERIMENT, exact=True).and_(
        page.locator(f"[href*='/experiments/{experiment}']")
    ).click()
    for name in runs:
        main.get_by_role("link", name=name, exact=True).first.wait_for()


def shown_runs(
    classroom: Classroom, session: requests.Session, workspace: str = ""
) -> tuple[str, list[str]]:
    """The lab's experiment ID and top-level run names (the table folds child runs in)."""
    runs = list(lab_runs(classroom, session, workspace).values())
    assert runs, f"no lab runs in {workspace or 'the own'} workspace"
    top = [
        r["info"]["run_name"]
        for r in runs
        if not any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))
    ]
    return runs[0]["info"]["experiment_id"], sorted(set(top))


def test_a_student_opens_jupyterlab_and_their_runs_in_the_mlflow_ui(
    classroom: Classroom,
    students: dict[str, str],
    sessions: dict[str, requests.Session],
    browser: Browser,
    tmp_path: Path,
) -> None:
    with user_page(browser, tmp_path, "student") as page:
        browser_login(page, classroom, "carol", students["carol"])
        # A named workspace, reset: JupyterLab's default layout, whatever was saved before.
        page.goto(f"{classroom.url}/user/carol/lab/workspaces/mlflow-ui?reset")
        page.locator(".jp-DirListing-item").first.wait_for()
        ui.open_lab_notebook(page, "Python (mlops)")
        # The hub's Services menu leads to the MLflow UI.
        page.goto(f"{classroom.url}/hub/home")
        page.get_by_role("button", name="Services").or_(
            page.get_by_role("link", name="Services")
        ).first.click()
        page.get_by_role("link", name=SERVICE_LINK, exact=True).click()
        page.wait_for_url(f"{classroom.url}{MLFLOW_UI_PATH}**")
        # The UI opens on the student's own experiments, as the lab's does: no list of
        # workspaces to pick from first, and no workspace selector.
        main = page.get_by_role("main")
        lab = shown_runs(classroom, sessions["carol"])
        experiment = main.get_by_role("link", name=ui.LAB_EXPERIMENT, exact=True).and_(
            page.locator(f"[href*='/experiments/{lab[0]}']")
        )
        experiment.wait_for()
        assert page.get_by_test_id("workspace-list-item").count() == 0
        for workspace in STUDENTS:
            assert main.get_by_role("link", name=workspace, exact=True).count() == 0
        assert page.locator("aside").get_by_role("combobox").count() == 0
        open_lab_runs(page, lab, from_sidebar=False)
        assert page.get_by_text("Cross-origin request blocked").count() == 0


def test_the_instructors_mlflow_ui_shows_every_students_work(
    classroom: Classroom, sessions: dict[str, requests.Session], browser: Browser, tmp_path: Path
) -> None:
    with user_page(browser, tmp_path, "instructor") as page:
        browser_login(page, classroom, "instructor", classroom.secret("instructor-password"))
        page.goto(f"{classroom.url}{MLFLOW_UI_PATH}")
        # The UI opens on the list of every student's workspace.
        main = page.get_by_role("main")
        for student in STUDENTS:
            main.get_by_role("link", name=student, exact=True).wait_for()
        for number, student in enumerate(STUDENTS):
            # The workspace selector in the UI's sidebar.
            page.locator("aside").get_by_role("combobox").first.click()
            page.get_by_role("option", name=student, exact=True).click()
            lab = shown_runs(classroom, sessions["instructor"], student)
            open_lab_runs(page, lab, from_sidebar=number == 0)
