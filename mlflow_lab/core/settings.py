"""The lab's settings: defined once, read from the environment and an optional `.env`.

Settings that compose.yaml uses take their defaults from compose.yaml's
`${LAB_NAME:-default}` expressions, so a port or a name is written in one place only.
The environment wins over `.env`, as with Docker Compose.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mlflow_lab import COMPOSE_FILE, PROJECT_ROOT
from mlflow_lab.core.errors import LabError

ENV_FILE = PROJECT_ROOT / ".env"
TOKEN_FILE_NAME = "jupyter-token"
MIN_GENERATED_TOKEN_CHARS = 48
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_COMPOSE_DEFAULT = re.compile(r"\$\{(LAB_[A-Z0-9_]+):-([^}]*)\}")


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str = ""  # used only for settings compose.yaml does not mention


# The order is the order of the README table and .env.example.
SETTINGS: tuple[Setting, ...] = (
    Setting("LAB_MLFLOW_PORT", "Host port of the MLflow UI and tracking API."),
    Setting("LAB_JUPYTER_PORT", "Host port of JupyterLab."),
    Setting(
        "LAB_BIND_ADDRESS",
        "Address the ports are published on; 0.0.0.0 opens them to the network.",
    ),
    Setting(
        "LAB_JUPYTER_TOKEN",
        "JupyterLab token; empty means a random one generated once and kept in the state dir.",
    ),
    Setting("LAB_PROJECT", "Compose project name (prefix of containers and volumes)."),
    Setting(
        "LAB_REPO_URL",
        "Course repository cloned into the workspace.",
        "https://github.com/Tuchsanai/MLOps.git",
    ),
    Setting("LAB_REPO_BRANCH", "Branch of the course repository.", "dev"),
    Setting(
        "LAB_CA_BUNDLE",
        "CA bundle trusted by image builds (TLS-intercepting proxies); empty means the "
        "first of PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE that is set.",
    ),
    Setting(
        "LAB_BASE_IMAGE",
        "Base image of the MLflow image: `auto` (upstream Python image if it can be "
        "pulled, else one built from Debian packages), `local`, or an image name.",
        "auto",
    ),
    Setting(
        "LAB_DEBIAN_MIRROR",
        "Debian mirror for the local base image; empty means deb.debian.org.",
    ),
    Setting(
        "LAB_WHEELS_DIR",
        "Folder with a CPU PyTorch wheel to use instead of a download; empty means "
        "PIP_FIND_LINKS when it is a folder.",
    ),
    Setting(
        "LAB_STATE_DIR",
        "Folder for the lab's local state (token, course repo and dataset caches).",
    ),
    Setting(
        "LAB_DATASETS_FILE",
        "The list of datasets notebooks fetch at run time, cached for offline use; empty "
        "means none.",
        "datasets.toml",
    ),
    Setting("LAB_IMAGE_TAG", "Tag of the lab's images."),
    Setting("LAB_MLFLOW_WORKERS", "Worker processes of the MLflow server."),
    Setting(
        "LAB_EXTRA_ALLOWED_HOSTS",
        "More Host headers MLflow accepts, each starting with a comma (e.g. `,lab.example.org:*`).",
    ),
)
SETTING_NAMES = frozenset(s.name for s in SETTINGS)


@cache
def compose_defaults() -> dict[str, str]:
    """Defaults of the settings compose.yaml interpolates, read from compose.yaml."""
    found: dict[str, str] = {}
    for name, default in _COMPOSE_DEFAULT.findall(COMPOSE_FILE.read_text(encoding="utf-8")):
        if found.setdefault(name, default) != default:
            raise LabError(f"compose.yaml gives {name} two defaults: keep one")
    return found


def default_of(name: str) -> str:
    spec = next(s for s in SETTINGS if s.name == name)
    return compose_defaults().get(name, spec.default)


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env` file strictly: a malformed line is an error, never skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise LabError(
                f"{path.name} line {number}: {raw.strip()!r} is not NAME=value: "
                "fix or remove that line"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if name.startswith("LAB_") and name not in SETTING_NAMES:
            raise LabError(
                f"{path.name} line {number}: unknown setting {name}: see .env.example for the names"
            )
        values[name] = value
    return values


def _port(name: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise LabError(
            f"{name}={value!r} is not a port number: set it to a whole number from 1 to "
            "65535 (in .env or the environment)"
        )
    return int(value)


def _bind_address(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise LabError(
            f"LAB_BIND_ADDRESS={value!r} is not an IPv4 address: use 127.0.0.1 (this "
            "machine only) or 0.0.0.0 (every network interface)"
        ) from None
    return value


def _existing_file(name: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise LabError(f"{name}={value!r}: no such file: point it at a PEM CA bundle")
    return path


def _resolve(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


@dataclass(frozen=True)
class Settings:
    mlflow_port: int
    jupyter_port: int
    bind_address: str
    jupyter_token: str
    project: str
    repo_url: str
    repo_branch: str
    ca_bundle: Path | None
    base_image: str
    debian_mirror: str
    wheels_dir: Path | None
    state_dir: Path
    datasets_file: Path | None  # None: no datasets are cached
    image_tag: str
    mlflow_workers: int
    extra_allowed_hosts: str

    @property
    def host(self) -> str:
        """Where this machine reaches the published ports."""
        return "127.0.0.1" if self.bind_address == "0.0.0.0" else self.bind_address

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def jupyter_url(self) -> str:
        return f"http://{self.host}:{self.jupyter_port}"

    @property
    def jupyter_url_with_token(self) -> str:
        return f"{self.jupyter_url}/lab?token={self.jupyter_token}"

    @property
    def course_cache_dir(self) -> Path:
        return self.state_dir / "course"

    @property
    def datasets_cache_dir(self) -> Path:
        """scikit-learn's data home as the fetchers left it; mounted into Jupyter."""
        return self.state_dir / "datasets"

    def compose_env(self) -> dict[str, str]:
        """The LAB_* variables compose.yaml interpolates, from these settings."""
        return {
            "LAB_PROJECT": self.project,
            "LAB_MLFLOW_PORT": str(self.mlflow_port),
            "LAB_JUPYTER_PORT": str(self.jupyter_port),
            "LAB_BIND_ADDRESS": self.bind_address,
            "LAB_JUPYTER_TOKEN": self.jupyter_token,
            "LAB_STATE_DIR": str(self.state_dir),
            "LAB_IMAGE_TAG": self.image_tag,
            "LAB_MLFLOW_WORKERS": str(self.mlflow_workers),
            "LAB_EXTRA_ALLOWED_HOSTS": self.extra_allowed_hosts,
        }


