"""The lab's settings: defined once, read from the environment and an optional `.env`.

Settings that compose.yaml uses take their defaults from compose.yaml's
`${LAB_NAME:-default}` expressions, so a port or a name is written in one place only.
The environment wins over `.env`, as with Docker Compose.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import secrets
import unicodedata
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dotenv.parser import parse_stream

from mlflow_lab import COMPOSE_FILE, PROJECT_ROOT
from mlflow_lab.core.errors import LabError

ENV_FILE = PROJECT_ROOT / ".env"
TOKEN_FILE_NAME = "jupyter-token"
MIN_GENERATED_TOKEN_CHARS = 48
CLASS_PREFIX = "LAB_CLASS_"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_COMPOSE_DEFAULT = re.compile(r"\$\{(LAB_[A-Z0-9_]+):-([^}]*)\}")
_LEADING_EXPORT = re.compile(r"^\s*(?:export\s+)?")
# Docker's image tag grammar.
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# One entry of MLflow's allowed hosts (fnmatch patterns): a name, an IPv4 address or a
# wildcard pattern such as `*.example.org`, then optionally `:port` or `:*`.
_ALLOWED_HOST = re.compile(
    r"^(?P<host>[A-Za-z0-9*](?:[A-Za-z0-9*.-]*[A-Za-z0-9*])?)(?::(?P<port>\*|[0-9]{1,5}))?$"
)
# What git refuses in a branch name (git-check-ref-format), and a leading '-' that
# git would take for an option.
_BAD_BRANCH = re.compile(r"^-|\.\.|@\{|[\s~^:?*\[\\]|//|^/|/$|\.lock$|\.$|^@$")


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
        "Loopback address the ports are published on (127.0.0.1 or another 127.x "
        "address); other addresses are refused: this lab has no login.",
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
        "More Host headers MLflow accepts, comma-separated: host, host:port or host:* "
        "(e.g. `lab.example.org:*`).",
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


def _line_number(binding_line: int, original: str) -> int:
    # python-dotenv counts a binding from the blank lines before it; the error names the
    # line the text is on.
    blank = original[: len(original) - len(original.lstrip())]
    return binding_line + len(re.findall(r"\r\n|\n|\r", blank))


def _compose_difference(key: str, value: str, original: str) -> str | None:
    """How Docker Compose would read this LAB_ line otherwise than python-dotenv; None if alike.

    Compose substitutes `$VAR` outside single quotes, keeps `\\` in single quotes and
    starts an inline comment only at " #": such values are refused rather than guessed.
    """
    rest = _LEADING_EXPORT.sub("", original, count=1)[len(key) :].lstrip(" \t")
    rest = rest[1:].lstrip(" \t")  # after the '='
    quote = rest[:1]
    if quote != "'" and "$" in value:
        return f"it substitutes variables for `$`: write the value in single quotes ({key}='...')"
    if quote == "'" and "\\\\" in rest:
        return (
            f'it keeps both backslashes of `\\\\` in single quotes: use double quotes ({key}="...")'
        )
    if quote not in ("'", '"') and "#" in rest:
        first_line = rest.splitlines()[0] if rest else ""
        if first_line.split(" #", 1)[0].rstrip() != value:
            return f"it reads `#` here as part of the value: quote the value ({key}='...')"
    return None


def parse_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env` file the way Docker Compose reads it, strictly.

    python-dotenv does the reading (quotes, escapes, inline comments, `export`). A line
    it cannot read is an error naming the line, never skipped; an unknown LAB_ name is
    refused; a LAB_ value Compose would read differently is refused with the fix.
    """
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LabError(f"{path.name} is not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror}: make it readable") from None
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        number = _line_number(binding.original.line, original)
        if binding.key is None and not binding.error:
            continue  # blank lines and comments
        key, value = binding.key, binding.value
        if (
            binding.error
            or key is None
            or value is None
            or not _NAME.match(key)
            # python-dotenv accepts a quoted name ('KEY'=v); Compose does not.
            or not _LEADING_EXPORT.sub("", original, count=1).startswith(key)
        ):
            shown = original.strip().splitlines()[0] if original.strip() else original
            raise LabError(
                f"{path.name} line {number}: {shown!r} is not NAME=value: fix or remove that line"
            )
        # LAB_CLASS_* names are the classroom's (mlflow_lab/classroom/settings.py checks them).
        if key.startswith("LAB_") and not key.startswith(CLASS_PREFIX):
            if key not in SETTING_NAMES:
                raise LabError(
                    f"{path.name} line {number}: unknown setting {key}: see .env.example for "
                    "the names"
                )
            why = _compose_difference(key, value, original)
            if why:
                raise LabError(
                    f"{path.name} line {number}: Docker Compose reads {key} otherwise: {why}"
                )
        values[key] = value
    return values


