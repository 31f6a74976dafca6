"""What the MLflow UI service (mlflow_ui.py) changes in a request and its answer.

No I/O and no third-party imports, so the unit tests run it without JupyterHub or tornado.

- The browser's request reaches MLflow at its own path: the hub's /services/mlflow/
  prefix is removed (MLflow's UI loads everything by relative URLs, so it works under
  the prefix without MLflow's --static-prefix, which would move the REST API too).
- The browser's own credentials never reach MLflow (no hub cookies, no Authorization)
  and MLflow's never reach the browser: the service adds the user's MLflow login itself
  and drops MLflow's WWW-Authenticate, so no basic-auth prompt ever shows.
- A student always works in their own workspace: the UI names its workspace in the
  X-MLFLOW-WORKSPACE header, and any other (or none) becomes theirs. The instructor,
  MLflow's admin, picks any workspace in the UI's selector.
- A student's UI is told the server has no workspaces: with them, the UI opens on a list
  of workspaces to pick from (its home page shows that list until the URL names one), and
  a student has one only. Without, it opens as the lab's single-user UI does, on the
  home page with their experiments, and names no workspace (the service adds theirs).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

# The JupyterHub service's name: the UI is at <hub>/services/<SERVICE>/.
SERVICE = "mlflow"
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"
# Where the UI asks, once per page load, what the server offers; its workspaces_enabled
# decides whether the UI shows workspaces at all (MLflow's handlers.py and the UI's
# RootPage).
SERVER_INFO_PATH = "/ajax-api/3.0/mlflow/server-info"
WORKSPACES_ENABLED = "workspaces_enabled"

# RFC 9110 section 7.6.1, plus the older Keep-Alive/Proxy-Connection a client may send.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Never from the browser to MLflow: its hub login, its own idea of who it is, and the
# headers that describe the hub's address (MLflow checks Host against its allowed hosts
# and refuses state-changing requests from a foreign Origin; the HTTP client sets Host
# and Content-Length for the request it sends).
REQUEST_DROPPED = frozenset(
    {
        "authorization",
        "cookie",
        "host",
        "origin",
        "referer",
        "content-length",
        "x-xsrftoken",
        "x-csrftoken",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-proto",
        "x-real-ip",
        "forwarded",
        WORKSPACE_HEADER.lower(),
    }
)
# Never from MLflow to the browser: a basic-auth challenge would open the browser's
# login prompt, and MLflow's cookies would be set on the hub's whole origin.
RESPONSE_DROPPED = frozenset({"www-authenticate", "set-cookie"})

Headers = list[tuple[str, str]]


def upstream_path(path: str, prefix: str) -> str | None:
    """MLflow's path for the request path under the service's `prefix` (ending in "/");
    None when the path is outside it. The query string is not part of `path`."""
    if not path.startswith(prefix):
        return None
    return "/" + path[len(prefix) :]


def _connection_named(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Headers a Connection header names are hop-by-hop too (RFC 9110 7.6.1)."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }


def basic_auth(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def workspace_for(user: str, instructor: str, asked: str | None) -> str | None:
    """The workspace MLflow is told (None: none, MLflow's default).

    Students work in the workspace named like them (class_accounts.py makes it), so a
    student's request names that one, whatever the UI remembered or left out. The
    instructor's requests keep what the UI's workspace selector chose."""
    if user == instructor:
        return asked or None
    return user


def rewrites_answer(method: str, path: str, user: str, instructor: str) -> bool:
    """Whether the service changes MLflow's answer to this request (MLflow's `path`): a
    student's UI asking what the server offers."""
    return user != instructor and method == "GET" and path == SERVER_INFO_PATH


def server_info_for_student(body: bytes) -> bytes:
    """MLflow's server-info answer as a student's UI gets it: no workspaces. Anything but
    the JSON object MLflow sends passes unchanged."""
    try:
        info = json.loads(body)
    except ValueError:
        return body
    if not isinstance(info, dict) or WORKSPACES_ENABLED not in info:
        return body
    return json.dumps({**info, WORKSPACES_ENABLED: False}).encode()


def request_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    user: str,
    password: str,
    instructor: str,
    uncompressed: bool = False,
) -> Headers:
    """The headers MLflow gets: the browser's, less the dropped ones, with the user's
    MLflow login and, for a student, their own workspace. `uncompressed`: the answer is to be
    read by the service, so MLflow is offered no compression."""
    incoming = list(incoming)
    dropped = HOP_BY_HOP | REQUEST_DROPPED | _connection_named(incoming)
    if uncompressed:
        dropped |= {"accept-encoding"}
    asked = next((v for n, v in incoming if n.lower() == WORKSPACE_HEADER.lower()), None)
    sent = [(n, v) for n, v in incoming if n.lower() not in dropped]
    sent.append(("Authorization", basic_auth(user, password)))
    workspace = workspace_for(user, instructor, asked)
    if workspace:
        sent.append((WORKSPACE_HEADER, workspace))
    return sent


def response_headers(upstream: Iterable[tuple[str, str]], prefix: str) -> Headers:
    """The headers the browser gets from MLflow's answer. A redirect to one of MLflow's
    own paths stays under the service's prefix. The body passes as MLflow sent it (still
    compressed, if it was), so its Content-Length holds."""
    upstream = list(upstream)
    dropped = HOP_BY_HOP | RESPONSE_DROPPED | _connection_named(upstream)
    kept: Headers = []
    for name, value in upstream:
        if name.lower() in dropped:
            continue
        if name.lower() == "location" and value.startswith("/") and not value.startswith("//"):
            value = prefix + value[1:]
        kept.append((name, value))
    return kept


def same_origin_fetch(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether the browser says the request comes from a page of the hub's own origin.

    Browsers set Sec-Fetch-Site themselves and no page can forge it; the MLflow UI's
    fetches send no XSRF token, so this is what tells them from a foreign site's."""
    return any(n.lower() == "sec-fetch-site" and v == "same-origin" for n, v in headers)