def _token(given: str, state_dir: Path) -> str:
    if given:
        if any(c.isspace() for c in given):
            raise LabError("LAB_JUPYTER_TOKEN contains white space: use letters and digits")
        return given
    token_file = state_dir / TOKEN_FILE_NAME
    if token_file.is_file():
        kept = token_file.read_text(encoding="utf-8").strip()
        if kept:
            return kept
    # Generated once per install and kept, so bookmarks and open tabs survive down/up.
    token = secrets.token_hex(MIN_GENERATED_TOKEN_CHARS // 2)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n", encoding="utf-8")
    except OSError as exc:
        raise LabError(
            f"cannot keep the Jupyter token in {token_file}: {exc.strerror}: make "
            "LAB_STATE_DIR writable or set LAB_JUPYTER_TOKEN"
        ) from None
    return token


def load(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Read and check every setting; raise LabError naming the first bad one."""
    environ = os.environ if environ is None else environ
    from_file = parse_env_file(ENV_FILE if env_file is None else env_file)

    def get(name: str) -> str:
        if name in environ:
            return environ[name].strip()
        if name in from_file:
            return from_file[name]
        return default_of(name)

    mlflow_port = _port("LAB_MLFLOW_PORT", get("LAB_MLFLOW_PORT"))
    jupyter_port = _port("LAB_JUPYTER_PORT", get("LAB_JUPYTER_PORT"))
    if mlflow_port == jupyter_port:
        raise LabError(
            f"LAB_MLFLOW_PORT and LAB_JUPYTER_PORT are both {mlflow_port}: give them "
            "different ports"
        )
    project = get("LAB_PROJECT")
    if not _PROJECT_NAME.match(project):
        raise LabError(
            f"LAB_PROJECT={project!r} is not a valid compose project name: use lower-case "
            "letters, digits, '-' and '_', starting with a letter or digit"
        )
    workers = get("LAB_MLFLOW_WORKERS")
    if not workers.isdigit() or not 1 <= int(workers) <= 16:
        raise LabError(f"LAB_MLFLOW_WORKERS={workers!r}: use a whole number from 1 to 16")

    ca_value = get("LAB_CA_BUNDLE")
    ca_bundle: Path | None = None
    if ca_value:
        ca_bundle = _existing_file("LAB_CA_BUNDLE", ca_value)
    else:
        for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            if environ.get(name):
                ca_bundle = _existing_file(name, environ[name])
                break

    wheels_value = get("LAB_WHEELS_DIR") or environ.get("PIP_FIND_LINKS", "")
    wheels_dir = _resolve(wheels_value) if wheels_value else None
    if wheels_dir is not None and not wheels_dir.is_dir():
        if get("LAB_WHEELS_DIR"):
            raise LabError(f"LAB_WHEELS_DIR={wheels_value!r} is not a folder: fix or unset it")
        wheels_dir = None  # PIP_FIND_LINKS may well be a URL: then it is not for us

    state_dir = _resolve(get("LAB_STATE_DIR"))
    datasets_value = get("LAB_DATASETS_FILE")
    datasets_file = _resolve(datasets_value) if datasets_value else None
    if datasets_file is not None and not datasets_file.is_file():
        raise LabError(
            f"LAB_DATASETS_FILE={datasets_value!r}: no such file: point it at a dataset list "
            "(see datasets.toml) or set it empty for none"
        )
    return Settings(
        mlflow_port=mlflow_port,
        jupyter_port=jupyter_port,
        bind_address=_bind_address(get("LAB_BIND_ADDRESS")),
        jupyter_token=_token(get("LAB_JUPYTER_TOKEN"), state_dir),
        project=project,
        repo_url=get("LAB_REPO_URL"),
        repo_branch=get("LAB_REPO_BRANCH"),
        ca_bundle=ca_bundle,
        base_image=get("LAB_BASE_IMAGE") or "auto",
        debian_mirror=get("LAB_DEBIAN_MIRROR"),
        wheels_dir=wheels_dir,
        state_dir=state_dir,
        datasets_file=datasets_file,
        image_tag=get("LAB_IMAGE_TAG"),
        mlflow_workers=int(workers),
        extra_allowed_hosts=get("LAB_EXTRA_ALLOWED_HOSTS"),
    )
