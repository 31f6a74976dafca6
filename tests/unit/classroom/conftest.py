"""Fixtures for the classroom's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_lab.classroom.settings import ClassSettings
from tests.helpers import class_settings_in


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ClassSettings:
    """A class `room` with its state dir made, nothing from this machine."""
    loaded: ClassSettings = class_settings_in(monkeypatch, tmp_path)
    loaded.state_dir.mkdir(parents=True)
    return loaded
