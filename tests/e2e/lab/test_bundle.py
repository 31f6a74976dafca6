"""The classroom bundle end to end (issue 7): bundle, wipe, load, `up` with no network.

Runs on its own project, ports, state dir and image tag. The images under that tag
are made from the shared `latest` ones plus a label, so each has an ID of its own:
removing them really removes them, and `docker load` really has to bring them back.
The shared images, and the developer's own lab, are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_lab.core import docker as gateway
from mlflow_lab.core import settings
from mlflow_lab.lab import bundle, course, layout
from mlflow_lab.lab.compose import SERVICES
from tests.e2e.conftest import (
    NOTEBOOKS,
    UP_TIMEOUT_S,
    assert_versioning_read_the_cache,
    housing_mirror,
    lab_env,
    run_invoke,
    run_notebook,
    served_course_repo,
)
from tests.helpers import free_port, served_folder

TAG = f"bundletest-{os.getpid()}"
TEST_LABEL = "org.mlflow-lab.bundle-test"
STEP_TIMEOUT_S = 900  # a bundle or a load of ~2.6 GB of images on 2 cores, with room
WORKSPACE = layout.WORKSPACE
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def invoke(
    env: dict[str, str], *args: str, timeout: float = STEP_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_invoke(env, *args, timeout=timeout, check=check)


def docker(*args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


def image_ids() -> dict[str, str | None]:
    return {s: gateway.image_id(f"mlflow-lab/{s}:{TAG}") for s in SERVICES}


def tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@dataclass
class Bundled:
    env: dict[str, str]
    file: Path
    ids: dict[str, str | None]
    state_dir: Path
    commit: str
    bundle_output: str

    def offline_env(self) -> dict[str, str]:
        """Every way out closed: proxies on a closed loopback port, git's too."""
        closed = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in self.env.items() if k.upper() != "NO_PROXY"}
        for name in PROXY_VARIABLES:
            env[name] = env[name.lower()] = closed
        env["GIT_PROXY_COMMAND"] = "false"  # git:// goes through this, and it cannot connect
        return env

    def wiped(self) -> bool:
        return all(i is None for i in image_ids().values()) and not any(self.state_dir.iterdir())


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundled]:
    """A lab that was up, bundled, then wiped: project destroyed, images and state gone."""
    state_dir = tmp_path_factory.mktemp("bundle-state")
    work = tmp_path_factory.mktemp("bundle-work")
    git_root = tmp_path_factory.mktemp("bundle-git")
    data_root = tmp_path_factory.mktemp("bundle-data")
    with served_course_repo(git_root, "course") as daemon:
        env = {
            **os.environ,
            **lab_env(state_dir),
            "LAB_PROJECT": f"mlflow-lab-bundle-{os.getpid()}",
            "LAB_IMAGE_TAG": TAG,
            "LAB_REPO_URL": daemon.url,
        }
        file = work / "lab.bundle"
        try:
            for service in SERVICES:
                name = f"mlflow-lab/{service}:{TAG}"
                label = f"{TEST_LABEL}={TAG}"
                docker(
                    "build",
                    "-q",
                    "--label",
                    label,
                    "-t",
                    name,
                    "-",
                    stdin=f"FROM mlflow-lab/{service}:latest\n",
                )
            invoke(env, "up", timeout=UP_TIMEOUT_S)  # the instructor's lab, with the network
            # The dataset list comes only now, so the bundle is what fetches it; its
            # source is gone once the bundle is made.
            with served_folder(data_root) as base:
                env["LAB_DATASETS_FILE"] = str(housing_mirror(data_root, base))
                made = invoke(env, "bundle", "--output", str(file), timeout=UP_TIMEOUT_S)
            ids = image_ids()
            daemon.stop()  # from now on the course repo's URL leads nowhere
            invoke(env, "destroy", "--yes", timeout=300)
            for service in reversed(SERVICES):  # Jupyter's image may be built on MLflow's
                docker("rmi", f"mlflow-lab/{service}:{TAG}")
            for entry in state_dir.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            yield Bundled(env, file, ids, state_dir, daemon.commit, made.stdout)
        finally:
            invoke(env, "destroy", "--yes", timeout=300, check=False)
            for service in reversed(SERVICES):
                docker("rmi", f"mlflow-lab/{service}:{TAG}", check=False)
            file.unlink(missing_ok=True)
            file.with_name(file.name + ".partial").unlink(missing_ok=True)
            for folder in (state_dir, git_root, work, data_root):
                shutil.rmtree(folder, ignore_errors=True)


