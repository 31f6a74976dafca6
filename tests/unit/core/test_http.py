"""Probes of the lab's own ports: direct, whatever proxy the environment names."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import pytest

from mlflow_lab.core import http as local_http
from tests.helpers import free_port, served


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    with served(Ok) as url:
        yield url


def test_a_proxy_in_the_environment_is_not_used_for_the_lab(
    monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    # A proxy that is not there, and no NO_PROXY: as on many classroom machines.
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert local_http.answers(f"{server}/health")
    assert not local_http.answers(f"{server}/missing")


def test_nothing_listening_is_no_answer() -> None:
    assert not local_http.answers(f"http://127.0.0.1:{free_port()}/health", timeout=0.5)
