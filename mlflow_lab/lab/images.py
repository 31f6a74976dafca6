"""Building the lab's images: base image choice, build inputs, and the two builds."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from invoke.context import Context
from invoke.runners import Result

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import engine, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import datasets
from mlflow_lab.lab.compose import Compose, disk_full_line, last_line, says_disk_full

BUILD_DIR = PROJECT_ROOT / ".lab-build"
BASE_RECIPE = PROJECT_ROOT / "docker" / "base" / "build.sh"
LOCAL_BASE_REPO = "mlflow-lab/base"
PULL_TIMEOUT_S = 120
INPUTS_LABEL = "org.mlflow-lab.inputs"
# A failed build with less than this free where the engine keeps its data ran out of room.
LOW_DISK_BYTES = 1024**3

# What each image is built from; a change to any of these makes `up` rebuild it.
IMAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "mlflow": ("docker/constraints.txt", "docker/mlflow", "docker/base"),
    "jupyter": (
        "docker/constraints.txt",
        "docker/mlflow",
        "docker/base",
        "docker/jupyter",
        "lab",
    ),
}


def inputs_digest(service: str) -> str:
    digest = hashlib.sha256()
    for entry in IMAGE_INPUTS[service]:
        root = PROJECT_ROOT / entry
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def image_label(image: str, label: str = INPUTS_LABEL) -> str | None:
    """The image's label value, "" when unlabelled, None when the image is absent."""
    result = _docker(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image
    )
    if result.returncode != 0:
        return None
    value = result.stdout.strip()
    return "" if value == "<no value>" else value


def image_id(image: str) -> str | None:
    """The image's ID (sha256:...), None when the image is absent."""
    result = _docker("image", "inspect", "--format", "{{.Id}}", image)
    return result.stdout.strip() if result.returncode == 0 else None


def stale_images(compose: Compose) -> list[str]:
    """Services whose image is missing or was built from other inputs than the tree's."""
    return [
        service
        for service in ("mlflow", "jupyter")
        if image_label(compose.image(service)) != inputs_digest(service)
    ]


def local_base_tag() -> str:
    recipe = hashlib.sha256(BASE_RECIPE.read_bytes()).hexdigest()[:12]
    return f"{LOCAL_BASE_REPO}:bookworm-{recipe}"


def _can_use(image: str) -> bool:
    if image_label(image) is not None:
        return True
    try:
        return _docker("pull", image, timeout=PULL_TIMEOUT_S).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _ensure_mmdebstrap(ctx: Context) -> None:
    if shutil.which("mmdebstrap"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("mmdebstrap is missing: installing it from Debian packages")
        result = ctx.run(
            "apt-get install -y --no-install-recommends mmdebstrap || "
            "(apt-get update && apt-get install -y --no-install-recommends mmdebstrap)",
            hide=True,
            warn=True,
        )
        if result is not None and result.ok:
            return
    raise LabError(
        "building the local base image needs mmdebstrap: install it "
        "(`sudo apt-get install mmdebstrap`) or set LAB_BASE_IMAGE to an image you can pull"
    )


def ensure_base_image(ctx: Context, settings: Settings) -> str:
    """The base image to build on, building the local one from Debian packages if needed."""
    choice = settings.base_image
    if choice not in ("auto", "local"):
        if not _can_use(choice):
            raise LabError(
                f"LAB_BASE_IMAGE={choice!r} is neither present nor pullable: fix the name "
                "or set it to `auto`"
            )
        return choice
    if choice == "auto":
        upstream = versions.upstream_base_image()
        if _can_use(upstream):
            return upstream
        print(
            f"The upstream base image {upstream} cannot be pulled (no registry reachable): "
            "using a base image built from Debian packages."
        )
    tag = local_base_tag()
    if image_label(tag) is not None:
        return tag
    _ensure_mmdebstrap(ctx)
    print(f"Building {tag} from Debian packages (about 30 s)...")
    mirror_env = {"LAB_DEBIAN_MIRROR": settings.debian_mirror} if settings.debian_mirror else {}
    result = ctx.run(f"sh {BASE_RECIPE} {tag}", hide="stdout", warn=True, env=mirror_env)
    if result is None or result.failed:
        lines = result.stderr.strip().splitlines() if result is not None else []
        tail = lines[-1] if lines else "no output"
        raise LabError(
            f"building the local base image failed ({tail}): check that the Debian mirror "
            "(LAB_DEBIAN_MIRROR) is reachable and the disk has space"
        )
    return tag


def _place_wheels(settings: Settings) -> bool:
    """Copy a matching CPU PyTorch wheel into the build context; True when one was found."""
    target = BUILD_DIR / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    version = versions.torch_version()
    wheels = (
        sorted(settings.wheels_dir.glob(f"torch-{version}-*.whl")) if settings.wheels_dir else []
    )
    wanted = {w.name for w in wheels}
    for stale in target.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    for wheel in wheels:
        copy = target / wheel.name
        if not copy.exists() or copy.stat().st_size != wheel.stat().st_size:
            shutil.copyfile(wheel, copy)
    return bool(wheels)


def prepare_build_context(settings: Settings) -> dict[str, str]:
    """Write .lab-build/ (CA bundle, wheels); return the build variables for compose."""
    BUILD_DIR.mkdir(exist_ok=True)
    ca_text = settings.ca_bundle.read_text(encoding="utf-8") if settings.ca_bundle else ""
    (BUILD_DIR / "ca-bundle.pem").write_text(ca_text, encoding="utf-8")
    build_env = {
        "BUILD_INPUTS_MLFLOW": inputs_digest("mlflow"),
        "BUILD_INPUTS_JUPYTER": inputs_digest("jupyter"),
    }
    if _place_wheels(settings):
        build_env["TORCH_INDEX_URL"] = ""
    if not engine.has_buildx():
        # Without buildx, Compose falls back to the classic builder anyway; saying so
        # up front avoids its warning. The Dockerfiles work with both builders.
        build_env["DOCKER_BUILDKIT"] = "0"
    return build_env


def _build_failure(service: str, result: Result) -> str:
    # A build step that runs out of space does not always say so (pip's and venv's
    # errors can hide it), so the engine's disk is looked at too.
    where, free = engine.free_space(engine.docker_root())
    if says_disk_full(result) or free < LOW_DISK_BYTES:
        return disk_full_line(f" ({free / 1024**3:.1f} GiB free on {where})")
    return (
        f"building the {service} image failed: {last_line(result)}: see the output above, "
        "fix it, then run the command again"
    )


def build(
    ctx: Context, settings: Settings, services: list[str] | None = None, *, no_cache: bool = False
) -> None:
    """Build the images (both by default); the MLflow image first, Jupyter builds on it."""
    todo = services or ["mlflow", "jupyter"]
    base = ensure_base_image(ctx, settings)
    build_env = {**prepare_build_context(settings), "BASE_IMAGE": base}
    compose = Compose(ctx, settings, extra_env=build_env)
    for service in ("mlflow", "jupyter"):
        if service in todo:
            print(f"Building the {service} image (base: {base})...")
            result = compose.run(f"build {'--no-cache ' if no_cache else ''}{service}", warn=True)
            if result.failed:
                raise LabError(_build_failure(service, result))
    if "jupyter" in todo:
        # A build is when this machine is most likely online: fetch the datasets then.
        for line in datasets.fetch(settings, compose.image("jupyter")):
            print(line)