def _plain_text(name: str, value: str) -> str:
    """Refuse control characters (a newline, a NUL) and undecodable bytes in a setting."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise LabError(
                f"{name} contains the control character U+{ord(char):04X}: write the value "
                "on one line with printable characters"
            )
    return value


def _port(name: str, value: str) -> int:
    # ASCII digits only: str.isdigit() also takes '²' (int() then fails) and other scripts'
    # digits, which Docker does not read as a port.
    if not re.fullmatch(r"[0-9]{1,5}", value) or not 1 <= int(value) <= 65535:
        raise LabError(
            f"{name}={value!r} is not a port number: set it to a whole number from 1 to "
            "65535 (in .env or the environment)"
        )
    return int(value)


def _workers(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,2}", value) or not 1 <= int(value) <= 16:
        raise LabError(f"LAB_MLFLOW_WORKERS={value!r}: use a whole number from 1 to 16")
    return int(value)


def _bind_address(value: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise LabError(
            f"LAB_BIND_ADDRESS={value!r} is not an IPv4 address: use 127.0.0.1 (this machine only)"
        ) from None
    if not address.is_loopback:
        # Any non-loopback address, not only 0.0.0.0: the lab has no login either way.
        raise LabError(
            f"LAB_BIND_ADDRESS={value!r} would open this lab to the network, where MLflow "
            "has no login and Jupyter only a shared token: use 127.0.0.1 (or another 127.x "
            "address); to serve a class over the network use the classroom server "
            "(`invoke classroom.up`, coming)"
        )
    return value


def _allowed_hosts(value: str) -> str:
    """A comma-separated list (a leading comma is fine), as compose.yaml appends it."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for entry in entries:
        match = _ALLOWED_HOST.match(entry)
        port = match["port"] if match else None
        if match is None or (port not in (None, "*") and not 1 <= int(port) <= 65535):
            raise LabError(
                f"LAB_EXTRA_ALLOWED_HOSTS entry {entry!r} is not host, host:port or host:*: "
                "give a comma-separated list such as lab.example.org,10.0.0.5:8080"
            )
    # compose.yaml appends the value right after its own last entry.
    return "".join(f",{entry}" for entry in entries)


def _repo_url(value: str) -> str:
    if value.startswith("-"):
        raise LabError(
            f"LAB_REPO_URL={value!r} starts with '-', which git would take for an option: "
            "use the repository's URL (https://... or git@...)"
        )
    return value


def _repo_branch(value: str) -> str:
    if not value or _BAD_BRANCH.search(value):
        raise LabError(
            f"LAB_REPO_BRANCH={value!r} is not a git branch name: use the branch's name "
            "as git shows it (e.g. dev)"
        )
    return value


def _image_tag(value: str) -> str:
    if not _IMAGE_TAG.match(value):
        raise LabError(
            f"LAB_IMAGE_TAG={value!r} is not a Docker image tag: use letters, digits, '_', "
            "'.' and '-' (at most 128, not starting with '.' or '-')"
        )
    return value


def _expand(name: str, value: str) -> Path:
    try:
        return Path(value).expanduser()
    except RuntimeError:  # `~someone` for a user this machine does not know
        raise LabError(f"{name}={value!r}: no such home folder: write the full path") from None


def _existing_file(name: str, value: str) -> Path:
    path = _expand(name, value)
    if not path.is_file():
        raise LabError(f"{name}={value!r}: no such file: point it at a PEM CA bundle")
    return path


