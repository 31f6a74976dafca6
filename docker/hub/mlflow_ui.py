"""The class's MLflow UI behind the hub's login: a JupyterHub service at /services/mlflow/.

The hub starts it (jupyterhub_config.py) on the loopback; the hub's proxy sends it every
request under /services/mlflow/. A request is let through only for a user logged in to
the hub (JupyterHub's OAuth, as for any hub service); the service then asks MLflow in
that user's name, with their MLflow login taken from the hub's encrypted auth_state
(roster_auth.py keeps it there at login): the browser never holds an MLflow password.
What the requests and answers lose or get on the way is in mlflow_ui_rules.py.

Why not jupyter-server-proxy's standalone mode: it proxies one process for the one
user who owns a server, with the same fixed headers for everyone, and brings
jupyter_server into the hub's image; this service needs one shared upstream and each
user's own login and workspace. aiohttp (JupyterHub's own dependency) streams MLflow's
answers with backpressure, so a large artifact never sits whole in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import mlflow_ui_rules as rules
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

log = logging.getLogger("mlflow-ui")

# The hub's config (jupyterhub_config.py) and JupyterHub itself set these for the service.
UPSTREAM = os.environ["LAB_CLASS_MLFLOW_URL"]
INSTRUCTOR = os.environ["LAB_CLASS_INSTRUCTOR"]
PREFIX = os.environ["JUPYTERHUB_SERVICE_PREFIX"]  # /services/mlflow/
# Request bodies are read whole before they go on: the UI sends small JSON, never files.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# A login read from the hub is used this long; a new password (a reset, then a new login)
# is picked up within it, and at once after MLflow refuses the old one.
LOGIN_CACHE_S = 60.0
CHUNK_BYTES = 64 * 1024
NO_LOGIN = "Your MLflow login is not known to the hub: log out of the hub and log in again."
NO_MLFLOW = (
    "The class's MLflow does not answer: try again in a minute (the instructor finds why"
    " with `invoke classroom.logs mlflow`)."
)


class Logins:
    """Each user's MLflow password, read from the hub's auth_state with the service's
    token (scopes read:users:name and admin:auth_state, jupyterhub_config.py)."""

    def __init__(self, api_url: str, api_token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_token = api_token
        self._cache: dict[str, tuple[float, str]] = {}

    async def password(self, http: aiohttp.ClientSession, user: str) -> str | None:
        cached = self._cache.get(user)
        if cached and time.monotonic() - cached[0] < LOGIN_CACHE_S:
            return cached[1]
        url = f"{self.api_url}/users/{quote(user, safe='')}"
        headers = {"Authorization": f"token {self.api_token}"}
        async with http.get(url, headers=headers) as answer:
            if answer.status != 200:
                log.warning("The hub answered %d for %s's model", answer.status, user)
                return None
            model: dict[str, Any] = await answer.json()
        password = (model.get("auth_state") or {}).get("mlflow_password")
        if not isinstance(password, str) or not password:
            return None
        self._cache[user] = (time.monotonic(), password)
        return password

    def forget(self, user: str) -> None:
        self._cache.pop(user, None)


class MLflowProxy(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

    def initialize(self, http: aiohttp.ClientSession, logins: Logins) -> None:
        self.http = http
        self.logins = logins
        self.relaying = False  # MLflow's answer has begun to reach the browser

    def check_xsrf_cookie(self) -> None:
        # The UI's own fetches carry no XSRF token; the browser vouches for their origin.
        if rules.same_origin_fetch(self.request.headers.get_all()):
            return
        super().check_xsrf_cookie()

    @web.authenticated
    async def get(self) -> None:
        await self.forward()

    @web.authenticated
    async def head(self) -> None:
        await self.forward()

    @web.authenticated
    async def post(self) -> None:
        await self.forward()

    @web.authenticated
    async def put(self) -> None:
        await self.forward()

    @web.authenticated
    async def patch(self) -> None:
        await self.forward()

    @web.authenticated
    async def delete(self) -> None:
        await self.forward()

    async def forward(self) -> None:
        path = rules.upstream_path(self.request.path, PREFIX)
        if path is None:
            raise web.HTTPError(404)
        user = self.current_user
        if user.get("kind") != "user":
            raise web.HTTPError(403, "the MLflow UI is for the class's users")
        name = str(user["name"])
        password = await self.logins.password(self.http, name)
        if password is None:
            self.plain(403, NO_LOGIN)
            return
        url = UPSTREAM + path + (f"?{self.request.query}" if self.request.query else "")
        method = self.request.method or "GET"
        rewritten = rules.rewrites_answer(method, path, name, INSTRUCTOR)
        headers = rules.request_headers(
            self.request.headers.get_all(),
            user=name,
            password=password,
            instructor=INSTRUCTOR,
            uncompressed=rewritten,
        )
        try:
            async with self.http.request(
                method,
                url,
                headers=headers,
                data=self.request.body if method not in ("GET", "HEAD") else None,
                allow_redirects=False,
                # Only what the browser asked for: no compression it did not offer.
                skip_auto_headers=("Accept-Encoding", "User-Agent"),
            ) as answer:
                if rewritten:
                    await self.relay_server_info(answer)
                else:
                    await self.relay(answer, name)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s %s for %s: %s", method, path, name, str(exc)[:300])
            if not self.relaying:
                self.plain(502, NO_MLFLOW)

    def relay_headers(self, answer: aiohttp.ClientResponse) -> None:
        self.relaying = True
        self.set_status(answer.status, answer.reason)
        for default in ("Content-Type", "Server"):  # tornado's, not MLflow's
            self.clear_header(default)
        for name, value in rules.response_headers(answer.headers.items(), PREFIX):
            self.add_header(name, value)

    async def relay(self, answer: aiohttp.ClientResponse, user: str) -> None:
        if answer.status == 401:
            self.logins.forget(user)
        self.relay_headers(answer)
        try:
            async for chunk in answer.content.iter_chunked(CHUNK_BYTES):
                self.write(chunk)
                await self.flush()  # waits for a slow browser: backpressure
            self.finish()
        except StreamClosedError:
            pass  # the browser went away; MLflow's answer is dropped with it

    async def relay_server_info(self, answer: aiohttp.ClientResponse) -> None:
        """A small JSON answer, read whole and changed (see rules.server_info_for_student)."""
        body = await answer.read()
        if answer.status == 200 and not answer.headers.get("Content-Encoding"):
            body = rules.server_info_for_student(body)
        self.relay_headers(answer)
        self.set_header("Content-Length", str(len(body)))
        self.finish(body)

    def plain(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text + "\n")


def log_request(handler: web.RequestHandler) -> None:
    # One UI page is dozens of requests: the hub's log keeps only the failed ones.
    status = handler.get_status()
    if status >= 400:
        request = handler.request
        log.warning("%d %s %s (%s)", status, request.method, request.path, request.remote_ip)


def application(http: aiohttp.ClientSession, logins: Logins) -> web.Application:
    return web.Application(
        [
            (PREFIX + "oauth_callback", HubOAuthCallbackHandler),
            (PREFIX.rstrip("/"), web.RedirectHandler, {"url": PREFIX}),
            (PREFIX + ".*", MLflowProxy, {"http": http, "logins": logins}),
        ],
        # Signs the service's own login cookie; a new one after a restart only means a
        # new (invisible) OAuth round trip through the hub.
        cookie_secret=os.urandom(32),
        log_function=log_request,
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[mlflow-ui %(levelname)s] %(message)s")
    # getaddrinfo every time, not c-ares's cache: a restarted MLflow has a new address
    # under the same name (see jupyterhub_config.py).
    connector = aiohttp.TCPConnector(resolver=aiohttp.ThreadedResolver())
    timeout = aiohttp.ClientTimeout(total=None, connect=15, sock_read=600)
    # auto_decompress off: a compressed answer passes on compressed, as MLflow sent it.
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as http:
        logins = Logins(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
        # The hub gives its services their address (jupyterhub_config.py's "url").
        port = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"]).port
        server = HTTPServer(application(http, logins), max_body_size=MAX_REQUEST_BYTES)
        server.listen(port, "127.0.0.1")
        log.info("The MLflow UI at %s goes to %s", PREFIX, UPSTREAM)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
