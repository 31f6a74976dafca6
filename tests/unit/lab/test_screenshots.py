"""mlflow_lab.lab.screenshots without a lab: what it says when it cannot take the pictures."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import screenshots


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.Settings:
    for name in settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LAB_JUPYTER_TOKEN", "t" * 48)
    return settings.load(env_file=tmp_path / "no.env")


def test_no_runs_of_the_lab_is_one_line_naming_the_fix(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(screenshots, "find_lab_runs", lambda url: None)
    with pytest.raises(LabError, match=r"no runs of the lab yet.*--run-lab"):
        screenshots.take(lab, tmp_path, run_lab=False)
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_a_lab_missing_the_pictured_runs_counts_as_not_run(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    only_params = screenshots.LabRuns("1", {"params-demo": "r1"})
    monkeypatch.setattr(screenshots, "find_lab_runs", lambda url: only_params)
    with pytest.raises(LabError, match="--run-lab"):
        screenshots.take(lab, tmp_path, run_lab=False)


def test_no_chromium_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screenshots, "CHROMIUM", Path("/nonexistent/chromium"))
    with pytest.raises(LabError, match="apt-get install chromium"), screenshots.chromium():
        pass


def test_an_unknown_run_name_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="no run named 'x'"):
        screenshots.LabRuns("1", {}).run_id("x")
