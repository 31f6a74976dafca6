"""Settings: one source of defaults, strict .env parsing, clear errors, a kept token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlflow_lab import COMPOSE_FILE, PROJECT_ROOT
from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError


def load(tmp_path: Path, env: dict[str, str] | None = None, dotenv: str = "") -> settings.Settings:
    env_file = tmp_path / ".env"
    env_file.write_text(dotenv, encoding="utf-8")
    base = {"LAB_STATE_DIR": str(tmp_path / "state")}
    return settings.load({**base, **(env or {})}, env_file=env_file)


def test_defaults_come_from_compose_yaml(tmp_path: Path) -> None:
    lab = load(tmp_path)
    assert (lab.mlflow_port, lab.jupyter_port) == (8080, 8888)
    assert lab.bind_address == "127.0.0.1"
    assert lab.project == "mlflow-lab"
    assert lab.repo_url == "https://github.com/Tuchsanai/MLOps.git"
    assert lab.repo_branch == "dev"
    assert lab.mlflow_url == "http://127.0.0.1:8080"
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "${LAB_MLFLOW_PORT:-8080}" in compose_text


def test_every_compose_variable_is_a_documented_setting() -> None:
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{(LAB_[A-Z0-9_]+)", compose_text))
    assert used <= settings.SETTING_NAMES
    example = settings.parse_env_file(PROJECT_ROOT / ".env.example")
    assert set(example) == settings.SETTING_NAMES
    for name, value in example.items():
        assert value == settings.default_of(name), name
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    for name in settings.SETTING_NAMES:
        assert f"`{name}`" in readme, f"{name} missing from the README's settings table"


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    lab = load(
        tmp_path,
        env={"LAB_MLFLOW_PORT": "9090"},
        dotenv="LAB_MLFLOW_PORT=7070\nLAB_JUPYTER_PORT=7171\n",
    )
    assert lab.mlflow_port == 9090
    assert lab.jupyter_port == 7171


def test_dotenv_accepts_comments_quotes_and_export(tmp_path: Path) -> None:
    lab = load(
        tmp_path,
        dotenv="# comment\n\nexport LAB_PROJECT='my-lab'\nLAB_REPO_BRANCH=\"main\" \n"
        "LAB_REPO_URL=https://example.org/c.git # trailing comment\n",
    )
    assert lab.project == "my-lab"
    assert lab.repo_branch == "main"
    assert lab.repo_url == "https://example.org/c.git"


@pytest.mark.parametrize(
    ("dotenv", "message"),
    [
        ("LAB_MLFLOW_PORT 8080\n", r"\.env line 1: .* is not NAME=value"),
        ("# ok\nnot a line\n", r"\.env line 2"),
        ("LAB_MLFOW_PORT=1\n", r"unknown setting LAB_MLFOW_PORT"),
    ],
)
def test_malformed_dotenv_line_is_named(tmp_path: Path, dotenv: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        load(tmp_path, dotenv=dotenv)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LAB_MLFLOW_PORT": "eighty"}, r"LAB_MLFLOW_PORT='eighty' is not a port number"),
        ({"LAB_JUPYTER_PORT": "70000"}, r"LAB_JUPYTER_PORT='70000' is not a port number"),
        ({"LAB_JUPYTER_PORT": "0"}, r"from 1 to 65535"),
        ({"LAB_MLFLOW_PORT": "9000", "LAB_JUPYTER_PORT": "9000"}, r"both 9000"),
        ({"LAB_BIND_ADDRESS": "localhost:80"}, r"LAB_BIND_ADDRESS='localhost:80' is not an IPv4"),
        ({"LAB_BIND_ADDRESS": "300.1.1.1"}, r"not an IPv4 address"),
        ({"LAB_PROJECT": "My Lab"}, r"LAB_PROJECT='My Lab' is not a valid compose project"),
        ({"LAB_MLFLOW_WORKERS": "many"}, r"LAB_MLFLOW_WORKERS='many'"),
        ({"LAB_CA_BUNDLE": "/no/such/ca.pem"}, r"LAB_CA_BUNDLE='/no/such/ca.pem': no such file"),
        ({"LAB_WHEELS_DIR": "/no/such/dir"}, r"LAB_WHEELS_DIR='/no/such/dir' is not a folder"),
        ({"LAB_JUPYTER_TOKEN": "a b"}, r"LAB_JUPYTER_TOKEN contains white space"),
    ],
)
def test_bad_values_are_named_with_the_fix(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(LabError, match=message):
        load(tmp_path, env=env)


def test_token_is_generated_once_kept_and_overridable(tmp_path: Path) -> None:
    first = load(tmp_path).jupyter_token
    assert len(first) >= 32
    assert re.fullmatch(r"[0-9a-f]+", first)
    assert load(tmp_path).jupyter_token == first
    token_file = tmp_path / "state" / settings.TOKEN_FILE_NAME
    assert token_file.stat().st_mode & 0o077 == 0, "the token file must be private"
    assert load(tmp_path, env={"LAB_JUPYTER_TOKEN": "mine"}).jupyter_token == "mine"
    other = tmp_path / "other"
    other.mkdir()
    assert load(other).jupyter_token != first, "each install gets its own token"


def test_ca_bundle_falls_back_to_pip_cert(tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    assert load(tmp_path, env={"PIP_CERT": str(bundle)}).ca_bundle == bundle
    assert load(tmp_path, env={"SSL_CERT_FILE": str(bundle)}).ca_bundle == bundle
    assert load(tmp_path).ca_bundle is None


def test_wheels_dir_from_pip_find_links_only_when_a_folder(tmp_path: Path) -> None:
    assert load(tmp_path, env={"PIP_FIND_LINKS": str(tmp_path)}).wheels_dir == tmp_path
    assert load(tmp_path, env={"PIP_FIND_LINKS": "https://example.org/w"}).wheels_dir is None


def test_compose_env_carries_every_compose_variable(tmp_path: Path) -> None:
    lab = load(tmp_path, env={"LAB_BIND_ADDRESS": "0.0.0.0"})
    env = lab.compose_env()
    used = set(re.findall(r"\$\{(LAB_[A-Z0-9_]+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    assert used <= set(env)
    assert env["LAB_BIND_ADDRESS"] == "0.0.0.0"
    # Published on every interface, but this machine still reaches it on loopback.
    assert lab.mlflow_url == "http://127.0.0.1:8080"
