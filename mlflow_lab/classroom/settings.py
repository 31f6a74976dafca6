"""The classroom's settings (LAB_CLASS_*): defined once, read like the lab's.

Settings that classroom.yaml uses take their defaults from its `${LAB_CLASS_X:-default}`
expressions; the others have theirs here. The environment wins over `.env`. The lab's
own settings (image tag, base image, CA bundle, course repo) apply to the class too.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from mlflow_lab import CLASSROOM_FILE, PROJECT_ROOT
from mlflow_lab.core import settings as lab_settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Setting

_DEFAULT = re.compile(r"\$\{(LAB_CLASS_[A-Z0-9_]+):-([^}]*)\}")
_STACK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_USER = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_MEMORY = re.compile(r"^([1-9][0-9]*)([KMG])$")
# JupyterHub's mem_limit reads these suffixes as powers of 1024, like Docker.
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
# Below this a student's JupyterLab with its kernel does not start.
MIN_MEMORY = "256M"
# Where the hub serves the class's MLflow UI: the hub service named in
# docker/hub/mlflow_ui_rules.py (SERVICE), a test keeps the two the same.
MLFLOW_UI_PATH = "/services/mlflow/"

# The order is the order of the README table and .env.example.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "LAB_CLASS_STACK",
        "Swarm stack name (prefix of the class's services, volumes, secrets and network).",
    ),
    Setting("LAB_CLASS_PORT", "Host port of the hub (the class's only published port)."),
    Setting(
        "LAB_CLASS_BIND_ADDRESS",
        "Address in the hub URL the tools print and check; Swarm publishes the port on "
        "every interface (host mode has no address), so a login is always required.",
        "0.0.0.0",
    ),
    Setting(
        "LAB_CLASS_ADVERTISE_ADDRESS",
        "This machine's address on the classroom network: the swarm `classroom.up` makes "
        "has other machines join it there (`classroom.join`); empty means loopback, this "
        "machine only.",
    ),
    Setting(
        "LAB_CLASS_STATE_DIR",
        "Folder for the class's state: secrets, roster, passwords file, course repo cache.",
        "./.class-state",
    ),
    Setting("LAB_CLASS_INSTRUCTOR", "The instructor's username (hub admin and MLflow admin)."),
    Setting(
        "LAB_CLASS_CPU_LIMIT",
        "CPUs each student server may use, from 0.1 to this machine's cores (e.g. 1.0).",
    ),
    Setting(
        "LAB_CLASS_MEM_LIMIT",
        "Memory each student server may use, from 256M to this machine's memory (e.g. 2G, 512M).",
    ),
    Setting(
        "LAB_CLASS_IDLE_MINUTES",
        "Idle student servers are stopped after this many minutes, 1 to 10080 "
        "(their work is kept).",
    ),
    Setting("LAB_CLASS_MLFLOW_WORKERS", "Worker processes of the class's MLflow server."),
    Setting(
        "LAB_CLASS_TLS_CERT",
        "PEM certificate for HTTPS (checked against its key before anything is deployed); "
        "empty means plain HTTP (warned).",
    ),
    Setting("LAB_CLASS_TLS_KEY", "Unencrypted PEM private key of LAB_CLASS_TLS_CERT."),
)
SETTING_NAMES = frozenset(s.name for s in SETTINGS)
SECRET_NAMES = (
    "db-password",
    "instructor-password",
    "mlflow-secret-key",
    "hub-crypt-key",
    "hub-api-token",
)


@cache
def yaml_defaults() -> dict[str, str]:
    """Defaults of the settings classroom.yaml interpolates, read from classroom.yaml."""
    found: dict[str, str] = {}
    for name, default in _DEFAULT.findall(CLASSROOM_FILE.read_text(encoding="utf-8")):
        if found.setdefault(name, default) != default:
            raise LabError(f"classroom.yaml gives {name} two defaults: keep one")
    return found


def default_of(name: str) -> str:
    spec = next(s for s in SETTINGS if s.name == name)
    return yaml_defaults().get(name, spec.default)


def valid_username(name: str) -> bool:
    """A hub user, an MLflow user and an MLflow workspace at once (MLflow's workspace rule)."""
    return bool(_USER.match(name)) and name not in ("default", "api", "workspaces", "ajax-api")


@dataclass(frozen=True)
class ClassSettings:
    lab: lab_settings.Settings
    stack: str
    port: int
    bind_address: str
    advertise_address: str
    state_dir: Path
    instructor: str
    cpu_limit: float
    mem_limit: str
    idle_minutes: int
    mlflow_workers: int
    tls_cert: Path | None
    tls_key: Path | None

    @property
    def https(self) -> bool:
        return self.tls_cert is not None

    @property
    def host(self) -> str:
        """Where this machine reaches the hub."""
        return "127.0.0.1" if self.bind_address == "0.0.0.0" else self.bind_address

    @property
    def hub_url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}"

    @property
    def mlflow_ui_url(self) -> str:
        """The class's MLflow UI, behind the hub's login."""
        return self.hub_url + MLFLOW_UI_PATH

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def hub_dir(self) -> Path:
        """What the hub sees read-only at /srv/class: the roster and the TLS files."""
        return self.state_dir / "hub"

    @property
    def roster_file(self) -> Path:
        return self.hub_dir / "roster.json"

    @property
    def passwords_file(self) -> Path:
        """The students' passwords in clear, for the instructor only (0600)."""
        return self.state_dir / "passwords.csv"

    @property
    def course_dir(self) -> Path:
        return self.state_dir / "course"

    @property
    def course_lab(self) -> lab_settings.Settings:
        """The lab's settings with the class's state dir: the class's course repo cache."""
        return replace(self.lab, state_dir=self.state_dir)

    def image(self, name: str) -> str:
        return f"mlflow-lab/class-{name}:{self.lab.image_tag}"

    @property
    def network(self) -> str:
        return f"{self.stack}_class"

    def stack_env(self) -> dict[str, str]:
        """The variables classroom.yaml interpolates, from these settings."""
        return {
            "LAB_IMAGE_TAG": self.lab.image_tag,
            "LAB_CLASS_STACK": self.stack,
            "LAB_CLASS_PORT": str(self.port),
            "LAB_CLASS_INSTRUCTOR": self.instructor,
            "LAB_CLASS_CPU_LIMIT": str(self.cpu_limit),
            "LAB_CLASS_MEM_LIMIT": self.mem_limit,
            "LAB_CLASS_IDLE_MINUTES": str(self.idle_minutes),
            "LAB_CLASS_MLFLOW_WORKERS": str(self.mlflow_workers),
            "CLASS_STATE_DIR": str(self.state_dir),
            "CLASS_REPO_BRANCH": self.lab.repo_branch,
        }


