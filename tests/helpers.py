"""Small helpers shared by the unit and end-to-end tests."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import settings
from mlflow_lab.core.ports import free_port

__all__ = [
    "container_module",
    "fake_california_archive",
    "free_port",
    "isolate_settings",
    "served_folder",
    "wait_until",
]


def isolate_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from a temp state dir, a fixed token and no .env: nothing from this machine."""
    for name in settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LAB_JUPYTER_TOKEN", "t" * 48)
    monkeypatch.setattr(settings, "ENV_FILE", tmp_path / "no.env")


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 1.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # a probe that raises simply is not ready yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def container_module(image: str, name: str) -> ModuleType:
    """A module that runs inside an image (docker/IMAGE/NAME.py), imported for its tests."""
    path = PROJECT_ROOT / "docker" / image / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses and pickling look the module up by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def served_folder(root: Path) -> Iterator[str]:
    """`root` served over HTTP on loopback (a stand-in for figshare); yields its base URL."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def fake_california_archive(path: Path, rows: int) -> str:
    """A cal_housing.tgz laid out as figshare's (`rows` rows of 9 columns); its sha256.

    Few rows, so a notebook that loads it shows it read this file and not the real one.
    """
    lines = "".join(
        ",".join(str(float(row * 10 + column)) for column in range(9)) + "\n" for row in range(rows)
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("CaliforniaHousing/cal_housing.data")
        info.size = len(lines)
        tar.addfile(info, io.BytesIO(lines))
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()
