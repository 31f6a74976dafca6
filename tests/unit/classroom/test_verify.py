"""classroom.verify's own bookkeeping (no Docker): probe names, stale probes, the driver."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlflow_lab.classroom import roster, verify
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.classroom.settings import valid_username
from tests.helpers import isolate_settings


def test_probe_names_are_valid_usernames_and_new(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_CLASS_STATE_DIR", str(tmp_path / "class"))
    settings = class_settings.load(env_file=tmp_path / "no.env")
    probe = verify._new_probe(settings)
    assert probe.name.startswith("probe-") and valid_username(probe.name)
    assert len(probe.password) == 14


def test_only_marked_probes_are_swept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_CLASS_STATE_DIR", str(tmp_path / "class"))
    settings = class_settings.load(env_file=tmp_path / "no.env")
    roster.write_accounts(
        settings,
        {
            "probe-1a2b3c4d": {"password": "h", "name": "", "admin": False, "probe": True},
            # A student whose name looks like a probe's is never removed.
            "probe-team": {"password": "h", "name": "", "admin": False},
            "alice": {"password": "h", "name": "", "admin": False},
        },
    )
    assert verify.stale_probes(settings) == ["probe-1a2b3c4d"]


@pytest.mark.parametrize(
    "code", [verify.KERNEL_DRIVER, verify.ATTACK, verify.BROWSE, verify.INTACT]
)
def test_the_code_sent_into_the_containers_parses(code: str) -> None:
    ast.parse(code)
    ast.parse(verify.TRACKING % {"experiment": "e", "payload": "p"})
