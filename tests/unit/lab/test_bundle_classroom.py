"""`invoke bundle --classroom`: the class images in the bundle, in its manifest, at load.

Fake images and a scripted Docker gateway (FakeDocker): no engine.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.classroom import bundled as class_bundled
from mlflow_lab.classroom import images as class_images
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.classroom import stack
from mlflow_lab.core import docker, settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import bundle, course, images
from mlflow_lab.lab.compose import JUPYTER
from tests.helpers import FakeDocker, isolate_settings
from tests.unit.lab.test_bundle import (
    CODEC,
    IMAGES_DATA,
    URL,
    docker_save_stream,
    fake_images,
    git,
)

JUPYTER_ID = f"sha256:{'j' * 64}"
LABEL_FORMAT = f'{{{{index .Config.Labels "{images.INPUTS_LABEL}"}}}}'


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_settings(monkeypatch, tmp_path)
    for name in class_settings.SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_CLASS_STATE_DIR", str(tmp_path / "class-state"))
    monkeypatch.setenv("LAB_REPO_URL", URL)


def class_images_of(tag: str = "latest") -> tuple[bundle.Image, ...]:
    """The four class images as `bundle --classroom` lists them, labelled as they would be
    built beside the lab's fake jupyter image."""
    return tuple(
        bundle.Image(
            key,
            f"mlflow-lab/{key}:{tag}",
            f"sha256:{str(n) * 64}",
            class_bundled.expected_inputs(key, JUPYTER_ID),
        )
        for n, key in enumerate(class_bundled.KEYS)
    )


def classroom_images() -> tuple[bundle.Image, ...]:
    lab = tuple(
        bundle.Image(i.service, i.name, JUPYTER_ID if i.service == JUPYTER else i.id, i.inputs)
        for i in fake_images()
    )
    return (*lab, *class_images_of())


def manifest_of(images_: tuple[bundle.Image, ...], mode: str) -> bundle.Manifest:
    return bundle.Manifest(
        "2026-01-01T00:00:00Z", "0.1.0", None, "3.0", "zstd", CODEC.member, 7, images_,
        bundle.Course(URL, "dev", None, (), None), {CODEC.member: bundle.Member(3, "0" * 64)},
        mode,
    )  # fmt: skip


def test_the_manifest_records_the_mode_and_every_class_image() -> None:
    manifest = manifest_of(classroom_images(), bundle.CLASSROOM)
    document = json.loads(json.dumps(manifest.document()))
    assert document["mode"] == "classroom"
    assert list(document["images"]["services"]) == [
        "mlflow", "jupyter", "class-db", "class-mlflow", "class-hub", "class-notebook",
    ]  # fmt: skip
    assert document["images"]["services"]["class-hub"]["name"] == "mlflow-lab/class-hub:latest"
    assert bundle.parse_manifest(document) == manifest

    lab_only = manifest_of(fake_images(), bundle.LAB).document()
    assert lab_only["mode"] == "lab"
    assert bundle.parse_manifest(lab_only).mode == bundle.LAB


def test_a_format_2_manifest_is_a_lab_only_bundle() -> None:
    document = manifest_of(fake_images(), bundle.LAB).document()
    document["format_version"] = 2
    del document["mode"]
    assert bundle.parse_manifest(document).mode == bundle.LAB


@pytest.mark.parametrize(
    ("mode", "drop", "message"),
    [
        ("classroom", "class-hub", "not the classroom mode's"),
        ("lab", None, "not the lab mode's"),  # a lab-only manifest listing class images
        ("everything", None, "unknown mode 'everything'"),
    ],
)
def test_a_manifest_whose_images_do_not_fit_its_mode_is_refused(
    mode: str, drop: str | None, message: str
) -> None:
    document = manifest_of(classroom_images(), bundle.CLASSROOM).document()
    document["mode"] = mode
    if drop:
        del document["images"]["services"][drop]
    with pytest.raises(bundle.ManifestError, match=message):
        bundle.parse_manifest(document)


def test_load_checks_the_class_images_against_this_checkout_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = manifest_of(classroom_images(), bundle.CLASSROOM)
    path = tmp_path / "class.bundle"
    monkeypatch.setattr(bundle, "_images_present", lambda m: True)
    bundle.check_fits(manifest, settings.load(), path)  # as made: fine

    monkeypatch.setenv("LAB_IMAGE_TAG", "other")
    with pytest.raises(LabError, match="set LAB_IMAGE_TAG=latest"):
        bundle.check_fits(manifest, settings.load(), path)
    monkeypatch.delenv("LAB_IMAGE_TAG")

    # The student image follows the jupyter image it was built on: another one is stale.
    other_jupyter = tuple(
        bundle.Image(i.service, i.name, f"sha256:{'k' * 64}", i.inputs)
        if i.service == JUPYTER
        else i
        for i in manifest.images
    )
    with pytest.raises(LabError, match="its class-notebook image would be rebuilt by `invoke"):
        bundle.check_fits(manifest_of(other_jupyter, bundle.CLASSROOM), settings.load(), path)

    real = class_images.inputs_digest
    monkeypatch.setattr(
        class_images,
        "inputs_digest",
        lambda name, extra="": "0" * 16 if name == "hub" else real(name, extra),
    )
    with pytest.raises(LabError, match=r"class-hub image would be rebuilt by `invoke classroom"):
        bundle.check_fits(manifest, settings.load(), path)


