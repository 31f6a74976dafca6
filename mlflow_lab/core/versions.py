"""Pinned versions, read from docker/constraints.txt: the one place they are written."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core.errors import LabError

CONSTRAINTS_FILE = PROJECT_ROOT / "docker" / "constraints.txt"
MLFLOW_DOCKERFILE = PROJECT_ROOT / "docker" / "mlflow" / "Dockerfile"
# The classroom's own lock (hub + class MLflow server) and what its student servers add.
CLASS_CONSTRAINTS_FILE = PROJECT_ROOT / "docker" / "classroom-constraints.txt"
NOTEBOOK_CONSTRAINTS_FILE = PROJECT_ROOT / "docker" / "class-notebook" / "constraints.txt"


def _pins(path: Path) -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[name.strip().lower()] = version.strip()
    return versions


@cache
def pinned() -> dict[str, str]:
    """Package name (lower case) to its exact pinned version, in the lab's images."""
    return _pins(CONSTRAINTS_FILE)


@cache
def class_pinned() -> dict[str, str]:
    """Package name (lower case) to its exact pinned version, in the class's images."""
    if not CLASS_CONSTRAINTS_FILE.is_file():
        raise LabError(
            f"{CLASS_CONSTRAINTS_FILE.name} is missing: write it with "
            "`invoke lock --classroom --mlflow-version X.Y.Z`"
        )
    return _pins(CLASS_CONSTRAINTS_FILE)


def class_mlflow_version() -> str:
    """The class's MLflow server version (its students' notebooks keep the lab's client)."""
    return class_pinned()["mlflow"]


def jupyterhub_version() -> str:
    return class_pinned()["jupyterhub"]


def mlflow_version() -> str:
    return pinned()["mlflow"]


def torch_version() -> str:
    return pinned()["torch"]


@cache
def upstream_base_image() -> str:
    """The Dockerfile's `ARG BASE_IMAGE` default: the upstream image users with a registry get."""
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", MLFLOW_DOCKERFILE.read_text(encoding="utf-8"), re.M)
    if not match:
        raise RuntimeError(f"{MLFLOW_DOCKERFILE} has no `ARG BASE_IMAGE=` default")
    return match.group(1)
