"""A Jupyter token with URL characters reaches Jupyter unchanged from every URL we build."""

from __future__ import annotations

import http.server
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_lab.core import http as local_http
from mlflow_lab.core import settings
from mlflow_lab.lab import stack, startup
from mlflow_lab.lab.compose import LabCompose
from tests.helpers import served

TOKENS = ["a+b", "x&y=1", "t#frag", "50%off", "p/q?r=s", "plain0123"]


@pytest.fixture
def fake_jupyter() -> Iterator[tuple[int, list[str]]]:
    """A server that, like Jupyter (tornado), decodes the query and checks `token`."""
    expected: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            ok = query.get("token") == expected
            self.send_response(200 if ok else 403)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with served(Handler) as url:
        yield int(url.rsplit(":", 1)[1]), expected


def lab_with(tmp_path: Path, token: str, jupyter_port: int) -> settings.Settings:
    return settings.load(
        {
            "LAB_STATE_DIR": str(tmp_path / "state"),
            "LAB_JUPYTER_TOKEN": token,
            "LAB_JUPYTER_PORT": str(jupyter_port),
        },
        env_file=tmp_path / "none.env",
    )


@pytest.mark.parametrize("token", TOKENS)
def test_the_readiness_probe_and_the_printed_url_carry_the_token_unchanged(
    tmp_path: Path,
    fake_jupyter: tuple[int, list[str]],
    token: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, expected = fake_jupyter
    expected.append(token)
    lab = lab_with(tmp_path, token, port)
    # The probe `up` waits on: before the fix `a+b` reached Jupyter as `a b` and `up`
    # waited 300 s, then stopped the lab.
    assert local_http.answers(startup.probe_urls(LabCompose(lab))["jupyter"])
    stack.print_ready(lab)
    printed = capsys.readouterr().out.split("JupyterLab  ", 1)[1].split()[0]
    assert local_http.answers(printed.replace("/lab?", "/api/status?"))
    assert local_http.answers(lab.jupyter_url_with_token.replace("/lab?", "/api/status?"))