def test_a_class_image_under_a_foreign_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crafted = tuple(
        bundle.Image(i.service, "python:3.11", i.id, i.inputs) if i.service == "class-db" else i
        for i in classroom_images()
    )
    monkeypatch.setattr(bundle, "_images_present", lambda m: True)
    with pytest.raises(LabError, match=r"not the lab's or the class's \(python:3.11\)"):
        bundle.check_fits(manifest_of(crafted, bundle.CLASSROOM), settings.load(), tmp_path / "b")


def test_the_image_stream_may_tag_the_class_images_and_nothing_else(tmp_path: Path) -> None:
    ours = classroom_images()
    names, ids = [i.name for i in ours], [i.id for i in ours]
    path = tmp_path / "class.bundle"
    staged = tmp_path / CODEC.member
    classroom = manifest_of(ours, bundle.CLASSROOM)

    staged.write_bytes(docker_save_stream(names, ids))
    bundle.check_images(staged, classroom, path)  # the lab's and the class's: fine

    staged.write_bytes(docker_save_stream([*names, "python:3.11"], [*ids, f"sha256:{'e' * 64}"]))
    with pytest.raises(LabError, match=r"not the lab's or the class's \(python:3.11\)"):
        bundle.check_images(staged, classroom, path)

    # A lab-only bundle does not carry class images: in its stream they are foreign.
    lab_only = manifest_of(ours[:2], bundle.LAB)
    staged.write_bytes(docker_save_stream(names, ids))
    with pytest.raises(LabError, match=r"not the lab's \(mlflow-lab/class-db:latest\)"):
        bundle.check_images(staged, lab_only, path)


class Engine:
    """Images by name, answering the gateway's `image inspect` calls."""

    def __init__(self, fake: FakeDocker, found: dict[str, tuple[str, str]]) -> None:
        self.found = found  # name -> (id, inputs label)
        fake.on(r"^docker image inspect --format \{\{\.Id\}\} ", self.image_id)
        fake.on(r"^docker image inspect --format \{\{index ", self.label)

    def image_id(self, argv: list[str]) -> docker.Result:
        entry = self.found.get(argv[-1])
        return docker.Result((), 0, entry[0]) if entry else docker.Result((), 1, "", "No such")

    def label(self, argv: list[str]) -> docker.Result:
        entry = self.found.get(argv[-1])
        return docker.Result((), 0, entry[1]) if entry else docker.Result((), 1, "", "No such")


def up_to_date_engine(fake: FakeDocker, stale_class: tuple[str, ...] = ()) -> Engine:
    found = {
        f"mlflow-lab/{service}:latest": (
            JUPYTER_ID if service == JUPYTER else f"sha256:{'m' * 64}",
            images.inputs_digest(service),
        )
        for service in ("mlflow", "jupyter")
    }
    for image in class_images_of():
        label = "stale" if class_bundled.image_of(image.service) in stale_class else image.inputs
        found[image.name] = (image.id, label)
    return Engine(fake, found)


