"""HTTPS on the hub's port with the instructor's certificate, and back to plain HTTP, on
the package's class (redeployed with `classroom.up`, as an instructor does after editing
.env)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlflow_lab.classroom.hub import Hub
from tests.e2e.classroom.conftest import Classroom
from tests.helpers import self_signed_cert

WARNING = "warning: the hub serves plain HTTP"


def login_page_status(url: str, cert: Path) -> int:
    """GET /hub/login the strict way: the certificate as the only CA, its name checked."""
    context = ssl.create_default_context(cafile=str(cert))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(f"{url}/hub/login", timeout=30) as response:
        return int(response.status)


def stop_server(admin: Hub, user: str) -> None:
    """Stop the server a login started, once its start is over: a stop in the middle of a
    spawn is JupyterHub's 500 ("pending spawn") when the spawn does not cancel within 1 s."""
    deadline = time.monotonic() + 120
    while admin.api("GET", f"/users/{user}").get("pending") and time.monotonic() < deadline:
        time.sleep(1)
    admin.api("DELETE", f"/users/{user}/server", ok=(400, 404))
    while admin.api("GET", f"/users/{user}").get("servers") and time.monotonic() < deadline:
        time.sleep(1)


def test_https_with_the_instructors_certificate_then_plain_http_again(
    classroom: Classroom, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    https_url = classroom.url.replace("http://", "https://")
    instructor = classroom.secret("instructor-password")
    plain = {"LAB_CLASS_TLS_CERT": "", "LAB_CLASS_TLS_KEY": ""}
    try:
        up = classroom.redeploy(LAB_CLASS_TLS_CERT=str(cert), LAB_CLASS_TLS_KEY=str(key))
        assert f"The class is ready: {https_url}" in up.stdout, up.stdout
        assert WARNING not in up.stdout + up.stderr
        assert login_page_status(https_url, cert) == 200
        session = Hub(https_url, cafile=cert)
        assert session.login("instructor", instructor)
        # A login starts the user's server; this test needs none running across the switch.
        stop_server(Hub(https_url, classroom.secret("hub-api-token"), cert), "instructor")
        assert not Hub(classroom.url).answers(), "the hub's port still answers plain HTTP"
        report = json.loads(classroom.invoke("classroom.status", "--json").stdout)
        assert report["https"] and report["hub_url"] == https_url
        # Someone else's certificate is no CA for this hub.
        other, _ = self_signed_cert(tmp_path, "other")
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            login_page_status(https_url, other)
    finally:
        back = classroom.redeploy(**plain)
    assert f"The class is ready: {classroom.url}" in back.stdout
    assert WARNING in back.stdout
    assert not (classroom.state_dir / "hub" / "tls").exists()
    assert Hub(classroom.url).login("instructor", instructor)
    stop_server(classroom.admin(), "instructor")
