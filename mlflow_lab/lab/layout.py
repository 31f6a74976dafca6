"""Where things are inside the lab's containers: read from the files that decide it.

compose.yaml mounts the workspace and the course cache; the images' Dockerfiles set
the notebooks' tracking URI and where the lab's own tools are installed. The host
code asks here instead of writing those paths again.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab.compose import JUPYTER, MLFLOW, mount_target

_ENV_LINE = re.compile(r"^ENV\s+(.+?)$", re.M)


@cache
def image_env(image: str) -> dict[str, str]:
    """The ENV values a Dockerfile under docker/IMAGE/ sets (later lines win)."""
    dockerfile = PROJECT_ROOT / "docker" / image / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, str] = {}
    for match in _ENV_LINE.finditer(text):
        for word in shlex.split(match.group(1)):
            name, sep, value = word.partition("=")
            if sep:
                found[name] = value
    return found


def _env(image: str, name: str) -> str:
    # The Jupyter image is built on the MLflow image and inherits its ENV.
    for source in (image, MLFLOW) if image == JUPYTER else (image,):
        if name in image_env(source):
            return image_env(source)[name]
    raise LabError(f"docker/{image}/Dockerfile sets no {name}: restore it from git")


# What the lab guide's notebooks call; inside the Jupyter container it reaches MLflow.
NOTEBOOK_TRACKING_URI = _env(JUPYTER, "MLFLOW_TRACKING_URI")
# The lab's own tools inside both images (scripts run with `docker exec`).
TOOLS = Path(_env(MLFLOW, "LAB_TOOLS"))
WORKSPACE = mount_target(JUPYTER, "workspace")
COURSE_CACHE_MOUNT = mount_target(JUPYTER, "course")
BUNDLED_LAB_SOURCE = _env(JUPYTER, "LAB_BUNDLED_LAB")
MLFLOW_DB = _env(MLFLOW, "LAB_MLFLOW_DB")
MLFLOW_ARTIFACTS = _env(MLFLOW, "LAB_MLFLOW_ARTIFACTS")


def tool(name: str) -> str:
    """The path of one of the lab's scripts inside the images."""
    return str(TOOLS / name)
