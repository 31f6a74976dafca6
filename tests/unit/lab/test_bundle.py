"""Bundles made from small fake inputs: writing, checking, damage, placing. No Docker."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab.core import docker, settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import bundle, course, images, layout
from tests.e2e.conftest import PROJECT_ROOT
from tests.helpers import isolate_settings

CODEC = bundle.CODECS[0]
IMAGES_DATA = bytes(range(256)) * 9000  # several chunks' worth, not a multiple of 512
URL = "git://127.0.0.1:9/course"


def fake_images() -> tuple[bundle.Image, ...]:
    return tuple(
        bundle.Image(s, f"mlflow-lab/{s}:latest", f"sha256:{s[0] * 64}", images.inputs_digest(s))
        for s in ("mlflow", "jupyter")
    )


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_REPO_URL", URL)


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A bare course cache with branch dev, as `fetch_course_repo` leaves it."""
    work = tmp_path / "work"
    git("init", "-q", "-b", "dev", str(work))
    (work / "README.md").write_text("course\n", encoding="utf-8")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "v1", cwd=work)
    target = course.cache_path(settings.load())
    target.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(target))
    return target


def make_bundle(
    path: Path,
    cache: Path | None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    images_data: bytes = IMAGES_DATA,
) -> bundle.Manifest:
    """A bundle of fake images plus the real lab/ and `cache`; `edit` alters its manifest."""
    lab = settings.load()
    commit = course.branch_commit(cache, "dev") if cache else None
    git_bundle, shallow = bundle._git_bundle(cache, "dev", path.parent) if cache else (None, ())
    entry = bundle.Course(lab.repo_url, "dev", commit, shallow, None)
    chunks = [images_data[i : i + 5000] for i in range(0, len(images_data), 5000)]
    with path.open("wb") as out:
        if edit is None:
            return bundle.write_bundle(
                out, CODEC, chunks, [len(images_data)], fake_images(), entry, git_bundle
            )
        writer = bundle.Writer(out)
        writer.add_stream(CODEC.member, chunks, bundle.Progress("w", stream=io.StringIO()))
        writer.add_tree(bundle.LAB_PREFIX, bundle.LAB_DIR)
        manifest = bundle.Manifest(
            "2026-01-01T00:00:00Z", "0.1.0", None, "3.0", "zstd", CODEC.member, 1,
            fake_images(), entry, writer.members,
        )  # fmt: skip
        document = manifest.document()
        edit(document)
        writer.add_bytes(bundle.MANIFEST_NAME, json.dumps(document).encode())
        out.write(bytes(1024))
        return manifest


def test_a_bundle_reads_back_with_every_member_checked(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "lab.bundle"
    written = make_bundle(path, cache)
    checked = bundle.verify(path)
    assert checked == written
    assert checked.members[CODEC.member] == bundle.Member(
        len(IMAGES_DATA), hashlib.sha256(IMAGES_DATA).hexdigest()
    )
    assert checked.course.commit == course.branch_commit(cache, "dev")
    assert bundle.COURSE_MEMBER in checked.members
    assert "lab/README.md" in checked.members
    # An ordinary tar: other tools read it, and the images member is intact.
    with tarfile.open(path) as tar:
        assert tar.getnames()[-1] == bundle.MANIFEST_NAME
        images_member = tar.extractfile(CODEC.member)
        assert images_member is not None and images_member.read() == IMAGES_DATA


def test_the_manifest_round_trips_through_json() -> None:
    manifest = bundle.Manifest(
        "2026-01-01T00:00:00Z", "0.1.0", "c" * 40, "3.0", "gzip", "images.tar.gz", 7,
        fake_images(), bundle.Course(URL, "dev", None, (), "offline"),
        {"images.tar.gz": bundle.Member(3, "0" * 64), "lab": bundle.Member(None, None)},
    )  # fmt: skip
    assert bundle.parse_manifest(json.loads(json.dumps(manifest.document()))) == manifest


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x55]))


