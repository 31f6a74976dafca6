"""The LAB_CLASS_* settings: defaults from classroom.yaml, one line per bad value."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mlflow_lab.classroom import images, stack
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.core import settings as lab_settings
from mlflow_lab.core.errors import LabError
from tests.helpers import FakeDocker, isolate_settings, self_signed_cert

CORES = os.cpu_count() or 1
MACHINE_MIB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20


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
    assert got.advertise_address == "", "one machine unless told otherwise"
    assert load(LAB_CLASS_ADVERTISE_ADDRESS="192.168.1.10").advertise_address == "192.168.1.10"
    # Every class setting is documented, and every yaml default belongs to one.
    assert set(defaults) <= class_settings.SETTING_NAMES


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LAB_CLASS_PORT", "80000", "LAB_CLASS_PORT='80000' is not a port number"),
        ("LAB_CLASS_STACK", "My Class", "LAB_CLASS_STACK='My Class' is not a usable stack name"),
        ("LAB_CLASS_BIND_ADDRESS", "lan", "LAB_CLASS_BIND_ADDRESS='lan' is not an IPv4 address"),
        (
            "LAB_CLASS_ADVERTISE_ADDRESS",
            "eth0",
            "LAB_CLASS_ADVERTISE_ADDRESS='eth0' is not an IPv4 address: use this machine's",
        ),
        ("LAB_CLASS_IDLE_MINUTES", "0", "LAB_CLASS_IDLE_MINUTES='0'"),
        ("LAB_CLASS_CPU_LIMIT", "lots", "LAB_CLASS_CPU_LIMIT='lots': use a number of CPUs"),
        ("LAB_CLASS_CPU_LIMIT", "0", "LAB_CLASS_CPU_LIMIT='0': use a number of CPUs from 0.1"),
        ("LAB_CLASS_CPU_LIMIT", "nan", "LAB_CLASS_CPU_LIMIT='nan'"),
        ("LAB_CLASS_CPU_LIMIT", str(CORES + 1), f"from 0.1 to {CORES} (this machine's cores)"),
        ("LAB_CLASS_MEM_LIMIT", "lots", "LAB_CLASS_MEM_LIMIT='lots': use a size like 2G"),
        ("LAB_CLASS_MEM_LIMIT", "2 GB", "LAB_CLASS_MEM_LIMIT='2 GB'"),
        ("LAB_CLASS_MEM_LIMIT", "64M", "LAB_CLASS_MEM_LIMIT='64M': use a size like 2G or 512M, "),
        ("LAB_CLASS_MEM_LIMIT", f"{MACHINE_MIB + 1}M", "to this machine's"),
        ("LAB_CLASS_TLS_CERT", "/no/such.pem", "LAB_CLASS_TLS_CERT='/no/such.pem': no such file"),
        ("LAB_CLASS_INSTRUCTOR", "Teacher", "LAB_CLASS_INSTRUCTOR='Teacher'"),
        ("LAB_CLASS_NOPE", "1", "unknown setting LAB_CLASS_NOPE"),
    ],
)
def test_bad_values_stop_with_one_line(load, name: str, value: str, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LabError) as caught:
        load(**{name: value})
    assert says in str(caught.value)


def test_limits_within_the_machine_are_kept(load) -> None:  # type: ignore[no-untyped-def]
    got = load(LAB_CLASS_CPU_LIMIT=str(CORES), LAB_CLASS_MEM_LIMIT="768m")
    assert got.cpu_limit == CORES
    assert got.mem_limit == "768M"
    assert class_settings.memory_bytes(got.mem_limit) == 768 << 20
    assert got.stack_env()["LAB_CLASS_MEM_LIMIT"] == "768M"


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    cert, key = self_signed_cert(tmp_path / "tls")
    _, other_key = self_signed_cert(tmp_path / "tls", "other")
    junk = tmp_path / "tls" / "junk.pem"
    junk.write_text("not a PEM file\n")
    return {"cert": cert, "key": key, "other_key": other_key, "junk": junk}


def test_a_certificate_and_its_key_mean_https(load, certs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    got = load(LAB_CLASS_TLS_CERT=str(certs["cert"]), LAB_CLASS_TLS_KEY=str(certs["key"]))
    assert got.https and got.hub_url == "https://127.0.0.1:8000"
    assert got.tls_cert == certs["cert"] and got.tls_key == certs["key"]


@pytest.mark.parametrize(
    ("cert", "key", "says"),
    [
        ("cert", "", "LAB_CLASS_TLS_CERT and LAB_CLASS_TLS_KEY go together"),
        ("", "key", "LAB_CLASS_TLS_CERT and LAB_CLASS_TLS_KEY go together"),
        ("cert", "other_key", "LAB_CLASS_TLS_KEY='{other_key}' is not the private key of"),
        ("cert", "junk", "LAB_CLASS_TLS_KEY='{junk}' holds no unencrypted PEM private key"),
        ("cert", "cert", "LAB_CLASS_TLS_KEY='{cert}' holds no unencrypted PEM private key"),
        ("junk", "key", "LAB_CLASS_TLS_CERT='{junk}' holds no PEM certificate"),
        ("key", "key", "LAB_CLASS_TLS_CERT='{key}' holds no PEM certificate"),
        ("missing", "key", "LAB_CLASS_TLS_CERT='{missing}': no such file"),
        ("cert", "missing", "LAB_CLASS_TLS_KEY='{missing}': no such file"),
    ],
)
def test_bad_tls_files_stop_with_one_line_naming_the_setting(  # type: ignore[no-untyped-def]
    load, certs: dict[str, Path], tmp_path: Path, cert: str, key: str, says: str
) -> None:
    paths = {**{k: str(v) for k, v in certs.items()}, "missing": str(tmp_path / "no.pem"), "": ""}
    with pytest.raises(LabError) as caught:
        load(LAB_CLASS_TLS_CERT=paths[cert], LAB_CLASS_TLS_KEY=paths[key])
    message = str(caught.value)
    assert says.format(**paths) in message
    assert "\n" not in message


def test_an_encrypted_key_is_refused_without_a_prompt(  # type: ignore[no-untyped-def]
    load, certs: dict[str, Path], tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(certs["key"]), "-aes256", "-passout", "pass:secret",
         "-out", str(encrypted)],
        check=True,
    )  # fmt: skip
    with pytest.raises(LabError, match="holds no unencrypted PEM private key"):
        load(LAB_CLASS_TLS_CERT=str(certs["cert"]), LAB_CLASS_TLS_KEY=str(encrypted))


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


def test_a_new_or_removed_certificate_changes_the_hubs_service(  # type: ignore[no-untyped-def]
    load, certs: dict[str, Path], tmp_path: Path
) -> None:
    """The hub reads its certificate at start; Swarm restarts it only when its spec changes."""
    assert "${CLASS_TLS_ID:-}" in Path(class_settings.CLASSROOM_FILE).read_text()
    assert stack.tls_id(load()) == ""
    first = stack.tls_id(
        load(LAB_CLASS_TLS_CERT=str(certs["cert"]), LAB_CLASS_TLS_KEY=str(certs["key"]))
    )
    cert, key = self_signed_cert(tmp_path / "renewed")
    renewed = stack.tls_id(load(LAB_CLASS_TLS_CERT=str(cert), LAB_CLASS_TLS_KEY=str(key)))
    assert first and renewed and first != renewed


def test_the_hub_spawns_the_student_image_by_the_id_stack_env_computes(  # type: ignore[no-untyped-def]
    load, fake_docker: FakeDocker
) -> None:
    """By ID: Swarm pulls no image given by ID, so every node runs the manager's image; a
    rebuilt image changes the hub's environment, so `classroom.up` restarts the hub."""
    room = load()
    hub = yaml.safe_load(Path(class_settings.CLASSROOM_FILE).read_text())["services"]["hub"]
    spawned = hub["environment"]["LAB_CLASS_NOTEBOOK_IMAGE"]
    assert spawned.startswith("${CLASS_NOTEBOOK_IMAGE_ID:?"), spawned
    ids = {name: "sha256:" + str(n) * 64 for n, name in enumerate(images.IMAGES)}
    for name, image_id in ids.items():
        fake_docker.on(rf"^docker image inspect --format \S+ {room.image(name)}$", image_id)
    env = stack.stack_env(room, {})
    assert env["CLASS_NOTEBOOK_IMAGE_ID"] == ids["notebook"]
    assert env["CLASS_HUB_IMAGE_ID"] == ids["hub"]
    fake_docker.on(
        rf"^docker image inspect --format \S+ {room.image('notebook')}$", "sha256:" + "f" * 64
    )
    assert stack.stack_env(room, {})["CLASS_NOTEBOOK_IMAGE_ID"] == "sha256:" + "f" * 64
