"""The class's images: hub, MLflow server, PostgreSQL and the student servers.

Built locally with `docker build` (no registry): hub, mlflow and db on the lab's base
image (mlflow_lab.lab.images.ensure_base_image), the student servers on the lab's own
jupyter image, which is built first when it is missing or out of date. Each image is
labelled with a digest of what it was built from; an image whose label matches is reused.
"""

from __future__ import annotations

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.classroom.settings import ClassSettings
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import images as lab_images
from mlflow_lab.lab.compose import LabCompose

CLASS_LOCK = "docker/classroom-constraints.txt"
# What each class image is built from; a change to any of these rebuilds it.
IMAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "hub": ("docker/hub", CLASS_LOCK, "docker/mlflow/http-ok.sh", "docker/base"),
    "mlflow": (
        "docker/class-mlflow",
        CLASS_LOCK,
        "docker/mlflow/http-ok.sh",
        "docker/mlflow/ui_defaults.py",
        "docker/base",
    ),
    "db": ("docker/class-db", "docker/base"),
    "notebook": ("docker/class-notebook",),
}
# Build order: the notebook image needs the lab's jupyter image, built by the lab's code.
IMAGES = ("db", "mlflow", "hub", "notebook")


def inputs_digest(name: str, extra: str = "") -> str:
    return lab_images.files_digest(IMAGE_INPUTS[name], extra)


def wanted_label(name: str, jupyter_id: str | None) -> str:
    """The inputs label image `name` is built with, beside this jupyter image (ID or None)."""
    # The student image also follows the lab's jupyter image it is built on.
    return inputs_digest(name, (jupyter_id or "absent") if name == "notebook" else "")


def _wanted(settings: ClassSettings, name: str) -> str:
    jupyter_id = docker.image_id(_jupyter_image(settings)) if name == "notebook" else None
    return wanted_label(name, jupyter_id)


def _jupyter_image(settings: ClassSettings) -> str:
    return f"mlflow-lab/jupyter:{settings.lab.image_tag}"


def stale(settings: ClassSettings) -> list[str]:
    """Class images that are missing or were built from other inputs than the tree's.

    The student image is also stale when the lab's images under it are: its label only
    follows the jupyter image's ID, and an old jupyter image would keep the students on
    old lab tools (the ones `classroom.verify` runs in their servers, workspace_sync).
    """
    found = [
        name
        for name in IMAGES
        if docker.image_label(settings.image(name), lab_images.INPUTS_LABEL)
        != _wanted(settings, name)
    ]
    if "notebook" not in found and lab_images.stale_images(LabCompose(settings.lab)):
        found.append("notebook")
    return found


def build(
    settings: ClassSettings, names: list[str] | None = None, *, verbose: bool = False
) -> None:
    """Build the class images that are out of date (or `names`)."""
    todo = names if names is not None else stale(settings)
    if not todo:
        return
    lab = settings.lab
    if "notebook" in todo and lab_images.stale_images(LabCompose(lab)):
        print("The lab's images are missing or out of date: building them first.")
        lab_images.build(lab, verbose=verbose)
    steps = lab_images.build_steps(lab, verbose=verbose)
    base = lab_images.ensure_base_image(lab, steps)
    build_env = lab_images.prepare_build_context(lab)
    for name in IMAGES:
        if name not in todo:
            continue
        image = settings.image(name)
        args = [
            "build",
            "-f",
            f"docker/{'hub' if name == 'hub' else 'class-' + name}/Dockerfile",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"JUPYTER_IMAGE={_jupyter_image(settings)}",
            "--label",
            f"{lab_images.INPUTS_LABEL}={_wanted(settings, name)}",
            "-t",
            image,
            str(PROJECT_ROOT),
        ]
        # The classic builder where there is no buildx (as the lab's builds do).
        env = {k: v for k, v in build_env.items() if k == "DOCKER_BUILDKIT"}
        with steps.step(f"The class's {name} image, {image}") as step:
            result = docker.call_lines(docker.docker_argv(*args), on_line=step.line, env=env)
            if not result.ok:
                raise LabError(
                    f"building {image} failed: {docker.failure(result)}: the full log is in "
                    f"{steps.log_path}; fix it, then run the command again"
                )