def test_a_changed_byte_in_the_images_is_found(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    flip_byte(path, 512 + len(IMAGES_DATA) // 2)
    with pytest.raises(LabError, match=r"is damaged \(checksum mismatch in images.tar.zst\)"):
        bundle.verify(path)


def test_a_changed_byte_in_a_header_is_found(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    header = 512 + len(IMAGES_DATA) + (-len(IMAGES_DATA) % 512)  # lab/'s header
    flip_byte(path, header + 3)
    with pytest.raises(LabError, match=r"is damaged .*copy it again"):
        bundle.verify(path)


@pytest.mark.parametrize("cut", ["header", "images", "lab", "course", "manifest"])
def test_a_truncated_bundle_is_damaged(tmp_path: Path, cache: Path, cut: str) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    with tarfile.open(path) as tar:
        starts = {
            "header": 100,
            "images": tar.getmember(CODEC.member).offset_data + len(IMAGES_DATA) // 2,
            "lab": tar.getmember("lab/README.md").offset_data + 10,
            "course": tar.getmember(bundle.COURSE_MEMBER).offset_data + 5,
            "manifest": tar.getmember(bundle.MANIFEST_NAME).offset_data + 20,
        }
    with path.open("r+b") as f:
        f.truncate(starts[cut])
    with pytest.raises(LabError, match=rf"^{path} is damaged \(.*\): copy it again"):
        bundle.verify(path)


def test_not_a_bundle_and_no_bundle_say_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_text("hello\n", encoding="utf-8")
    with pytest.raises(LabError, match="is damaged"):
        bundle.verify(junk)
    with pytest.raises(LabError, match="no such file"):
        bundle.verify(tmp_path / "missing.bundle")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("format", "something-else"), "not a bundle this mlflow-lab can load"),
        (_set("format_version", 1), "bundle format 1"),
        (_set("images.services.mlflow.id", KeyError), "no valid 'id'"),
        (_set("images.compression", "lz4"), "unknown compression"),
        (_set("course", {"url": URL, "branch": "dev", "commit": "c", "shallow": []}), "odd"),
        (_set("course.commit", "c" * 40), "a course commit without its git bundle"),
        (_set("course.shallow", ["--upload-pack=touch /tmp/x"]), "odd commit"),
        (
            lambda d: d["members"].update({"../escape": {"type": "dir"}}),
            "unsafe member name",
        ),
        (
            lambda d: d["members"].update({"lab/ghost.txt": {"type": "file", "size": 1}}),
            "no valid 'sha256'",
        ),
        (
            lambda d: d["members"].update(
                {"lab/ghost.txt": {"type": "file", "size": 1, "sha256": "0" * 64}}
            ),
            r"1 member\(s\) missing, e.g. lab/ghost.txt",
        ),
        (lambda d: d["members"].pop("lab/README.md"), "lab/README.md is not in its manifest"),
        (
            lambda d: d["members"]["lab/README.md"].update({"sha256": "0" * 64}),
            "checksum mismatch in lab/README.md",
        ),
    ],
)
def test_a_wrong_manifest_is_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, None, edit)
    with pytest.raises(LabError, match=message) as caught:
        bundle.verify(path)
    assert "\n" not in str(caught.value)


