"""Pinned versions, read from docker/constraints.txt: the one place they are written."""

from __future__ import annotations

import re
from functools import cache

from mlflow_lab import PROJECT_ROOT

CONSTRAINTS_FILE = PROJECT_ROOT / "docker" / "constraints.txt"
MLFLOW_DOCKERFILE = PROJECT_ROOT / "docker" / "mlflow" / "Dockerfile"


@cache
def pinned() -> dict[str, str]:
    """Package name (lower case) to its exact pinned version."""
    versions: dict[str, str] = {}
    for line in CONSTRAINTS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[name.strip().lower()] = version.strip()
    return versions


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