def test_bundled_images_builds_stale_class_images_then_lists_all_six(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = up_to_date_engine(fake_docker, stale_class=("hub",))
    built: list[list[str]] = []

    def build(room: class_settings.ClassSettings, names: list[str]) -> None:
        built.append(names)
        for name in names:
            image = room.image(name)
            engine.found[image] = (engine.found[image][0], class_images._wanted(room, name))

    monkeypatch.setattr(class_images, "build", build)
    listed = bundle._bundled_images(settings.load(), bundle.CLASSROOM)
    assert built == [["hub"]], "only the stale class image is built"
    assert [i.service for i in listed] == list(bundle.MODE_IMAGES[bundle.CLASSROOM])
    assert [i.name for i in listed][2:] == [i.name for i in class_images_of()]
    assert listed == classroom_images()

    lab_only = bundle._bundled_images(settings.load(), bundle.LAB)
    assert [i.service for i in lab_only] == ["mlflow", "jupyter"]


def test_one_docker_save_carries_every_image_of_a_classroom_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = classroom_images()
    saved = tmp_path / "saved.tar"
    saved.write_bytes(IMAGES_DATA)
    saves: list[list[str]] = []

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        saves.append(list(args))
        return subprocess.Popen(["cat", str(saved)], **kwargs)

    monkeypatch.setattr(docker, "popen", popen)
    monkeypatch.setattr(docker, "engine_version", lambda: "20.10")
    monkeypatch.setattr(bundle, "_bundled_images", lambda lab, mode: ours)
    monkeypatch.setattr(bundle.datasets, "fetch", lambda lab, image: [])
    monkeypatch.setattr(bundle.datasets, "bundle_dir", lambda lab: None)
    no_course = bundle.Course(URL, "dev", None, (), None)
    monkeypatch.setattr(bundle, "_course_to_bundle", lambda lab, into: (no_course, None))
    output = tmp_path / "class.bundle"
    bundle.create(settings.load(), output, classroom=True)

    assert saves == [["save", *(i.name for i in ours)]], "one `docker save` of all six"
    manifest = bundle.verify(output)
    assert manifest.mode == bundle.CLASSROOM
    assert manifest.images == ours
    assert manifest.images_size == len(IMAGES_DATA)
    out = capsys.readouterr().out
    assert "[1/4] Images: the lab's and the class's images" in out
    last = out.splitlines()[-1]
    assert f"({output.stat().st_size} bytes)" in last
    assert f"sha256 {bundle.file_sha256(output)}" in last
    assert "`invoke classroom.up --no-build`" in last


def test_load_of_a_classroom_bundle_places_the_course_for_the_class_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    git("init", "-q", "-b", "dev", str(work))
    (work / "README.md").write_text("course\n", encoding="utf-8")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "v1", cwd=work)
    lab = settings.load()
    cache = course.cache_path(lab)
    cache.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(cache))
    commit = course.branch_commit(cache, "dev")
    path = tmp_path / "class.bundle"
    git_bundle, shallow = bundle._git_bundle(cache, "dev", tmp_path)
    entry = bundle.Course(URL, "dev", commit, shallow, None)
    with path.open("wb") as out:
        bundle.write_bundle(
            out, CODEC, [IMAGES_DATA], [len(IMAGES_DATA)], classroom_images(), entry,
            git_bundle, mode=bundle.CLASSROOM,
        )  # fmt: skip
    monkeypatch.setattr(bundle, "_images_present", lambda m: True)
    monkeypatch.setattr(docker, "engine_version", lambda: "20.10")
    bundle.load(lab, path)

    room = class_settings.load(lab=lab)
    class_cache = course.cache_path(room.course_lab)
    assert class_cache != cache and class_cache.is_relative_to(room.state_dir)
    assert course.branch_commit(class_cache, "dev") == commit
    assert not course.bundle_marker(class_cache).exists(), "the class fetches as before"
    assert course.bundle_marker(cache).is_file()
    out = capsys.readouterr().out
    assert "it holds the lab's and the class's images" in out
    assert "all 6 images are already here" in out
    assert out.splitlines()[-1].startswith(f"Loaded {path.name} (the lab's and the class's")


def test_no_build_names_the_missing_class_image_and_the_bundle_that_has_it(
    fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after loading a lab-only bundle: the lab's images, none of the class's.
    engine = up_to_date_engine(fake_docker)
    for image in class_images_of():
        del engine.found[image.name]
    room = class_settings.load()
    with pytest.raises(LabError) as caught:
        stack.up(room, build=False)
    line = str(caught.value)
    assert line.startswith("the class image mlflow-lab/class-db:latest is missing here (so are ")
    assert "`invoke bundle --classroom`" in line and "\n" not in line
    assert all(c.argv[:3] == ["docker", "image", "inspect"] for c in fake_docker.calls), (
        "nothing else happens first: no swarm, no port probe"
    )


def test_the_space_check_counts_the_class_images_in_the_one_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = manifest_of(classroom_images(), bundle.CLASSROOM)
    present = {i.name for i in manifest.images[:2]}  # the lab's are here, the class's not
    monkeypatch.setattr(docker, "image_id", lambda name: next(
        (i.id for i in manifest.images if i.name == name and name in present), None
    ))  # fmt: skip
    monkeypatch.setattr(docker, "free_space", lambda: ("/var/lib/docker", manifest.images_size - 1))
    with pytest.raises(LabError, match=r"the images need up to 7 B on /var/lib/docker"):
        bundle.check_fits(manifest, settings.load(), tmp_path / "class.bundle")
    monkeypatch.setattr(docker, "free_space", lambda: ("/var/lib/docker", manifest.images_size))
    bundle.check_fits(manifest, settings.load(), tmp_path / "class.bundle")