def test_load_of_a_damaged_bundle_changes_nothing(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    flip_byte(path, 512 + 10)
    state = settings.load().state_dir
    before = sorted(p.relative_to(state) for p in state.rglob("*"))

    def no_docker(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"nothing may run: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_docker)
    monkeypatch.setattr(subprocess, "run", no_docker)
    monkeypatch.setattr(docker, "engine_version", no_docker)
    with pytest.raises(LabError, match="is damaged"):
        bundle.load(settings.load(), path)
    assert sorted(p.relative_to(state) for p in state.rglob("*")) == before


def test_load_refuses_a_bundle_made_for_other_settings_or_sources(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.bundle"
    manifest = make_bundle(path, cache)
    lab = settings.load()
    monkeypatch.setattr(bundle, "_images_present", lambda m: True)
    bundle.check_fits(manifest, lab, path)  # the settings it was made with: fine
    monkeypatch.setenv("LAB_IMAGE_TAG", "other")
    with pytest.raises(LabError, match="set LAB_IMAGE_TAG=latest"):
        bundle.check_fits(manifest, settings.load(), path)
    monkeypatch.delenv("LAB_IMAGE_TAG")
    monkeypatch.setenv("LAB_REPO_URL", "git://127.0.0.1:9/other")
    with pytest.raises(LabError, match="set them as on the machine that made the bundle"):
        bundle.check_fits(manifest, settings.load(), path)
    monkeypatch.setattr(images, "inputs_digest", lambda service: "0" * 16)
    with pytest.raises(LabError, match="made by another version of mlflow-lab"):
        bundle.check_fits(manifest, lab, path)


def test_the_course_cache_is_placed_and_the_first_placement_skips_the_fetch(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    commit = course.branch_commit(cache, "dev")
    (cache / "stale-file").write_text("from an older fetch\n", encoding="utf-8")
    stage = tmp_path / "stage"
    stage.mkdir()
    manifest = bundle.verify(path, stage=stage)
    bundle._place_course(stage / "course.bundle", manifest, settings.load())
    assert not (cache / "stale-file").exists(), "the bundled cache replaces the old one whole"
    assert course.branch_commit(cache, "dev") == commit
    assert git("--git-dir", str(cache), "show", f"{commit}:README.md") == "course"
    assert git("--git-dir", str(cache), "config", "remote.origin.url") == URL
    assert course.bundle_marker(cache).read_text(encoding="utf-8").strip() == commit
    assert sorted(p.name for p in cache.parent.iterdir()) == sorted(
        [cache.name, course.bundle_marker(cache).name]
    ), "no .partial or .old folder is left"

    fetches: list[str] = []
    synced: list[str] = []

    def fetch(lab: settings.Settings) -> course.Fetched:
        fetches.append(lab.repo_url)
        return course.Fetched(cache, "offline")

    monkeypatch.setattr(course, "fetch_course_repo", fetch)

    def sync(compose: object, source: str, branch: str, dest: str) -> str:
        synced.append(source)
        return "cloned"

    monkeypatch.setattr(course, "_sync_in_container", sync)
    first = course.place_course_repo(None, settings.load())  # type: ignore[arg-type]
    assert fetches == [], "right after a load the bundled cache is used as is"
    assert synced == [f"{layout.COURSE_CACHE_MOUNT}/{cache.name}"]
    assert first[-1].startswith("as bundled, not fetched")
    assert not course.bundle_marker(cache).exists()
    second = course.place_course_repo(None, settings.load())  # type: ignore[arg-type]
    assert fetches == [URL], "later placements fetch as usual"
    assert second[0] == "warning: offline"


def test_progress_prints_a_line_per_step_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    progress = bundle.Progress("written", total=4 * bundle.Progress.LOG_EVERY, stream=out)
    for _ in range(8):
        progress.add(bundle.Progress.LOG_EVERY // 2)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines[0] == "  written: 256.0 MiB of 1.0 GiB (25%)"
    assert len(lines) == 5
    assert lines[-1].startswith("  written: 1.0 GiB of 1.0 GiB (100%) in ")


def test_the_cli_reports_a_damaged_bundle_in_one_line(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    env = {
        "PATH": "/usr/bin:/bin",
        "LAB_STATE_DIR": str(tmp_path / "state"),
        "LAB_JUPYTER_TOKEN": "t" * 48,
        "LAB_REPO_URL": URL,
    }
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "load", str(path)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path} is damaged (")
    assert line.endswith("): copy it again from the original")
    assert "Traceback" not in result.stdout + result.stderr


def test_bundle_and_load_read_like_a_manual() -> None:
    from invoke.collection import Collection

    import tasks

    collection = Collection.from_module(tasks)
    for name in ("bundle", "load"):
        task = collection[name]
        assert task.__doc__ and task.__doc__.strip(), name
        for arg in task.get_arguments():
            assert arg.help, f"{name} --{arg.name} has no help"


def test_only_plain_files_and_folders_are_bundled(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "notes.txt").write_text("x\n", encoding="utf-8")
    (tree / "link").symlink_to("/etc/passwd")
    with (tmp_path / "out.tar").open("wb") as out, pytest.raises(LabError, match="link is not"):
        bundle.Writer(out).add_tree("lab", tree)


# -- crafted bundles: nothing may happen on the host ----------------------------------


def state_files() -> list[str]:
    state = settings.load().state_dir
    return sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"Docker may not be reached: {args}")

    monkeypatch.setattr(docker, "engine_version", refuse)
    monkeypatch.setattr(docker, "popen", refuse)


def test_a_course_repo_folder_with_its_own_config_and_hooks_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old layout, as a crafted bundle would use it: git would obey this config.
    evil = cache / "config"
    evil.write_text('[remote "origin"]\n\tuploadpack = touch /tmp/pwned\n', encoding="utf-8")
    hook = cache / "hooks" / "post-checkout"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\ntouch /tmp/pwned\n", encoding="utf-8")
    hook.chmod(0o755)

    def edit(document: dict[str, Any]) -> None:
        document["course"]["commit"] = course.branch_commit(cache, "dev")

    path = tmp_path / "lab.bundle"
    writer_members: dict[str, bundle.Member] = {}
    with path.open("wb") as out:
        writer = bundle.Writer(out)
        writer.add_stream(CODEC.member, [IMAGES_DATA], bundle.Progress("w", stream=io.StringIO()))
        writer.add_tree(bundle.LAB_PREFIX, bundle.LAB_DIR)
        writer.add_tree(f"course/{cache.name}", cache)
        writer_members = writer.members
        manifest = bundle.Manifest(
            "2026-01-01T00:00:00Z", "0.1.0", None, "3.0", "zstd", CODEC.member, 1,
            fake_images(), bundle.Course(URL, "dev", None, (), None), writer_members,
        )  # fmt: skip
        document = manifest.document()
        edit(document)
        writer.add_bytes(bundle.MANIFEST_NAME, json.dumps(document).encode())
        out.write(bytes(1024))
    shutil.rmtree(cache)
    before = state_files()
    no_engine(monkeypatch)
    with pytest.raises(LabError, match="not a bundle this mlflow-lab can load") as caught:
        bundle.load(settings.load(), path)
    assert "\n" not in str(caught.value)
    assert state_files() == before


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_members_are_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    infos = {
        "dotdot": tarfile.TarInfo("lab/../../escaped.txt"),
        "absolute": tarfile.TarInfo("/tmp/escaped.txt"),
        "symlink": tarfile.TarInfo("lab/link"),
        "hardlink": tarfile.TarInfo("lab/hard"),
        "device": tarfile.TarInfo("lab/dev"),
    }
    info = infos[kind]
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}.get(
        kind, tarfile.CHRTYPE if kind == "device" else tarfile.REGTYPE
    )
    info.linkname = "/etc/passwd" if kind in ("symlink", "hardlink") else ""
    path = tmp_path / "work" / "lab.bundle"
    path.parent.mkdir()
    write_tar(path, [(info, b"x")])
    before = state_files()
    no_engine(monkeypatch)
    with pytest.raises(LabError, match=rf"^{path} is damaged \(") as caught:
        bundle.load(settings.load(), path)
    assert "\n" not in str(caught.value)
    assert state_files() == before
    assert not (tmp_path / "escaped.txt").exists()


def test_a_bundle_swapped_after_the_check_cannot_change_what_is_used(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    commit = course.branch_commit(cache, "dev")
    shutil.rmtree(cache)
    real_check = bundle.check_fits

    def swap_then_check(manifest: bundle.Manifest, lab: settings.Settings, file: Path) -> None:
        # Between the check and the use, the file is replaced by one that escapes.
        escape = tarfile.TarInfo(f"course/../../../{tmp_path.name}-escaped")
        write_tar(file, [(escape, b"pwned")])
        real_check(manifest, lab, file)

    monkeypatch.setattr(bundle, "check_fits", swap_then_check)
    monkeypatch.setattr(bundle, "_images_present", lambda manifest: True)
    monkeypatch.setattr(docker, "engine_version", lambda: "27")
    bundle.load(settings.load(), path)
    assert course.branch_commit(cache, "dev") == commit, "the checked copy was used"
    assert not list(tmp_path.parent.glob("*-escaped"))
    assert not [p for p in settings.load().state_dir.iterdir() if p.name.startswith(".load-")]


def docker_save_stream(tags: list[str], configs: list[str]) -> bytes:
    """A `docker save`-shaped tar (only the index files), compressed like a bundle's."""
    entries = [
        {"Config": f"{c.removeprefix('sha256:')}.json", "RepoTags": [t], "Layers": []}
        for t, c in zip(tags, configs, strict=True)
    ]
    repositories: dict[str, dict[str, str]] = {}
    for tag, config in zip(tags, configs, strict=True):
        repo, _, name = tag.rpartition(":")
        repositories.setdefault(repo, {})[name] = config.removeprefix("sha256:")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, document in (("manifest.json", entries), ("repositories", repositories)):
            data = json.dumps(document).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return subprocess.run(
        list(CODEC.compress), input=raw.getvalue(), capture_output=True, check=True
    ).stdout


def test_a_bundle_that_would_tag_foreign_images_is_refused_before_docker_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = fake_images()
    good = docker_save_stream([i.name for i in ours], [i.id for i in ours])
    evil = docker_save_stream(
        [*(i.name for i in ours), "python:3.11-slim-bookworm"],
        [*(i.id for i in ours), "sha256:" + "e" * 64],
    )
    path = tmp_path / "lab.bundle"
    manifest = make_bundle(path, None, images_data=evil)
    stage = tmp_path / "stage"
    stage.mkdir()
    bundle.verify(path, stage=stage)
    staged = stage / CODEC.member
    with pytest.raises(LabError, match=r"carries images that are not the lab's \(python:3.11"):
        bundle.check_images(staged, manifest, path)
    staged.write_bytes(good)
    bundle.check_images(staged, manifest, path)  # the lab's own: fine

    loads: list[Any] = []
    monkeypatch.setattr(docker, "engine_version", lambda: "27")
    monkeypatch.setattr(docker, "popen", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(bundle, "_images_present", lambda manifest: False)
    monkeypatch.setattr(docker, "free_space", lambda: ("/", 1 << 40))
    make_bundle(path, None, images_data=evil)
    with pytest.raises(LabError, match="not the lab's") as caught:
        bundle.load(settings.load(), path)
    assert "\n" not in str(caught.value)
    assert loads == [], "`docker load` never ran"


def test_load_checks_the_whole_file_against_a_given_sha256(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "lab.bundle"
    make_bundle(path, cache)
    digest = bundle.file_sha256(path)
    assert bundle.verify(path, sha256=digest.upper())
    wrong = "0" * 64
    with pytest.raises(LabError, match=rf"does not match the sha256 you gave .*{digest}") as caught:
        bundle.verify(path, sha256=wrong)
    assert "\n" not in str(caught.value)
    with pytest.raises(LabError, match="not a sha256"):
        bundle.load(settings.load(), path, sha256="abc")