def _whole(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise LabError(f"{name}={value!r}: use a whole number from {low} to {high}")
    return int(value)


def _file(name: str, value: str) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise LabError(f"{name}={value!r}: no such file: point it at a PEM file or unset it")
    try:
        path.read_bytes()
    except OSError as exc:
        raise LabError(
            f"{name}={value!r} cannot be read ({exc.strerror}): make it readable for this user"
        ) from None
    return path.resolve()


def _tls(cert_value: str, key_value: str) -> tuple[Path | None, Path | None]:
    """The certificate and its key, checked as the hub's proxy will load them: the proxy
    would otherwise fail inside the stack, after the deploy, with a Node.js stack trace."""
    cert = _file("LAB_CLASS_TLS_CERT", cert_value)
    key = _file("LAB_CLASS_TLS_KEY", key_value)
    if cert is None or key is None:
        if cert is not None or key is not None:
            raise LabError(
                "LAB_CLASS_TLS_CERT and LAB_CLASS_TLS_KEY go together: set both (HTTPS) or "
                "neither (plain HTTP)"
            )
        return None, None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(cert))
    except ssl.SSLError:
        raise LabError(
            f"LAB_CLASS_TLS_CERT={cert_value!r} holds no PEM certificate: point it at the "
            "certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    try:
        # An empty passphrase: the proxy cannot ask for one, and OpenSSL must not prompt.
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise LabError(
                f"LAB_CLASS_TLS_KEY={key_value!r} is not the private key of "
                f"LAB_CLASS_TLS_CERT={cert_value!r}: use the key the certificate was made with"
            ) from None
        raise LabError(
            f"LAB_CLASS_TLS_KEY={key_value!r} holds no unencrypted PEM private key: point it "
            "at the certificate's key (without a passphrase)"
        ) from None
    return cert, key


def _cpus(value: str) -> float:
    cores = os.cpu_count() or 1
    try:
        cpus = float(value)
    except ValueError:
        cpus = 0.0
    if not 0.1 <= cpus <= cores:
        raise LabError(
            f"LAB_CLASS_CPU_LIMIT={value!r}: use a number of CPUs from 0.1 to {cores} "
            "(this machine's cores), e.g. 1.0"
        )
    return cpus


def memory_bytes(size: str) -> int:
    match = _MEMORY.match(size)
    return int(match.group(1)) * _UNITS[match.group(2)] if match else 0


def _memory(value: str) -> str:
    size = value.upper()
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if not memory_bytes(MIN_MEMORY) <= memory_bytes(size) <= machine:
        raise LabError(
            f"LAB_CLASS_MEM_LIMIT={value!r}: use a size like 2G or 512M, from {MIN_MEMORY} "
            f"to this machine's {machine >> 20}M"
        )
    return size


def load(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    lab: lab_settings.Settings | None = None,
) -> ClassSettings:
    """Read and check every class setting; raise LabError naming the first bad one."""
    environ = os.environ if environ is None else environ
    path = lab_settings.ENV_FILE if env_file is None else env_file
    from_file = lab_settings.parse_env_file(path)
    for name in (*environ, *from_file):
        if name.startswith(lab_settings.CLASS_PREFIX) and name not in SETTING_NAMES:
            raise LabError(f"unknown setting {name}: see .env.example for the LAB_CLASS_ names")
    lab = lab if lab is not None else lab_settings.load(environ, path)

    def get(name: str) -> str:
        if name in environ:
            return environ[name].strip()
        if name in from_file:
            return from_file[name]
        return default_of(name)

    stack = get("LAB_CLASS_STACK")
    if not _STACK_NAME.match(stack):
        raise LabError(
            f"LAB_CLASS_STACK={stack!r} is not a usable stack name: use 1-31 lower-case "
            "letters, digits and '-', starting with a letter"
        )
    port = get("LAB_CLASS_PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise LabError(f"LAB_CLASS_PORT={port!r} is not a port number: use 1 to 65535")
    bind = get("LAB_CLASS_BIND_ADDRESS")
    try:
        ipaddress.IPv4Address(bind)
    except ValueError:
        raise LabError(
            f"LAB_CLASS_BIND_ADDRESS={bind!r} is not an IPv4 address: use 0.0.0.0 or this "
            "machine's address on the classroom network"
        ) from None
    advertise = get("LAB_CLASS_ADVERTISE_ADDRESS")
    if advertise:
        try:
            ipaddress.IPv4Address(advertise)
        except ValueError:
            raise LabError(
                f"LAB_CLASS_ADVERTISE_ADDRESS={advertise!r} is not an IPv4 address: use this "
                "machine's address on the classroom network (`ip addr`), or leave it empty"
            ) from None
    instructor = get("LAB_CLASS_INSTRUCTOR")
    if not valid_username(instructor):
        raise LabError(
            f"LAB_CLASS_INSTRUCTOR={instructor!r} is not a valid username: use 2-32 "
            "lower-case letters, digits and '-', starting with a letter"
        )
    cert, key = _tls(get("LAB_CLASS_TLS_CERT"), get("LAB_CLASS_TLS_KEY"))
    state = Path(get("LAB_CLASS_STATE_DIR")).expanduser()
    state_dir = state if state.is_absolute() else (PROJECT_ROOT / state).resolve()
    return ClassSettings(
        lab=lab,
        stack=stack,
        port=int(port),
        bind_address=bind,
        advertise_address=advertise,
        state_dir=state_dir,
        instructor=instructor,
        cpu_limit=_cpus(get("LAB_CLASS_CPU_LIMIT")),
        mem_limit=_memory(get("LAB_CLASS_MEM_LIMIT")),
        idle_minutes=_whole("LAB_CLASS_IDLE_MINUTES", get("LAB_CLASS_IDLE_MINUTES"), 1, 10080),
        mlflow_workers=_whole("LAB_CLASS_MLFLOW_WORKERS", get("LAB_CLASS_MLFLOW_WORKERS"), 1, 16),
        tls_cert=cert,
        tls_key=key,
    )
