"""What a student server needs on the machine it runs on, and `classroom.join`'s check.

A student server runs the notebook image by its ID (classroom.yaml says why) and, when
the class has a course repo, bind-mounts the course copy from the manager's state dir
path. No registry brings either to a worker: the classroom bundle does (`invoke bundle
--classroom` on the manager, `invoke load FILE` on the worker). The join command the
manager prints carries both (`--image`, `--course`), so the worker checks them before it
joins, with no class settings of its own.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from mlflow_lab.classroom import swarm
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import course

BUNDLE_FIRST = (
    "`invoke bundle --classroom` on the manager makes the class's bundle; copy it here, "
    "`invoke load FILE` here, then run this again"
)
# How the join command's hint tells the instructor to load the bundle first.
LOAD_FIRST = (
    "on it, `invoke load FILE` of the class's bundle first (`invoke bundle --classroom` "
    "here makes it), then run"
)


@dataclass(frozen=True)
class NodeFiles:
    image: str  # the notebook image's ID (sha256:...)
    course: str  # host path of the class's course copy; "" when the class has none


def _deployed(hub: str) -> NodeFiles | None:
    """What the running hub (service `hub`) spawns, read from its service: the truth
    while it runs."""
    found = swarm.service_env(hub)
    if found is None:
        return None
    env = dict(line.partition("=")[::2] for line in found)
    image = env.get("LAB_CLASS_NOTEBOOK_IMAGE", "")
    if not image.startswith("sha256:"):
        return None  # deployed by an older mlflow-lab, by tag: the next `up` sets the ID
    cache, where = env.get("LAB_COURSE_CACHE", ""), env.get("LAB_CLASS_COURSE_DIR", "")
    return NodeFiles(image, f"{where}/{cache}" if cache and where else "")


def of_class(settings: ClassSettings, hub: str) -> NodeFiles:
    """What the class's student servers need on a machine: the deployed hub's (service
    `hub`), else what `classroom.up` would deploy now."""
    deployed = _deployed(hub)
    if deployed is not None:
        return deployed
    cache = course.cache_path(settings.course_lab)
    return NodeFiles(
        docker.image_id(settings.image("notebook")) or "",
        str(cache) if (cache / "HEAD").exists() else "",
    )


def join_command(settings: ClassSettings, state: swarm.SwarmState, hub: str) -> dict[str, str]:
    """The swarm's join command with the class's files to check, or why there is none."""
    join = swarm.join_command(state)
    if not join["command"]:
        return join
    files = of_class(settings, hub)
    if not files.image:
        return {
            "command": "",
            "why_not": (
                f"the class's student image {settings.image('notebook')} is missing here: "
                "`invoke classroom.up` builds it"
            ),
        }
    options = f" --image {files.image}"
    if files.course:
        options += f" --course {shlex.quote(files.course)}"
    return {"command": join["command"] + options, "why_not": ""}


def join_hint(join: dict[str, str]) -> str:
    """The line `classroom.status` and `classroom.up` print about adding a machine."""
    if join.get("command"):
        return f"add a machine: {LOAD_FIRST} `{join['command']}`"
    return f"add a machine: {join['why_not']}" if join.get("why_not") else ""


def _short(image: str) -> str:
    return image.removeprefix("sha256:")[:12]


def check(image: str, course_copy: str) -> None:
    """Refuse, in one line, a machine where the class's student servers could not start."""
    if not image.startswith("sha256:"):
        raise LabError(
            f"--image {image!r} is not an image ID (sha256:...): `invoke classroom.status` "
            "on the manager prints the whole command"
        )
    if docker.image_id(image) != image:
        raise LabError(
            f"this machine does not have the class's student image ({_short(image)}), so no "
            f"student server could start here: {BUNDLE_FIRST}"
        )
    if course_copy and not (Path(course_copy) / "HEAD").exists():
        state_dir = Path(course_copy).parent.parent
        raise LabError(
            f"this machine does not have the class's course copy at {course_copy}, where the "
            "student servers read it: `invoke load FILE` of the class's bundle puts it there "
            f"when LAB_CLASS_STATE_DIR here is {state_dir} (as on the manager; set it in "
            ".env), then run this again"
        )
