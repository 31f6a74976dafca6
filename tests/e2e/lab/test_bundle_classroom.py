"""`invoke bundle --classroom` to an empty, offline engine (issue 15).

The bundle is made on the main engine from the class images of the e2e tag
(`classroom`, built first when out of date) and loaded into a second engine of the
test's own, empty, with its data root on disk (the images are ~4 GB). There the
images must have the IDs they have here, and `classroom.up --no-build` must find them
up to date: it would build nothing. Without the class images (as after a lab-only
bundle) `classroom.up --no-build` says which one is missing and what makes a bundle
with them, and leaves that engine without a swarm.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_lab.classroom import bundled as class_bundled
from mlflow_lab.classroom import images as class_images
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.core import settings
from mlflow_lab.lab import bundle, course
from mlflow_lab.lab import images as lab_images
from mlflow_lab.lab.compose import JUPYTER, SERVICES, LabCompose
from tests.e2e.conftest import lab_env, run_invoke, served_course_repo
from tests.e2e.second_engine import Engine, links, second_engine
from tests.helpers import free_port

TAG = os.environ.get("LAB_E2E_CLASS_IMAGE_TAG", "classroom")
# Its own range (RFC 2544 benchmarking), not the disk-full test's.
BRIDGE_ADDRESS = "198.18.253.1/24"
STEP_TIMEOUT_S = 900
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CLASS_NAMES = [f"mlflow-lab/{key}:{TAG}" for key in class_bundled.KEYS]
NAMES = [*(f"mlflow-lab/{s}:{TAG}" for s in SERVICES), *CLASS_NAMES]


def inspect(names: list[str], host: str | None = None) -> dict[str, dict[str, object]]:
    """ID and size of each image on the engine `host` (the main one by default)."""
    argv = ["docker", *(["-H", host] if host else []), "image", "inspect", *names]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    found = json.loads(done.stdout or "[]")
    return {
        tag: {"id": image["Id"], "size": image["Size"]}
        for image in found
        for tag in image["RepoTags"]
        if tag in names
    }


@dataclass
class Loaded:
    engine: Engine
    offline: dict[str, str]  # the environment of the machine that loaded, on `engine`
    file: Path
    made: str
    loaded: str
    main: dict[str, dict[str, object]]
    commit: str


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    work = tmp_path_factory.mktemp("class-bundle")
    git_root = tmp_path_factory.mktemp("class-bundle-git")
    before = links()
    file = work / "class.bundle"
    try:
        with served_course_repo(git_root, "course") as daemon:
            env = {
                **os.environ,
                **lab_env(work / "state"),
                "LAB_IMAGE_TAG": TAG,
                "LAB_CLASS_STATE_DIR": str(work / "class-state"),
                "LAB_CLASS_PORT": str(free_port()),
                "LAB_REPO_URL": daemon.url,
            }
            made = run_invoke(
                env, "bundle", "--classroom", "--output", str(file), timeout=STEP_TIMEOUT_S
            ).stdout
            daemon.stop()  # from now on the course repo's URL leads nowhere
        main = inspect(NAMES)
        closed = f"http://127.0.0.1:{free_port()}"
        with second_engine(BRIDGE_ADDRESS) as engine:
            offline = {
                **{k: v for k, v in env.items() if k.upper() != "NO_PROXY"},
                **{name: closed for name in PROXY_VARIABLES},
                **{name.lower(): closed for name in PROXY_VARIABLES},
                "GIT_PROXY_COMMAND": "false",  # git:// goes through this, and it cannot connect
                "DOCKER_HOST": engine.host,
                "LAB_STATE_DIR": str(work / "there-state"),
                "LAB_CLASS_STATE_DIR": str(work / "there-class-state"),
            }
            assert inspect(NAMES, engine.host) == {}, "the second engine starts empty"
            done = run_invoke(offline, "load", str(file), timeout=STEP_TIMEOUT_S)
            yield Loaded(engine, offline, file, made, done.stdout, main, daemon.commit)
    finally:
        file.unlink(missing_ok=True)
        file.with_name(file.name + ".partial").unlink(missing_ok=True)
    # veths come and go with containers; the bridges (docker0...) must all be there.
    bridges = {name for name in before if not name.startswith("veth")}
    assert bridges <= links(), "the main engine's interfaces (docker0...) are all still there"


def test_the_bundle_carries_the_class_images_with_their_layers_once(loaded: Loaded) -> None:
    manifest = bundle.verify(loaded.file)
    assert manifest.mode == bundle.CLASSROOM
    assert {i.name: i.id for i in manifest.images} == {n: loaded.main[n]["id"] for n in NAMES}
    # One `docker save` stores the layers the student image shares with jupyter once:
    # the stream is smaller than the two of them saved apart.
    sizes = {name: int(str(entry["size"])) for name, entry in loaded.main.items()}
    notebook, jupyter = f"mlflow-lab/class-notebook:{TAG}", f"mlflow-lab/{JUPYTER}:{TAG}"
    assert manifest.images_size < sizes[notebook] + sizes[jupyter], (manifest.images_size, sizes)
    print(f"images: {manifest.images_size} bytes saved, {sum(sizes.values())} apart")
    out = loaded.made
    assert "[1/4] Images: the lab's and the class's images" in out, out
    last = out.splitlines()[-1]
    size = loaded.file.stat().st_size
    assert f"({size} bytes)" in last and f"sha256 {bundle.file_sha256(loaded.file)}" in last


def test_the_empty_engine_gets_the_very_images_and_classroom_up_would_build_nothing(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    there = inspect(NAMES, loaded.engine.host)
    assert {n: e["id"] for n, e in there.items()} == {n: e["id"] for n, e in loaded.main.items()}
    for name in CLASS_NAMES:
        assert f"Loaded image: {name}" in loaded.loaded, loaded.loaded
    assert loaded.loaded.splitlines()[-1].startswith(
        "Loaded class.bundle (the lab's and the class's images): "
    ), loaded.loaded

    # What `classroom.up --no-build` asks, asked of the second engine.
    monkeypatch.setenv("DOCKER_HOST", loaded.engine.host)
    room = class_settings.load(environ=loaded.offline)
    assert class_images.stale(room) == []
    assert lab_images.stale_images(LabCompose(room.lab)) == []
    # The class's course cache came with the bundle: students get the course offline.
    class_cache = course.cache_path(room.course_lab)
    assert course.branch_commit(class_cache, "dev") == loaded.commit
    lab_cache = course.cache_path(settings.load(loaded.offline))
    assert course.branch_commit(lab_cache, "dev") == loaded.commit


def test_without_the_class_images_no_build_names_the_missing_one_in_one_line(
    loaded: Loaded,
) -> None:
    # As after `invoke load` of a lab-only bundle: the lab's images, not the class's.
    removed = loaded.engine.docker("rmi", *CLASS_NAMES)
    assert removed.returncode == 0, removed.stderr
    result = run_invoke(loaded.offline, "classroom.up", "--no-build", check=False, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    missing = f"mlflow-lab/class-db:{TAG}"
    assert line.startswith(f"error: the class image {missing} is missing here"), line
    assert "`invoke bundle --classroom`" in line, line
    assert "Traceback" not in result.stdout + result.stderr
    info = loaded.engine.docker("info", "--format", "{{.Swarm.LocalNodeState}}")
    assert info.stdout.strip() == "inactive", "no swarm was made there"
