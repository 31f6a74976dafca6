"""The course repo in every student's workspace (issue 15), and the hub restarted under a
running server, on the package's class redeployed with a served course repo.

Runs after every other module of the package (conftest orders it last): it redeploys the
class with settings of its own, and puts the package's settings back at the end.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from mlflow_lab.classroom.hub import Hub
from tests.e2e.classroom.conftest import Classroom, docker
from tests.e2e.conftest import CourseServer, served_course_repo

COURSE = "MLOps"  # the repo's name, the folder each student finds it in
STUDENTS = ("cora", "dan")
EDIT = "cora's notes\n"
OWN_NOTEBOOK = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                                 "nbformat_minor": 5}}  # fmt: skip


@pytest.fixture(scope="module")
def course(
    classroom: Classroom, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CourseServer]:
    """The class redeployed with a course repo served on loopback (GitHub is out of reach);
    the package's settings back afterwards, for whatever runs next."""
    saved = {name: classroom.env[name] for name in ("LAB_REPO_URL", "LAB_CLASS_IDLE_MINUTES")}
    with served_course_repo(tmp_path_factory.mktemp("course-served"), COURSE) as served:
        try:
            classroom.redeploy(LAB_REPO_URL=served.url)
            yield served
        finally:
            classroom.redeploy(**saved)


@pytest.fixture(scope="module")
def passwords(
    classroom: Classroom, course: CourseServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    roster = tmp_path_factory.mktemp("course-roster") / "class.csv"
    roster.write_text("username\n" + "\n".join(STUDENTS) + "\n")
    classroom.invoke("classroom.students", "add", str(roster))
    found = classroom.passwords()
    return {user: found[user] for user in STUDENTS}


def course_file(session: Hub, user: str, name: str) -> tuple[int, str]:
    """A file of the course folder in the user's workspace, through their Jupyter server."""
    path = f"/user/{user}/api/contents/{COURSE}/{name}?type=file&format=text&content=1"
    status, _, text = session.request("GET", path)
    return status, json.loads(text).get("content", "") if status == 200 else text


def course_listing(session: Hub, user: str) -> set[str]:
    status, _, text = session.request("GET", f"/user/{user}/api/contents/{COURSE}?content=1")
    assert status == 200, text
    return {entry["name"] for entry in json.loads(text)["content"]}


def restart(classroom: Classroom, session: Hub, user: str) -> None:
    """The user's server stopped and started again, as they would from the hub's page."""
    session.api("DELETE", f"/users/{user}/server", ok=(400, 404))
    classroom.spawn(session, user)


def teacher_commits(course: CourseServer, files: dict[str, str]) -> None:
    for name, text in files.items():
        (course.work / name).write_text(text, encoding="utf-8")
    git = ["git", "-c", "user.name=Teacher", "-c", "user.email=t@example.org", "-C"]
    subprocess.run([*git, str(course.work), "add", "-A"], check=True, timeout=30)
    subprocess.run([*git, str(course.work), "commit", "-qm", "next"], check=True, timeout=30)


def test_each_student_finds_the_course_repo_in_their_workspace(
    classroom: Classroom, passwords: dict[str, str]
) -> None:
    for user in STUDENTS:
        session = classroom.login(user, passwords[user])
        classroom.spawn(session, user)
        assert course_file(session, user, "README.md") == (200, "v1\n"), user
        assert course_listing(session, user) >= {"01_intro.ipynb", "README.md"}, user


def test_a_course_edit_and_a_students_own_file_survive_a_restart_and_down_up(
    classroom: Classroom, passwords: dict[str, str]
) -> None:
    session = classroom.login("cora", passwords["cora"])
    edit = {"type": "file", "format": "text", "content": EDIT}
    status, _, text = session.request("PUT", f"/user/cora/api/contents/{COURSE}/README.md", edit)
    assert status in (200, 201), text
    own = f"/user/cora/api/contents/{COURSE}/cora_experiments.ipynb"
    status, _, text = session.request("PUT", own, OWN_NOTEBOOK)
    assert status in (200, 201), text

    restart(classroom, session, "cora")
    assert course_file(session, "cora", "README.md") == (200, EDIT)
    assert "cora_experiments.ipynb" in course_listing(session, "cora")

    classroom.invoke("classroom.down", timeout=600)
    classroom.invoke("classroom.up", timeout=900)
    session = classroom.login("cora", passwords["cora"])
    classroom.spawn(session, "cora")
    assert course_file(session, "cora", "README.md") == (200, EDIT)
    assert "cora_experiments.ipynb" in course_listing(session, "cora")


def test_a_new_upstream_commit_arrives_without_overwriting_a_students_edit(
    classroom: Classroom, course: CourseServer, passwords: dict[str, str]
) -> None:
    teacher_commits(course, {"README.md": "v2\n", "02_next.ipynb": '{"cells": []}\n'})
    classroom.invoke("classroom.up", timeout=900)  # fetches the course repo again
    sessions = {user: classroom.login(user, passwords[user]) for user in STUDENTS}
    for user, session in sessions.items():
        restart(classroom, session, user)
        assert "02_next.ipynb" in course_listing(sessions[user], user), user
    assert course_file(sessions["cora"], "cora", "README.md") == (200, EDIT), "her edit wins"
    assert "cora_experiments.ipynb" in course_listing(sessions["cora"], "cora")
    # dan changed nothing: upstream's new README is his.
    assert course_file(sessions["dan"], "dan", "README.md") == (200, "v2\n")


def hub_task(classroom: Classroom) -> str:
    return docker(
        "service", "ps", "-q", "--filter", "desired-state=running", f"{classroom.stack}_hub"
    ).stdout.strip()


def test_a_redeploy_that_restarts_the_hub_is_ready_only_once_login_and_servers_answer(
    classroom: Classroom, passwords: dict[str, str]
) -> None:
    session = classroom.login("dan", passwords["dan"])
    status, _, _ = session.request("GET", "/user/dan/api/status")
    assert status == 200, "dan's server runs through the hub before the redeploy"
    before = hub_task(classroom)
    # A setting the hub reads at start: Swarm replaces the hub's task under dan's server.
    up = classroom.redeploy(LAB_CLASS_IDLE_MINUTES="61")
    returned = time.monotonic()
    assert f"The class is ready: {classroom.url}" in up.stdout, up.stdout
    assert hub_task(classroom) not in ("", before), "the redeploy did not restart the hub"
    # Right away, no retry: "ready" means a student can log in now.
    status, _, page = Hub(classroom.url).request("GET", "/hub/login", timeout=10)
    assert status == 200 and 'name="password"' in page, status
    assert time.monotonic() - returned < 10
    # dan's server kept running, and the restarted hub leads him to it (his session kept).
    status, _, text = session.request("GET", "/user/dan/api/status", timeout=10)
    assert status == 200, text
    assert Hub(classroom.url).login("cora", passwords["cora"])
