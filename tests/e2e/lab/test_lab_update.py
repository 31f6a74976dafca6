"""A new image's bundled lab reaches the student's copy without losing their work.

Every image carries the bundled lab as a git history that the next image's continues
(one commit per version of lab/). After an update of mlflow-lab (a new image), `invoke
up` must merge the new lab into the student's `mlflow-tracking-lab/` like any update:
their edits and files stay in place, nothing is moved to a backup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_lab.lab.compose import SERVICES
from tests.e2e.conftest import UP_TIMEOUT_S, lab_env, run_invoke
from tests.e2e.lab.test_bundle import docker

TAG = f"e2e-update-{os.getpid()}"
BASE_TAG = os.environ.get("LAB_IMAGE_TAG", "latest")  # the images this release is made of
BUNDLED = "/home/student/workspace/mlflow-tracking-lab"
# The next release's bundled lab: one new file, committed on top of this release's history
# as the next image build does (docker/jupyter/Dockerfile).
NEXT_RELEASE = f"""FROM mlflow-lab/jupyter:{BASE_TAG}
USER root
RUN cd /opt/mlflow-lab/lab \\
 && printf 'new in the next release\\n' > WHATS_NEW.md && git add -A \\
 && git -c user.name=mlflow-lab -c user.email=mlflow-lab@localhost commit -q -m "next release"
USER student
"""


@dataclass
class Stack:
    env: dict[str, str]

    def container(self, service: str) -> str:
        return docker(
            "ps",
            "--quiet",
            "--filter",
            f"label=com.docker.compose.project={self.env['LAB_PROJECT']}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        )

    def shell(self, script: str) -> str:
        return docker("exec", self.container("jupyter"), "bash", "-c", script)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    env = {
        **os.environ,
        **lab_env(tmp_path / "state"),
        "LAB_PROJECT": f"mlflow-lab-update-{os.getpid()}",
        "LAB_IMAGE_TAG": TAG,
    }
    for service in SERVICES:
        docker("tag", f"mlflow-lab/{service}:{BASE_TAG}", f"mlflow-lab/{service}:{TAG}")
    try:
        yield Stack(env)
    finally:
        run_invoke(env, "destroy", "--yes", timeout=300, check=False)
        for service in reversed(SERVICES):
            docker("rmi", f"mlflow-lab/{service}:{TAG}", check=False)


def test_a_new_images_bundled_lab_is_merged_into_the_students_copy(stack: Stack) -> None:
    run_invoke(stack.env, "up", timeout=UP_TIMEOUT_S)
    stack.shell(f"cd {BUNDLED} && printf '\\nmy notes\\n' >> README.md && echo mine > my_notes.txt")
    readme = stack.shell(f"cat {BUNDLED}/README.md")

    docker("build", "-q", "--force-rm", "-t", f"mlflow-lab/jupyter:{TAG}", "-", stdin=NEXT_RELEASE)
    again = run_invoke(stack.env, "up", timeout=UP_TIMEOUT_S)

    line = next(x for x in again.stdout.splitlines() if x.startswith("Bundled lab:"))
    assert "updated" in line and "1 file updated" in line, line
    assert stack.shell(f"cat {BUNDLED}/WHATS_NEW.md") == "new in the next release"
    assert stack.shell(f"cat {BUNDLED}/README.md") == readme
    assert stack.shell(f"cat {BUNDLED}/my_notes.txt") == "mine"
    assert stack.shell(f"ls -d {BUNDLED}_backup_* 2>/dev/null || true") == ""
    # And once more: nothing new, nothing touched.
    third = run_invoke(stack.env, "up", timeout=UP_TIMEOUT_S)
    assert "is up to date" in third.stdout
