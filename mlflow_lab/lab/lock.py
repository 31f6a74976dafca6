"""The locks: docker/constraints.txt (both images) and the host's requirements files.

The images' lock is resolved inside the base image (the Python that runs there); the
host's by uv from pyproject.toml.
"""

from __future__ import annotations

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

# Runs in a throwaway container of the base image: pip, then pip freeze.
LOCK_SCRIPT = PROJECT_ROOT / "docker" / "base" / "lock.sh"
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
    result = docker.run(
        "run", "--rm", "-v", f"{images.BUILD_DIR}:/build:ro", "-v", f"{LOCK_SCRIPT}:/lock.sh:ro",
        base, "sh", "/lock.sh", index, *wanted,
        timeout=1800, check=False,
    )  # fmt: skip
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


# -- the classroom's images ------------------------------------------------------------------

CLASS_HEADER = """\
# Exact versions of the classroom's hub and MLflow server images (both install with -c this
# file). Written by `invoke lock --classroom` (docker/hub/lock.sh); the mlflow pin here is
# the class's MLflow version, read by everything else.
"""
NOTEBOOK_HEADER = """\
# What the class's student servers add to the lab's jupyter image (jupyterhub-singleuser),
# resolved against docker/constraints.txt. Written by `invoke lock --classroom`.
"""
CLASS_LOCK_TIMEOUT_S = 1800


def lock_classroom(settings: Settings, mlflow_version: str = "") -> None:
    """Resolve the class images' pins in a throwaway container of the base image.

    The class's MLflow version is kept from the current lock unless `mlflow_version` says
    otherwise: it moves only when someone asks for it.
    """
    version = mlflow_version or versions.class_mlflow_version()
    base = images.ensure_base_image(settings)
    images.prepare_build_context(settings)
    out = images.BUILD_DIR / "class-lock"
    out.mkdir(parents=True, exist_ok=True)
    print(f"Resolving the classroom's packages (MLflow {version}) in {base}...")
    docker.run(
        "run",
        "--rm",
        "-v",
        f"{PROJECT_ROOT}:/src:ro",
        "-v",
        f"{images.BUILD_DIR}:/build:ro",
        "-v",
        f"{out}:/out",
        base,
        "sh",
        "/src/docker/hub/lock.sh",
        version,
        timeout=CLASS_LOCK_TIMEOUT_S,
        fix="fix the classroom's requirements (docker/hub, docker/class-mlflow) and retry",
    )
    class_pins = (out / "classroom-constraints.txt").read_text(encoding="utf-8")
    notebook_pins = (out / "notebook-constraints.txt").read_text(encoding="utf-8")
    versions.CLASS_CONSTRAINTS_FILE.write_text(CLASS_HEADER + class_pins, encoding="utf-8")
    versions.NOTEBOOK_CONSTRAINTS_FILE.write_text(NOTEBOOK_HEADER + notebook_pins, encoding="utf-8")
    lock_json = (out / "package-lock.json").read_text(encoding="utf-8")
    (PROJECT_ROOT / "docker" / "hub" / "package-lock.json").write_text(lock_json, encoding="utf-8")
    count = len(class_pins.splitlines())
    print(
        f"Wrote {count} pins to {versions.CLASS_CONSTRAINTS_FILE.relative_to(PROJECT_ROOT)}, "
        f"{len(notebook_pins.splitlines())} to "
        f"{versions.NOTEBOOK_CONSTRAINTS_FILE.relative_to(PROJECT_ROOT)} and the proxy's "
        "npm tree to docker/hub/package-lock.json."
    )
