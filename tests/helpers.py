"""Small helpers shared by the unit and end-to-end tests."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import settings
from mlflow_lab.core.ports import free_port

__all__ = ["container_module", "free_port", "isolate_settings", "wait_until"]


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
