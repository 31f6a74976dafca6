"""Re-resolving docker/constraints.txt: every package of both images, pinned together."""

from __future__ import annotations

import shlex

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