def _resolve(name: str, value: str) -> Path:
    path = _expand(name, value)
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def _state_dir(value: str) -> Path:
    path = _resolve("LAB_STATE_DIR", value)
    if ":" in str(path):
        # compose.yaml mounts it as SOURCE:TARGET:ro, which a ':' would split.
        raise LabError(f"LAB_STATE_DIR={value!r} contains ':': choose a folder without ':'")
    if path.exists() and not path.is_dir():
        raise LabError(f"LAB_STATE_DIR={value!r} is not a folder: point it at a folder")
    return path


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
    extra_allowed_hosts: str  # as compose.yaml appends it: empty, or each entry after a comma

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
        # Quoted: a token with `+`, `&`, `#` or `%` would otherwise reach Jupyter changed.
        return f"{self.jupyter_url}/lab?token={urllib.parse.quote(self.jupyter_token, safe='')}"

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


def _token_problem(token: str) -> str | None:
    if any(c.isspace() for c in token):
        return "contains white space"
    if not all(c.isascii() and c.isprintable() for c in token):
        # The token also goes into HTTP headers (verify, the kernel check), which are ASCII.
        return "contains a character that is not printable ASCII"
    return None


def _check_token(given: str) -> str:
    problem = _token_problem(given)
    if problem:
        raise LabError(f"LAB_JUPYTER_TOKEN {problem}: use letters, digits and ASCII punctuation")
    return given


def _kept_token(state_dir: Path) -> str:
    """The token generated once per install, made now if there is none."""
    token_file = state_dir / TOKEN_FILE_NAME
    try:
        kept = token_file.read_text(encoding="utf-8").strip() if token_file.is_file() else ""
    except (OSError, UnicodeDecodeError):
        kept = "\0"  # unreadable: refused below like a damaged token
    if kept and _token_problem(kept):
        raise LabError(
            f"the Jupyter token kept in {token_file} is unreadable or damaged: delete "
            "that file (a new token is made) or set LAB_JUPYTER_TOKEN"
        )
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
    """Read and check every setting; raise LabError naming the first bad one.

    Every check comes before the one write (a token made on first use): a bad setting
    leaves the state dir as it was.
    """
    environ = os.environ if environ is None else environ
    from_file = parse_env_file(ENV_FILE if env_file is None else env_file)

    def get(name: str) -> str:
        if name in environ:
            return _plain_text(name, environ[name].strip())
        if name in from_file:
            return _plain_text(name, from_file[name])
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
    workers = _workers(get("LAB_MLFLOW_WORKERS"))
    bind_address = _bind_address(get("LAB_BIND_ADDRESS"))
    given_token = _check_token(get("LAB_JUPYTER_TOKEN"))
    repo_url = _repo_url(get("LAB_REPO_URL"))
    repo_branch = _repo_branch(get("LAB_REPO_BRANCH"))
    image_tag = _image_tag(get("LAB_IMAGE_TAG"))
    extra_allowed_hosts = _allowed_hosts(get("LAB_EXTRA_ALLOWED_HOSTS"))

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
    wheels_dir = _resolve("LAB_WHEELS_DIR", wheels_value) if wheels_value else None
    if wheels_dir is not None and not wheels_dir.is_dir():
        if get("LAB_WHEELS_DIR"):
            raise LabError(f"LAB_WHEELS_DIR={wheels_value!r} is not a folder: fix or unset it")
        wheels_dir = None  # PIP_FIND_LINKS may well be a URL: then it is not for us

    state_dir = _state_dir(get("LAB_STATE_DIR"))
    datasets_value = get("LAB_DATASETS_FILE")
    datasets_file = _resolve("LAB_DATASETS_FILE", datasets_value) if datasets_value else None
    if datasets_file is not None and not datasets_file.is_file():
        raise LabError(
            f"LAB_DATASETS_FILE={datasets_value!r}: no such file: point it at a dataset list "
            "(see datasets.toml) or set it empty for none"
        )
    return Settings(
        mlflow_port=mlflow_port,
        jupyter_port=jupyter_port,
        bind_address=bind_address,
        jupyter_token=given_token or _kept_token(state_dir),
        project=project,
        repo_url=repo_url,
        repo_branch=repo_branch,
        ca_bundle=ca_bundle,
        base_image=get("LAB_BASE_IMAGE") or "auto",
        debian_mirror=get("LAB_DEBIAN_MIRROR"),
        wheels_dir=wheels_dir,
        state_dir=state_dir,
        datasets_file=datasets_file,
        image_tag=image_tag,
        mlflow_workers=workers,
        extra_allowed_hosts=extra_allowed_hosts,
    )