def test_bundle_reports_its_steps_and_size(bundled: Bundled) -> None:
    out = bundled.bundle_output
    for step in ("[1/4] Images", "[2/4] Course repo", "[3/4] Saving", "[4/4] Lab material"):
        assert step in out, out
    size = bundled.file.stat().st_size
    assert f"({size} bytes)" in out.splitlines()[-1]
    assert "warning:" not in out
    manifest = bundle.verify(bundled.file)
    assert {i.service: i.id for i in manifest.images} == bundled.ids
    assert manifest.course.commit == bundled.commit
    assert manifest.course.url == bundled.env["LAB_REPO_URL"]
    assert "  Datasets: fetched california_housing" in out
    assert manifest.members["datasets/cal_housing_py3.pkz"].sha256


def _images_member(file: Path) -> tarfile.TarInfo:
    with tarfile.open(file, "r:") as tar:
        first = tar.next()
    assert first is not None and first.name.startswith("images.tar")
    return first


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_bundle_changes_nothing(bundled: Bundled, damage: str) -> None:
    assert bundled.wiped()
    member = _images_member(bundled.file)
    middle = member.offset_data + member.size // 2
    tail = b""
    with bundled.file.open("r+b") as f:
        if damage == "corrupt":
            f.seek(middle)
            byte = f.read(1)
            f.seek(middle)
            f.write(bytes([byte[0] ^ 0xFF]))
        else:  # as a copy cut short near the end of the images: the tail kept to put back
            cut = member.offset_data + member.size - (8 << 20)
            f.seek(cut)
            tail = f.read()
            f.truncate(cut)
    try:
        result = invoke(bundled.offline_env(), "load", str(bundled.file), check=False)
    finally:
        with bundled.file.open("r+b") as f:
            if damage == "corrupt":
                f.seek(middle)
                f.write(byte)
            else:
                f.seek(0, os.SEEK_END)
                f.write(tail)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {bundled.file} is damaged ("), line
    assert line.endswith("copy it again from the original"), line
    assert "Traceback" not in result.stdout + result.stderr
    assert bundled.wiped(), "no image loaded, nothing placed"


def test_load_then_up_with_no_network_builds_nothing_and_verify_passes(
    bundled: Bundled,
) -> None:
    assert bundled.wiped()
    offline = bundled.offline_env()
    loaded = invoke(offline, "load", str(bundled.file))
    assert "[1/3] Checking" in loaded.stdout and "[3/3] Course repo" in loaded.stdout
    assert "  loaded: " in loaded.stdout, "progress in bytes"
    assert image_ids() == bundled.ids, "the very images that were bundled"
    cache = course.cache_path(settings.load(offline))
    assert course.branch_commit(cache, "dev") == bundled.commit
    assert course.bundle_marker(cache).is_file()

    up = invoke(offline, "up", timeout=UP_TIMEOUT_S)
    assert "Building" not in up.stdout, up.stdout
    assert "warning:" not in up.stdout, up.stdout
    assert "Course repo: as bundled, not fetched" in up.stdout, up.stdout
    assert image_ids() == bundled.ids, "`up` rebuilt nothing"
    assert not course.bundle_marker(cache).exists(), "later `invoke clone`s fetch as usual"

    project = bundled.env["LAB_PROJECT"]
    container = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                       "--filter", "label=com.docker.compose.service=jupyter")  # fmt: skip
    listing = docker(
        "exec", container, "sh", "-c",
        f"ls {WORKSPACE}/course {WORKSPACE}/{course.BUNDLED_LAB_DIR};"
        f" git -C {WORKSPACE}/course rev-parse HEAD",
    ).split()  # fmt: skip
    assert {"01_intro.ipynb", "README.md", "mlflow_tracking_lab.ipynb"} <= set(listing), listing
    assert listing[-1] == bundled.commit

    verified = invoke(offline, "verify", timeout=120, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "in SCIKIT_LEARN_DATA: california_housing" in verified.stdout

    # The dataset fetched at bundle time, read offline by the course's own call.
    assert "datasets: cached: california_housing" in loaded.stdout, loaded.stdout
    assert_versioning_read_the_cache(
        run_notebook(container, NOTEBOOKS / "dataset_versioning.ipynb")
    )
