"""Building the lab's images: base image choice, build inputs, and the two builds."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import docker, git, versions
from mlflow_lab.core.docker import Result
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.progress import Step, Steps
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import datasets
from mlflow_lab.lab.compose import SERVICES, LabCompose

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
    return files_digest(IMAGE_INPUTS[service])


def files_digest(entries: tuple[str, ...], extra: str = "") -> str:
    """A short digest of these files and folders of the project (and `extra`)."""
    digest = hashlib.sha256(extra.encode())
    for entry in entries:
        root = PROJECT_ROOT / entry
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def image_label(image: str, label: str = INPUTS_LABEL) -> str | None:
    """The image's label value, "" when unlabelled, None when the image is absent."""
    return docker.image_label(image, label)


def stale_images(compose: LabCompose) -> list[str]:
    """Services whose image is missing or was built from other inputs than the tree's."""
    return [
        service
        for service in SERVICES
        if image_label(compose.image(service)) != inputs_digest(service)
    ]


def local_base_tag() -> str:
    recipe = hashlib.sha256(BASE_RECIPE.read_bytes()).hexdigest()[:12]
    return f"{LOCAL_BASE_REPO}:bookworm-{recipe}"


def _can_use(image: str) -> bool:
    return image_label(image) is not None or docker.pull(image, timeout=PULL_TIMEOUT_S)


