"""The locks: docker/constraints.txt (both images) and the host's requirements files.

The images' lock is resolved inside the base image (the Python that runs there); the
host's by uv from pyproject.toml.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import docker, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import images

REQUIREMENTS = ("docker/mlflow/requirements.txt", "docker/jupyter/requirements.txt")
HEADER = """\
# Exact versions of everything in the lab's images (both images install with -c this file).
# Regenerate with `invoke lock` after changing a requirements.txt; the MLflow version here
# is the lab's MLflow version (server, notebooks and checks all read it from this file).
"""


def top_level() -> list[str]:
    names: list[str] = []
    for path in REQUIREMENTS:
        for line in (PROJECT_ROOT / path).read_text(encoding="utf-8").splitlines():
            name = line.split("#", 1)[0].strip()
            if name and name not in names:
                names.append(name)
    return names


def lock(settings: Settings) -> None:
    """Resolve in a throwaway container of the base image; keep the pinned mlflow and torch."""
    base = images.ensure_base_image(settings)
    build_env = images.prepare_build_context(settings)
    pins = {"mlflow": versions.mlflow_version(), "torch": versions.torch_version()}
    wanted = [f"{n}=={pins[n.lower()]}" if n.lower() in pins else n for n in top_level()]
    wanted.append(f"torch=={pins['torch']}")
    index = build_env.get("TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")
    extra = f"--extra-index-url {shlex.quote(index)} " if index else ""
    # The resolver is a shell line inside the container (pip, then pip freeze).
    script = (
        "cat /etc/ssl/certs/ca-certificates.crt /build/ca-bundle.pem > /tmp/ca.pem && "
        "python3 -m venv /tmp/v && PIP_CERT=/tmp/ca.pem /tmp/v/bin/pip install -q "
        f"--progress-bar off --find-links /build/wheels {extra}setuptools "
        + " ".join(shlex.quote(w) for w in wanted)
        + " >&2 && /tmp/v/bin/pip freeze --all"
    )
    mount = f"{images.BUILD_DIR}:/build:ro"
    result = docker.run(
        "run", "--rm", "-v", mount, base, "sh", "-c", script, timeout=1800, check=False
    )
    if not result.ok:
        print(result.stderr)
        raise LabError("resolving the packages failed (see above): fix the requirements and retry")
    pinned = sorted(
        (
            line
            for line in result.stdout.splitlines()
            if "==" in line and not line.startswith("pip==")
        ),
        key=str.lower,
    )
    (versions.CONSTRAINTS_FILE).write_text(HEADER + "\n".join(pinned) + "\n", encoding="utf-8")
    print(f"Wrote {len(pinned)} pins to {versions.CONSTRAINTS_FILE.relative_to(PROJECT_ROOT)}.")


# The host's locks: what `pip install -r` installs, resolved by uv from pyproject.toml.
HOST_LOCKS: dict[str, tuple[str, ...]] = {
    "requirements.txt": (),
    "requirements-dev.txt": ("--extra", "dev"),
}
HOST_PYTHON = "3.11"


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        raise LabError("uv is missing: `.venv/bin/pip install -r requirements-dev.txt` installs it")
    return found


def _compile(target: Path, extra: tuple[str, ...]) -> None:
    argv = [
        _uv(), "pip", "compile", "pyproject.toml", *extra, "--quiet",
        "--python-version", HOST_PYTHON, "--custom-compile-command", "invoke lock",
        "-o", str(target),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise LabError(f"resolving pyproject.toml failed ({lines[-1]}): fix it, then retry")


def lock_host(*, check: bool = False) -> list[str]:
    """Write (or, with `check`, compare) the host locks; the names of stale ones.

    uv keeps the pins a lock already has when they still fit, so a check only differs
    when pyproject.toml and its lock disagree.
    """
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, extra in HOST_LOCKS.items():
            lock_file = PROJECT_ROOT / name
            target = Path(scratch) / name if check else lock_file
            if check and lock_file.is_file():
                shutil.copyfile(lock_file, target)
            _compile(target, extra)
            if check and target.read_text(encoding="utf-8") != lock_file.read_text(
                encoding="utf-8"
            ):
                stale.append(name)
    return stale
