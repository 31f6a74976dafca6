"""Re-resolving docker/constraints.txt: every package of both images, pinned together."""

from __future__ import annotations

import shlex

from invoke.context import Context

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import versions
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


def lock(ctx: Context, settings: Settings) -> None:
    """Resolve in a throwaway container of the base image; keep the pinned mlflow and torch."""
    base = images.ensure_base_image(ctx, settings)
    build_env = images.prepare_build_context(settings)
    pins = {"mlflow": versions.mlflow_version(), "torch": versions.torch_version()}
    wanted = [f"{n}=={pins[n.lower()]}" if n.lower() in pins else n for n in top_level()]
    wanted.append(f"torch=={pins['torch']}")
    index = build_env.get("TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")
    extra = f"--extra-index-url {shlex.quote(index)} " if index else ""
    script = (
        "cat /etc/ssl/certs/ca-certificates.crt /build/ca-bundle.pem > /tmp/ca.pem && "
        "python3 -m venv /tmp/v && PIP_CERT=/tmp/ca.pem /tmp/v/bin/pip install -q "
        f"--progress-bar off --find-links /build/wheels {extra}setuptools "
        + " ".join(shlex.quote(w) for w in wanted)
        + " >&2 && /tmp/v/bin/pip freeze --all"
    )
    result = ctx.run(
        f"docker run --rm -v {shlex.quote(str(images.BUILD_DIR))}:/build:ro {shlex.quote(base)} "
        f"sh -c {shlex.quote(script)}",
        hide="stdout",
        warn=True,
    )
    if result is None or result.failed:
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


def lock_classroom(ctx: Context, settings: Settings, mlflow_version: str = "") -> None:
    """Resolve the class images' pins in a throwaway container of the base image.

    The class's MLflow version is kept from the current lock unless `mlflow_version` says
    otherwise: it moves only when someone asks for it.
    """
    from mlflow_lab.core import docker

    version = mlflow_version or versions.class_mlflow_version()
    base = images.ensure_base_image(ctx, settings)
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
