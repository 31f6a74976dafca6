"""Image building decisions: base image choice, build inputs, CA bundle and wheels."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from invoke.context import MockContext
from invoke.runners import Result

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import engine, settings, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import images


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.Settings:
    monkeypatch.setattr(images, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(engine, "has_buildx", lambda: False)
    env = {"LAB_STATE_DIR": str(tmp_path / "state"), "LAB_JUPYTER_TOKEN": "x" * 40}
    return settings.load(env, env_file=tmp_path / "none")


def test_upstream_base_image_is_the_dockerfile_default() -> None:
    dockerfile = (PROJECT_ROOT / "docker/mlflow/Dockerfile").read_text(encoding="utf-8")
    assert f"ARG BASE_IMAGE={versions.upstream_base_image()}" in dockerfile
    assert versions.upstream_base_image().startswith("python:3.11")


def test_pinned_versions_come_from_the_constraints_file() -> None:
    assert re.fullmatch(r"3\.\d+\.\d+", versions.mlflow_version())
    # Course notebooks call sklearn.log_model without skops trusted types: MLflow < 3.14.
    major, minor, _ = (int(p) for p in versions.mlflow_version().split("."))
    assert (major, minor) < (3, 14)
    assert versions.torch_version().endswith("+cpu")


def test_local_base_tag_follows_the_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = images.local_base_tag()
    assert first.startswith("mlflow-lab/base:bookworm-")
    recipe = tmp_path / "build.sh"
    shutil.copy(images.BASE_RECIPE, recipe)
    recipe.write_text(recipe.read_text() + "\n# changed\n")
    monkeypatch.setattr(images, "BASE_RECIPE", recipe)
    assert images.local_base_tag() != first


def test_inputs_digest_changes_with_the_lab_but_not_the_server_image() -> None:
    # The mlflow image must not be rebuilt (and the jupyter cache lost) for a lab edit.
    assert "lab" not in images.IMAGE_INPUTS["mlflow"]
    assert "lab" in images.IMAGE_INPUTS["jupyter"]
    assert set(images.IMAGE_INPUTS["mlflow"]) <= set(images.IMAGE_INPUTS["jupyter"])
    assert images.inputs_digest("mlflow") != images.inputs_digest("jupyter")
    assert images.inputs_digest("jupyter") == images.inputs_digest("jupyter")


def test_build_context_carries_the_hosts_ca_bundle(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nproxy\n", encoding="utf-8")
    with_ca = settings.Settings(**{**lab.__dict__, "ca_bundle": bundle})
    env = images.prepare_build_context(with_ca)
    assert (images.BUILD_DIR / "ca-bundle.pem").read_text() == bundle.read_text()
    assert env["DOCKER_BUILDKIT"] == "0"
    without = settings.Settings(**{**lab.__dict__, "ca_bundle": None})
    images.prepare_build_context(without)
    assert (images.BUILD_DIR / "ca-bundle.pem").read_text() == ""


def test_dockerfiles_trust_the_bundle_only_in_the_build_stage() -> None:
    for name in ("mlflow", "jupyter"):
        text = (PROJECT_ROOT / f"docker/{name}/Dockerfile").read_text(encoding="utf-8")
        final_stage = text.rsplit("\nFROM ", 1)[1]
        assert "ca-bundle.pem" in text.split("\nFROM ", 2)[1], name
        assert "ca-bundle.pem" not in final_stage, name
        assert "--trusted-host" not in text
        assert "HEALTHCHECK" in final_stage and "\nUSER " in final_stage, name


def test_local_torch_wheel_replaces_the_index(lab: settings.Settings, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    name = f"torch-{versions.torch_version()}-cp311-cp311-manylinux_2_28_x86_64.whl"
    (wheels / name).write_bytes(b"wheel")
    (wheels / "torch-0.1.0-cp311-none-any.whl").write_bytes(b"other version")
    env = images.prepare_build_context(settings.Settings(**{**lab.__dict__, "wheels_dir": wheels}))
    assert env["TORCH_INDEX_URL"] == ""
    assert [p.name for p in (images.BUILD_DIR / "wheels").iterdir()] == [name]
    env = images.prepare_build_context(settings.Settings(**{**lab.__dict__, "wheels_dir": None}))
    assert "TORCH_INDEX_URL" not in env
    assert list((images.BUILD_DIR / "wheels").iterdir()) == []


def test_unpullable_upstream_falls_back_to_a_local_base(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(images, "_can_use", lambda image: False)
    monkeypatch.setattr(images, "image_label", lambda image, label="": None)
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda ctx: None)
    c = MockContext(run={re.compile(r"sh .*build\.sh mlflow-lab/base:"): Result(exited=0)})
    assert images.ensure_base_image(c, lab) == images.local_base_tag()
    assert "cannot be pulled" in capsys.readouterr().out


def test_pullable_upstream_is_used_as_is(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "_can_use", lambda image: True)
    assert images.ensure_base_image(MockContext(), lab) == versions.upstream_base_image()


def test_a_named_base_image_that_cannot_be_had_is_an_error(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "_can_use", lambda image: False)
    named = settings.Settings(**{**lab.__dict__, "base_image": "registry.example/py:3"})
    with pytest.raises(LabError, match=r"LAB_BASE_IMAGE='registry.example/py:3' is neither"):
        images.ensure_base_image(MockContext(), named)


def test_failed_base_build_names_the_mirror(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "_can_use", lambda image: False)
    monkeypatch.setattr(images, "image_label", lambda image, label="": None)
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda ctx: None)
    c = MockContext(run=Result(exited=1, stderr="E: cannot reach deb.debian.org"))
    with pytest.raises(LabError, match=r"cannot reach deb\.debian\.org.*LAB_DEBIAN_MIRROR"):
        images.ensure_base_image(c, lab)


VENV_FAILED = Result(
    exited=1,
    stdout="Step 5/20 : RUN python3 -m venv /opt/venv\n",
    stderr="The command '/bin/sh -c python3 -m venv /opt/venv' returned a non-zero code: 1\n"
    "\x1b[0m\n",
)


def build_with(monkeypatch: pytest.MonkeyPatch, lab: settings.Settings, result: Result) -> None:
    monkeypatch.setattr(images, "ensure_base_image", lambda ctx, lab: "base:1")
    monkeypatch.setattr(images, "_place_wheels", lambda lab: False)
    monkeypatch.setattr(engine, "compose_command", lambda: "docker compose")
    images.build(MockContext(run={re.compile(r".* build mlflow"): result}), lab, ["mlflow"])


@pytest.mark.parametrize(
    ("free", "told"),
    [
        # pip and venv can hide the ENOSPC: the engine's disk tells.
        (
            12 * 1024**2,
            "the disk is full (0.0 GiB free on /var/lib/docker): free space (e.g. `docker "
            "system prune`) and run the command again; no lab data was touched",
        ),
        (
            50 * 1024**3,
            "building the mlflow image failed: The command '/bin/sh -c python3 -m venv "
            "/opt/venv' returned a non-zero code: 1: see the output above, fix it, then run "
            "the command again",
        ),
    ],
)
def test_a_failed_build_says_whether_the_disk_ran_full(
    monkeypatch: pytest.MonkeyPatch, lab: settings.Settings, free: int, told: str
) -> None:
    monkeypatch.setattr(engine, "docker_root", lambda: "/var/lib/docker")
    monkeypatch.setattr(engine, "free_space", lambda root: (root, free))
    with pytest.raises(LabError) as raised:
        build_with(monkeypatch, lab, VENV_FAILED)
    assert str(raised.value) == told


def test_the_bundled_labs_history_continues_from_one_build_to_the_next(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project, target = tmp_path / "project", tmp_path / "lab.git"
    monkeypatch.setattr(images, "PROJECT_ROOT", project)

    def commit(files: dict[str, str]) -> None:
        for rel, text in files.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_text(text, encoding="utf-8")
        ident = [
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ]
        subprocess.run(["git", "-C", str(project), "add", "-A"], check=True)
        subprocess.run(["git", *ident, "-C", str(project), "commit", "-qm", "x"], check=True)

    def history() -> list[str]:
        images.prepare_lab_history(target)
        out = subprocess.run(
            ["git", "--git-dir", str(target), "rev-list", "main"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    # No git history: an empty folder, and the image build makes a one-commit history.
    project.mkdir()
    (project / "lab").mkdir()
    images.prepare_lab_history(target)
    assert list(target.iterdir()) == []

    subprocess.run(["git", "init", "-q", str(project)], check=True)
    commit({"lab/README.md": "v1\n", "tasks.py": "1\n"})
    first = history()
    assert len(first) == 1
    commit({"tasks.py": "2\n"})  # lab/ unchanged: the same commit
    assert history() == first
    commit({"lab/README.md": "v2\n"})
    second = history()
    assert second[1:] == first  # the next version's parent is the previous one
    tree = subprocess.run(
        ["git", "--git-dir", str(target), "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert tree.stdout.split() == ["README.md"]
    # Made again from the same history: the very same commits.
    shutil.rmtree(target)
    assert history() == second
