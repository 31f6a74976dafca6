"""docker/class-notebook/class_bench.py: the lab run with every HTTP call timed, the wait."""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import container_module, free_port, served

class_bench = container_module("class-notebook", "class_bench")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def do_GET(self) -> None:
        status, body = {
            "/api/2.0/mlflow/runs/create": (200, b'{"run": {"info": {"run_id": "r1"}}}'),
            "/api/2.0/mlflow/experiments/get-by-name": (404, b'{"error_code": "NOT_FOUND"}'),
            "/api/2.0/mlflow/runs/log-batch": (503, b"busy"),
            "/api/2.0/mlflow/runs/get": (429, b"slow down"),
        }.get(self.path.split("?")[0], (200, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    with served(Handler) as url:
        yield url


def lab_script(tmp_path: Path, server: str, tail: str = "") -> Path:
    """A stand-in for the lab: MLflow's client calls, through a requests.Session as its own."""
    script = tmp_path / "lab.py"
    script.write_text(
        "import requests\n"
        "s = requests.Session()\n"
        f"base = {server + '/api/2.0/mlflow'!r}\n"
        "print('the lab talks a lot')\n"
        "s.request('GET', base + '/experiments/get-by-name?experiment_name=x')\n"
        "s.request('POST', base + '/runs/create', json={})\n"
        "s.request('POST', base + '/runs/log-batch', json={})\n"
        "s.request('GET', base + '/runs/get?run_id=r1')\n"
        "try:\n"
        f"    s.request('GET', 'http://127.0.0.1:{free_port()}/api/2.0/mlflow/x')\n"
        "except requests.ConnectionError:\n"
        "    pass\n" + tail
    )
    return script


def test_every_call_is_timed_and_server_failures_are_errors(tmp_path: Path, server: str) -> None:
    found = class_bench.run_lab(lab_script(tmp_path, server))
    assert len(found["latencies_s"]) == 5
    assert all(s >= 0 for s in found["latencies_s"])
    # A 404 is part of the lab (an experiment not made yet); 5xx, 429 and no answer are not.
    assert [e.split(":")[0] for e in found["errors"]] == [
        "POST 2.0/mlflow/runs/log-batch",
        "GET 2.0/mlflow/runs/get",
        "GET 2.0/mlflow/x",
    ]
    assert "HTTP 503" in found["errors"][0] and "ConnectionError" in found["errors"][2]
    assert found["run_ids"] == ["r1"]
    assert found["failed"] == ""
    assert len(found["slowest"]) == 3


def test_a_lab_that_raises_is_reported_and_the_wrap_is_undone(tmp_path: Path, server: str) -> None:
    original = requests.Session.request
    found = class_bench.run_lab(lab_script(tmp_path, server, "raise ValueError('cell 7')\n"))
    assert found["failed"] == "ValueError: cell 7"
    assert len(found["latencies_s"]) == 5
    assert requests.Session.request is original


def test_the_lab_runs_in_a_folder_of_its_own(tmp_path: Path, server: str) -> None:
    script = lab_script(tmp_path, server, "open('left.txt', 'w').write('x')\n")
    class_bench.run_lab(script)
    assert not (tmp_path / "left.txt").exists()


def test_ready_waits_for_answers_and_names_what_never_answered(server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/health"
    # A 404 is an answer: the server is up (the check asks only that it answers).
    assert class_bench.wait_ready([f"{server}/nothing-here"], 5)["ready"] is True
    found = class_bench.wait_ready([f"{server}/", dead], 0.5)
    assert found["ready"] is False and found["waiting"] == [dead]


def test_main_prints_one_json_line(
    tmp_path: Path, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert class_bench.main(["lab", str(lab_script(tmp_path, server))]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["run_ids"] == ["r1"]
