"""docker/jupyter/lab_probe.py, the probes verify runs in the Jupyter container."""

from __future__ import annotations

import builtins
import http.server
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import container_module, free_port, served

lab_probe = container_module("jupyter", "lab_probe")


def test_missing_files_are_the_absent_and_the_non_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "notebook.ipynb").mkdir()  # a folder by that name is no notebook
    names = ["README.md", "notebook.ipynb", "lab.py"]
    assert lab_probe.missing_files(str(tmp_path), names) == ["notebook.ipynb", "lab.py"]
    assert lab_probe.missing_files(str(tmp_path / "none"), ["README.md"]) == ["README.md"]
    assert lab_probe.missing_files(str(tmp_path), []) == []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = {
            "/ok": (200, b'{"experiments": []}'),
            "/refused": (403, b"Invalid Host header - possible DNS rebinding attack detected"),
            "/long": (200, b"x" * 1000),
        }.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # The probe uses the notebooks' proxy settings; none here, so the local server is reached.
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with served(Handler) as url:
        yield url


def test_notebook_get_reports_status_and_body(server: str) -> None:
    assert lab_probe.notebook_get(f"{server}/ok", 5) == {
        "status": 200,
        "body": '{"experiments": []}',
    }
    refused = lab_probe.notebook_get(f"{server}/refused", 5)
    assert refused["status"] == 403 and "Invalid Host header" in refused["body"]
    assert len(lab_probe.notebook_get(f"{server}/long", 5)["body"]) == 400, "a bounded read"


def test_notebook_get_of_nothing_listening_is_status_0() -> None:
    found = lab_probe.notebook_get(f"http://127.0.0.1:{free_port()}/", 5)
    assert found["status"] == 0 and "refused" in found["body"].lower()


def test_main_prints_one_json_document(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab_probe.main(["notebook-get", f"{server}/ok", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == 200
    assert lab_probe.main(["missing-files", str(tmp_path), '["a.txt"]']) == 0
    assert json.loads(capsys.readouterr().out) == ["a.txt"]


MOUNTINFO = (
    "22 1 0:21 / / rw,relatime - overlay overlay rw\n"
    "80 22 8:1 /volumes/x/_data /home/student/workspace rw,relatime - ext4 /dev/sda1 rw\n"
    "81 80 8:1 /volumes/a/_data /home/student/workspace/mlartifacts ro,relatime - ext4 "
    "/dev/sda1 rw\n"
)


@pytest.fixture
def mountinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = builtins.open

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if file == "/proc/self/mountinfo":
            return io.StringIO(MOUNTINFO)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(lab_probe, "open", fake_open, raising=False)


def test_artifact_view_reads_the_mount_options(mountinfo: None) -> None:
    store = "/home/student/workspace/mlartifacts"
    assert lab_probe.artifact_view(store, "", "") == {
        "mounted": True,
        "readonly": True,
        "same": None,
    }
    workspace = lab_probe.artifact_view("/home/student/workspace", "", "")
    assert workspace["mounted"] and not workspace["readonly"]
    assert lab_probe.artifact_view("/nowhere", "", "")["mounted"] is False


def test_artifact_view_compares_the_uploaded_artifact(mountinfo: None, tmp_path: Path) -> None:
    (tmp_path / "7" / "r1").mkdir(parents=True)
    (tmp_path / "7" / "r1" / "verify.txt").write_text("payload", encoding="utf-8")
    assert lab_probe.artifact_view(str(tmp_path), "7/r1/verify.txt", "payload")["same"] is True
    assert lab_probe.artifact_view(str(tmp_path), "7/r1/verify.txt", "other")["same"] is False
    assert lab_probe.artifact_view(str(tmp_path), "7/r1/absent.txt", "payload")["same"] is False