def _apt_install(package: str) -> bool:
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    for argv in (install, ["apt-get", "update"], install):
        try:
            done = subprocess.run(argv, capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if done.returncode == 0 and argv is install:
            return True
    return shutil.which(package) is not None


def _ensure_mmdebstrap() -> None:
    if shutil.which("mmdebstrap"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("mmdebstrap is missing: installing it from Debian packages")
        if _apt_install("mmdebstrap"):
            return
    raise LabError(
        "building the local base image needs mmdebstrap: install it "
        "(`sudo apt-get install mmdebstrap`) or set LAB_BASE_IMAGE to an image you can pull"
    )


def ensure_base_image(settings: Settings, steps: Steps | None = None) -> str:
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
    return build_local_base(settings, tag, steps)


def build_local_base(settings: Settings, tag: str, steps: Steps | None = None) -> str:
    """The lab's own base image from Debian packages (docker/base/build.sh), as `tag`."""
    _ensure_mmdebstrap()
    mirror_env = {"LAB_DEBIAN_MIRROR": settings.debian_mirror} if settings.debian_mirror else {}
    steps = steps or build_steps(settings)
    with steps.step(f"Base image {tag} from Debian packages") as step:
        result = docker.call_lines(["sh", str(BASE_RECIPE), tag], on_line=step.line, env=mirror_env)
        if not result.ok:
            raise LabError(
                f"building the local base image failed ({result.last_line()}): check that the "
                "Debian mirror (LAB_DEBIAN_MIRROR) is reachable and the disk has space"
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


# --- The bundled lab's git history (docker/jupyter/Dockerfile puts it under lab/) ------
# Fixed identity, dates and message: the same versions of lab/ always give the same
# commits, and the Dockerfile commits a working tree that differs the same way.
LAB_COMMIT_ENV = {
    **{f"GIT_{who}_NAME": "mlflow-lab" for who in ("AUTHOR", "COMMITTER")},
    **{f"GIT_{who}_EMAIL": "mlflow-lab@localhost" for who in ("AUTHOR", "COMMITTER")},
    **{f"GIT_{who}_DATE": "2026-01-01T00:00:00Z" for who in ("AUTHOR", "COMMITTER")},
}
LAB_COMMIT_MESSAGE = "mlflow-lab bundled lab"


def _git(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    return git.output(*args, cwd=PROJECT_ROOT, env=env, input=stdin, timeout=120)


def prepare_lab_history(target: Path) -> None:
    """Make `target` a git repository with one commit per version of lab/, oldest first.

    The versions are those of the project's first-parent history, so a later checkout's
    history continues an earlier one's and a new image's lab is an ordinary update of the
    student's copy. Without git or git history `target` is left empty: the image build
    then gives the lab a one-commit history.
    """
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        revs = _git("log", "--first-parent", "--reverse", "--format=%H:./lab", "--", "lab")
        found = _git("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=revs)
        trees = [line.split()[0] for line in found.splitlines() if line.endswith(" tree")]
        if not trees:
            return
        # Reads the project's objects, writes only to target.
        objects = Path(PROJECT_ROOT, _git("rev-parse", "--git-common-dir"), "objects")
        env = {
            **os.environ,
            **LAB_COMMIT_ENV,
            "GIT_DIR": str(target),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects),
        }
        _git("init", "--quiet", "--bare", env=env)
        tip, last = "", ""
        for tree in trees:
            if tree != last:
                parent = ["-p", tip] if tip else []
                tip = _git("commit-tree", tree, *parent, "-m", LAB_COMMIT_MESSAGE, env=env)
                last = tree
        _git("update-ref", "refs/heads/main", tip, env=env)
        _git("symbolic-ref", "HEAD", "refs/heads/main", env=env)
        # Copies the borrowed objects in; one thread packs the same bytes every time.
        _git("-c", "pack.threads=1", "repack", "-a", "-d", "-q", env=env)
        _git("config", "core.bare", "false", env=env)
    except (OSError, subprocess.SubprocessError):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()


# --------------------------------------------------------------------------------------


def prepare_build_context(settings: Settings) -> dict[str, str]:
    """Write .lab-build/ (CA bundle, wheels, lab history); return the build variables."""
    BUILD_DIR.mkdir(exist_ok=True)
    prepare_lab_history(BUILD_DIR / "lab.git")
    ca_text = settings.ca_bundle.read_text(encoding="utf-8") if settings.ca_bundle else ""
    (BUILD_DIR / "ca-bundle.pem").write_text(ca_text, encoding="utf-8")
    build_env = {
        "BUILD_INPUTS_MLFLOW": inputs_digest("mlflow"),
        "BUILD_INPUTS_JUPYTER": inputs_digest("jupyter"),
    }
    if _place_wheels(settings):
        build_env["TORCH_INDEX_URL"] = ""
    if not docker.has_buildx():
        # Without buildx, Compose falls back to the classic builder anyway; saying so
        # up front avoids its warning. The Dockerfiles work with both builders.
        build_env["DOCKER_BUILDKIT"] = "0"
    return build_env


BUILD_LOG = "build.log"


def build_steps(settings: Settings, *, verbose: bool = False) -> Steps:
    """The build display: one line a step; the whole log in the state dir."""
    return Steps(settings.state_dir / BUILD_LOG, verbose=verbose)


def _build_failure(service: str, result: Result, log: str) -> str:
    # A build step that runs out of space does not always say so (pip's and venv's
    # errors can hide it), so the engine's disk is looked at too.
    where, free = docker.free_space()
    if result.disk_full() or free < LOW_DISK_BYTES:
        return docker.disk_full_line(f" ({free / 1024**3:.1f} GiB free on {where})")
    return (
        f"building the {service} image failed: {result.last_line()}: the full log is in "
        f"{log}; fix it, then run the command again"
    )


def _build_one(compose: LabCompose, service: str, step: Step, *, no_cache: bool) -> Result:
    return compose.project.logged(
        "build", *(["--no-cache"] if no_cache else []), service, on_line=step.line
    )


def build(
    settings: Settings,
    services: list[str] | None = None,
    *,
    no_cache: bool = False,
    verbose: bool = False,
) -> None:
    """Build the images (all by default) in compose.yaml's order: Jupyter builds on MLflow."""
    todo = services or list(SERVICES)
    steps = build_steps(settings, verbose=verbose)
    base = ensure_base_image(settings, steps)
    build_env = {**prepare_build_context(settings), "BASE_IMAGE": base}
    compose = LabCompose(settings, extra_env=build_env)
    for service in SERVICES:
        if service in todo:
            with steps.step(f"The {service} image, on {base}") as step:
                result = _build_one(compose, service, step, no_cache=no_cache)
                if not result.ok:
                    raise LabError(_build_failure(service, result, str(steps.log_path)))
    if "jupyter" in todo:
        # A build is when this machine is most likely online: fetch the datasets then.
        for line in datasets.fetch(settings, compose.image("jupyter")):
            print(line)
