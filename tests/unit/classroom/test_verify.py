"""classroom.verify's own bookkeeping (no Docker): probe names, stale probes, the driver."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mlflow_lab.classroom import roster, verify
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.classroom.settings import valid_username
from tests.helpers import container_module, isolate_settings


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


def test_the_probe_file_answers_each_command_verify_sends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = container_module("class-notebook", "class_probe")
    assert verify.PROBE.endswith("/class_probe.py")
    # The MLflow side needs the image; here each command's function is stood in for.
    monkeypatch.setattr(probe, "attack", lambda run_id: {"read": f"denied {run_id}"})
    monkeypatch.setattr(probe, "intact", lambda run_id: {"stage": f"active {run_id}"})
    monkeypatch.setattr(probe, "browse", lambda: {"list their workspace": "sees nothing"})
    monkeypatch.setattr(probe, "kernel_run", lambda k, code, t: {"kernel": k, "code": code})
    monkeypatch.setattr(probe.sys, "stdin", io.StringIO("print(1)"))
    answers = {
        ("attack", "r1"): {"read": "denied r1"},
        ("intact", "r1"): {"stage": "active r1"},
        ("browse",): {"list their workspace": "sees nothing"},
        ("kernel-run", "mlops", "5"): {"kernel": "mlops", "code": "print(1)"},
    }
    for args, wanted in answers.items():
        assert probe.main(list(args)) == 0
        assert json.loads(capsys.readouterr().out) == wanted
    with pytest.raises(SystemExit):
        probe.main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err
