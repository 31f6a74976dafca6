"""The LAB_CLASS_* settings: defaults from classroom.yaml, one line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.core import settings as lab_settings
from mlflow_lab.core.errors import LabError
from tests.helpers import isolate_settings


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    isolate_settings(monkeypatch, tmp_path)
    for name in class_settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)

    def loader(**env: str) -> class_settings.ClassSettings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return class_settings.load(env_file=tmp_path / "no.env")

    return loader


def test_defaults_come_from_classroom_yaml(load) -> None:  # type: ignore[no-untyped-def]
    defaults = class_settings.yaml_defaults()
    got = load()
    assert got.port == int(defaults["LAB_CLASS_PORT"]) == 8000
    assert got.stack == defaults["LAB_CLASS_STACK"]
    assert got.idle_minutes == 60
    assert got.hub_url == "http://127.0.0.1:8000"
    assert got.mlflow_ui_url == "http://127.0.0.1:8000/services/mlflow/"
    assert not got.https
    # Every class setting is documented, and every yaml default belongs to one.
    assert set(defaults) <= class_settings.SETTING_NAMES


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LAB_CLASS_PORT", "80000", "LAB_CLASS_PORT='80000' is not a port number"),
        ("LAB_CLASS_STACK", "My Class", "LAB_CLASS_STACK='My Class' is not a usable stack name"),
        ("LAB_CLASS_BIND_ADDRESS", "lan", "LAB_CLASS_BIND_ADDRESS='lan' is not an IPv4 address"),
        ("LAB_CLASS_IDLE_MINUTES", "0", "LAB_CLASS_IDLE_MINUTES='0'"),
        ("LAB_CLASS_CPU_LIMIT", "lots", "LAB_CLASS_CPU_LIMIT='lots'"),
        ("LAB_CLASS_MEM_LIMIT", "2 GB", "LAB_CLASS_MEM_LIMIT='2 GB'"),
        ("LAB_CLASS_TLS_CERT", "/no/such.pem", "LAB_CLASS_TLS_CERT='/no/such.pem': no such file"),
        ("LAB_CLASS_INSTRUCTOR", "Teacher", "LAB_CLASS_INSTRUCTOR='Teacher'"),
        ("LAB_CLASS_NOPE", "1", "unknown setting LAB_CLASS_NOPE"),
    ],
)
def test_bad_values_stop_with_one_line(load, name: str, value: str, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LabError) as caught:
        load(**{name: value})
    assert says in str(caught.value)


def test_cert_without_key_is_refused(load, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(LabError, match="go together"):
        load(LAB_CLASS_TLS_CERT=str(cert))


def test_class_settings_in_env_file_do_not_break_the_lab(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("LAB_CLASS_PORT=8100\nLAB_MLFLOW_PORT=8090\n")
    assert lab_settings.parse_env_file(env)["LAB_CLASS_PORT"] == "8100"


def test_stack_env_names_what_classroom_yaml_interpolates(load) -> None:  # type: ignore[no-untyped-def]
    got = load(LAB_CLASS_STATE_DIR="/tmp/cls").stack_env()
    assert got["CLASS_STATE_DIR"] == "/tmp/cls"
    text = (Path(class_settings.CLASSROOM_FILE)).read_text()
    for name in got:
        assert "${" + name in text, name
