"""What the hub's MLflow UI service changes on the way to MLflow and back (no hub here)."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from mlflow_lab.classroom.settings import MLFLOW_UI_PATH
from tests.helpers import container_module

rules = container_module("hub", "mlflow_ui_rules")

PREFIX = "/services/mlflow/"
BROWSER = [
    ("Host", "class.example.org"),
    ("Cookie", "jupyterhub-services-mlflow=secret; _xsrf=x"),
    ("Authorization", "token the-users-hub-token"),
    ("Origin", "https://class.example.org"),
    ("Referer", "https://class.example.org/services/mlflow/"),
    ("Connection", "keep-alive, X-Private"),
    ("X-Private", "for the next hop only"),
    ("Keep-Alive", "timeout=5"),
    ("Content-Length", "17"),
    ("X-Forwarded-For", "10.0.0.9"),
    ("Content-Type", "application/json"),
    ("Accept-Encoding", "gzip"),
]


def sent(incoming: list[tuple[str, str]], user: str = "alice") -> dict[str, list[str]]:
    headers = rules.request_headers(incoming, user=user, password="pw-1", instructor="instructor")
    found: dict[str, list[str]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    return found


def test_the_service_is_where_the_host_tools_say() -> None:
    assert f"/services/{rules.SERVICE}/" == MLFLOW_UI_PATH


def test_the_prefix_goes_and_paths_outside_it_are_not_mlflows() -> None:
    assert rules.upstream_path("/services/mlflow/", PREFIX) == "/"
    assert (
        rules.upstream_path("/services/mlflow/ajax-api/2.0/mlflow/runs/search", PREFIX)
        == "/ajax-api/2.0/mlflow/runs/search"
    )
    assert rules.upstream_path("/services/mlflow/static-files/x.js", PREFIX) == "/static-files/x.js"
    assert rules.upstream_path("/services/mlflowx/", PREFIX) is None
    assert rules.upstream_path("/hub/api/users", PREFIX) is None


def test_mlflow_gets_the_users_login_and_none_of_the_browsers() -> None:
    got = sent(BROWSER)
    assert got["authorization"] == ["Basic " + base64.b64encode(b"alice:pw-1").decode()]
    for gone in (
        "cookie",
        "host",
        "origin",
        "referer",
        "connection",
        "keep-alive",
        "x-private",
        "content-length",
        "x-forwarded-for",
    ):
        assert gone not in got, gone
    assert got["content-type"] == ["application/json"]
    assert got["accept-encoding"] == ["gzip"]


def test_a_student_always_lands_in_their_own_workspace() -> None:
    assert sent(BROWSER)["x-mlflow-workspace"] == ["alice"]
    assert sent([("X-MLFLOW-WORKSPACE", "")])["x-mlflow-workspace"] == ["alice"]
    assert sent([("X-MLFLOW-WORKSPACE", "bob")])["x-mlflow-workspace"] == ["alice"]
    assert sent([("x-mlflow-workspace", "default")])["x-mlflow-workspace"] == ["alice"]
    twice = [("X-MLFLOW-WORKSPACE", "alice"), ("X-MLFLOW-WORKSPACE", "bob")]
    assert sent(twice)["x-mlflow-workspace"] == ["alice"]


def test_the_instructor_keeps_the_workspace_the_ui_chose() -> None:
    assert sent([("X-MLFLOW-WORKSPACE", "bob")], "instructor")["x-mlflow-workspace"] == ["bob"]
    assert "x-mlflow-workspace" not in sent([("X-MLFLOW-WORKSPACE", "")], "instructor")
    assert "x-mlflow-workspace" not in sent(BROWSER, "instructor")


# MLflow 3.17's answer, as the class's server gives it.
SERVER_INFO = {
    "store_type": "SqlStore",
    "workspaces_enabled": True,
    "trace_archival_enabled": False,
    "features_enabled": {"gateway": True},
}


def test_a_students_ui_is_told_of_no_workspaces_so_it_opens_on_their_experiments() -> None:
    info = "/ajax-api/3.0/mlflow/server-info"
    assert rules.rewrites_answer("GET", info, "alice", "instructor")
    got = json.loads(rules.server_info_for_student(json.dumps(SERVER_INFO).encode()))
    assert got == {**SERVER_INFO, "workspaces_enabled": False}
    # The instructor's UI keeps its workspace list and selector; nothing else is changed.
    assert not rules.rewrites_answer("GET", info, "instructor", "instructor")
    assert not rules.rewrites_answer("HEAD", info, "alice", "instructor")
    for other in ("/ajax-api/3.0/mlflow/workspaces", "/", "/api/3.0/mlflow/server-info"):
        assert not rules.rewrites_answer("GET", other, "alice", "instructor"), other


def test_a_server_info_answer_that_is_not_mlflows_passes_unchanged() -> None:
    for body in (b"", b"<html>gateway timeout</html>", b"[]", b'{"error_code": "X"}'):
        assert rules.server_info_for_student(body) == body


def test_the_answer_the_service_reads_comes_uncompressed() -> None:
    read = rules.request_headers(
        BROWSER, user="alice", password="pw-1", instructor="instructor", uncompressed=True
    )
    assert "accept-encoding" not in {name.lower() for name, _ in read}
    assert ("X-MLFLOW-WORKSPACE", "alice") in read


def test_the_browser_gets_no_login_prompt_no_mlflow_cookie_and_stays_under_the_prefix() -> None:
    upstream = [
        ("WWW-Authenticate", 'Basic realm="mlflow"'),
        ("Set-Cookie", "session=abc; Path=/"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "120"),
        ("Location", "/static-files/index.html"),
    ]
    got = dict(rules.response_headers(upstream, PREFIX))
    assert got == {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Content-Length": "120",
        "Location": "/services/mlflow/static-files/index.html",
    }
    # Locations that are not MLflow's own paths are left as they are.
    for elsewhere in ("//evil.example/x", "https://mlflow.org/docs", "#/experiments"):
        assert dict(rules.response_headers([("Location", elsewhere)], PREFIX)) == {
            "Location": elsewhere
        }


def test_only_a_same_origin_fetch_skips_the_xsrf_token() -> None:
    assert rules.same_origin_fetch([("Sec-Fetch-Site", "same-origin")])
    assert not rules.same_origin_fetch([("Sec-Fetch-Site", "cross-site")])
    assert not rules.same_origin_fetch([("Sec-Fetch-Site", "same-site")])
    assert not rules.same_origin_fetch([])


header_names = st.sampled_from(
    ["Cookie", "authorization", "X-MLFLOW-WORKSPACE", "Connection", "Host", "Accept", "X-A"]
)
header_values = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=20)


@given(st.lists(st.tuples(header_names, header_values), max_size=12))
def test_whatever_the_browser_sends_mlflow_sees_only_the_students_login(
    incoming: list[tuple[str, str]],
) -> None:
    got = sent(incoming, "bob")
    assert got["authorization"] == ["Basic " + base64.b64encode(b"bob:pw-1").decode()]
    assert got["x-mlflow-workspace"] == ["bob"]
    assert "cookie" not in got and "host" not in got and "connection" not in got
