"""HTTP to the class's hub: its REST API (with the instructor's token) and its login page.

Never through a proxy from the environment (see mlflow_lab.core.http). With HTTPS the
instructor's own certificate is the trust anchor: the tools talk to this machine's hub.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_lab.core.errors import LabError

TIMEOUT_S = 30.0
# GET /users answers one page (JupyterHub's api_page_default_limit, 50), so a class's
# users are read page by page. 200 is the largest page a hub gives by default
# (api_page_max_limit): a class of 100 is one request.
USERS_PAGE_SIZE = 200
# JupyterHub's documented opt-in to pages that say where the next one starts.
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}
MAX_PAGES = 1000  # a bound on a hub whose `next` never ends, far past any class


class HubError(LabError):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _context(cafile: Path | None) -> ssl.SSLContext | None:
    if cafile is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(str(cafile))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    # The address is this machine's, not the certificate's name; the certificate is pinned.
    context.check_hostname = False
    return context


@dataclass
class Hub:
    url: str  # e.g. http://127.0.0.1:8000
    token: str = ""
    cafile: Path | None = None
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def _opener(self) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(self.jar),
        ]
        context = _context(self.cafile)
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = TIMEOUT_S,
    ) -> tuple[int, str, str]:
        """(status, final URL, body text); HTTP errors are answers, not exceptions."""
        data = None
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"token {self.token}"
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with self._opener().open(req, timeout=timeout) as response:
                return response.status, response.geturl(), response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubError(f"the hub at {self.url} does not answer ({reason})") from None

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: tuple[int, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The hub's REST API; the parsed answer, HubError on an unexpected status."""
        status, _, text = self.request(method, f"/hub/api{path}", body, headers=headers)
        if status >= 400 and status not in ok:
            message = text
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(text).get("message", text)
            raise HubError(f"hub API {method} {path} answered {status}: {message}", status)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def users(self, page_size: int = USERS_PAGE_SIZE) -> list[dict[str, Any]]:
        """Every user model of the hub, read page by page."""
        found: list[dict[str, Any]] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = self.api("GET", f"/users?offset={offset}&limit={page_size}", headers=PAGINATED)
            if isinstance(page, list):  # a hub before JupyterHub 2: one list, no pages
                return page
            found.extend(page["items"])
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return found
            offset = int(following["offset"])
        raise HubError(f"the hub's user list at {self.url} goes on past {MAX_PAGES} pages")

    def end_sessions(self, user: str) -> None:
        """Stop the user's server and revoke their tokens, keeping the hub's user: its
        stopped server keeps where their workspace is (the hub's class_spawner.py). Their
        login ends with the roster's password (the hub's roster_auth.refresh_user)."""
        self.api("DELETE", f"/users/{user}/server", ok=(400, 404))
        tokens = (self.api("GET", f"/users/{user}/tokens", ok=(404,)) or {}).get("api_tokens", [])
        for token in tokens:
            self.api("DELETE", f"/users/{user}/tokens/{token['id']}", ok=(404,))

    def answers(self) -> bool:
        try:
            status, _, _ = self.request("GET", "/hub/api/", timeout=3)
        except HubError:
            return False
        return status == 200

    def login_page_answers(self) -> bool:
        """Whether /hub/login shows its form, as it does to a visitor (no token, no cookie)."""
        try:
            status, _, page = Hub(self.url, cafile=self.cafile).request(
                "GET", "/hub/login", timeout=3
            )
        except HubError:
            return False
        return status == 200 and 'name="password"' in page

    # -- as a student, through the real login page -------------------------------------

    def _xsrf(self) -> str:
        for cookie in self.jar:
            if cookie.name == "_xsrf":
                return urllib.parse.unquote(cookie.value or "")
        return ""

    def login(self, username: str, password: str) -> bool:
        """Log in through /hub/login as a browser does; True when the hub let us in."""
        status, _, page = self.request("GET", "/hub/login")
        match = re.search(r'name="_xsrf" value="([^"]+)"', page)
        xsrf = match.group(1) if match else self._xsrf()
        form = {"username": username, "password": password, "_xsrf": xsrf}
        status, final, _ = self.request("POST", "/hub/login?next=", form=form)
        return (
            status < 400
            and "/hub/login" not in final
            and any(c.name.startswith("jupyterhub-hub-login") for c in self.jar)
        )

    def user_token(self, username: str, note: str = "mlflow-lab") -> str:
        """A token for this logged-in user (made with their session, as the token page does)."""
        status, _, text = self.request(
            "POST",
            f"/hub/api/users/{username}/tokens",
            {"note": note, "expires_in": 3600},
            headers={"X-XSRFToken": self._xsrf(), "Referer": self.url + "/hub/token"},
        )
        if status != 201 and status != 200:
            raise HubError(f"the hub did not give {username} a token ({status}): {text[:200]}")
        return str(json.loads(text)["token"])


def wait_ready(hub: Hub, username: str, timeout: float = 300) -> dict[str, Any]:
    """Wait until the user's server is ready; its model from the hub's API."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = hub.api("GET", f"/users/{username}") or {}
        server = (last.get("servers") or {}).get("", {})
        if server.get("ready"):
            return last
        # No early "it stopped": right after the spawn request the model may not show the
        # server yet. The hub gives up on its own after Spawner.start_timeout.
        time.sleep(1)
    raise HubError(f"{username}'s server was not ready within {timeout:g} s: see the hub's log")
