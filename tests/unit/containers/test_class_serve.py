"""The class MLflow server's basic_auth.ini (docker/class-mlflow/class_serve.py)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from tests.helpers import container_module

class_serve = container_module("class-mlflow", "class_serve")


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "db-password").write_text("p@ss/word\n")
    monkeypatch.setattr(class_serve, "SECRETS", tmp_path)
    return tmp_path


def test_the_auth_config_refuses_by_default_and_keeps_logins_briefly(secrets: Path) -> None:
    ini = configparser.ConfigParser()  # as MLflow's read_auth_config reads it
    ini.read_string(class_serve.auth_config("teacher"))
    mlflow = ini["mlflow"]
    assert mlflow["default_permission"] == "NO_PERMISSIONS"
    assert mlflow["grant_default_workspace_access"] == "false"
    assert mlflow["admin_username"] == "teacher"
    # The password is quoted into the URI, never left to break it.
    assert mlflow["database_uri"].startswith("postgresql+psycopg2://mlflow:p%40ss%2Fword@")
    # On: without it every request pays a password hash; short: a reset password or a
    # removed student stops working in every worker within it.
    assert 0 < int(mlflow["auth_cache_ttl_seconds"]) == class_serve.AUTH_CACHE_TTL_S <= 60
