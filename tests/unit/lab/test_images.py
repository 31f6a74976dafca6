"""Image building decisions: base image choice, build inputs, CA bundle and wheels.

Docker is the fake gateway: which images exist, pull and build answers are scripted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlflow_lab import COMPOSE_FILE, PROJECT_ROOT
from mlflow_lab.core import docker, settings, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import images
from tests.helpers import FakeDocker, Result

UPSTREAM = re.escape(versions.upstream_base_image())
LABEL_QUERY = (
    r"^docker image inspect --format \{\{index \.Config\.Labels \"org\.mlflow-lab\.inputs\"\}\}"
)


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.Settings:
    monkeypatch.setattr(images, "BUILD_DIR", tmp_path / "build")
    env = {"LAB_STATE_DIR": str(tmp_path / "state"), "LAB_JUPYTER_TOKEN": "x" * 40}
    return settings.load(env, env_file=tmp_path / "none")


@pytest.fixture
def fake(fake_docker: FakeDocker) -> FakeDocker:
    """No buildx; no image at all until a test says otherwise."""
    fake_docker.fail(r"^docker buildx version$", "docker: 'buildx' is not a docker command.")
    fake_docker.fail(r"^docker image inspect ", "Error: No such image")
    return fake_docker


def test_upstream_base_image_is_the_dockerfile_default() -> None:
    dockerfile = (PROJECT_ROOT / "docker/mlflow/Dockerfile").read_text(encoding="utf-8")
    assert f"ARG BASE_IMAGE={versions.upstream_base_image()}" in dockerfile
    assert versions.upstream_base_image().startswith("python:3.11")


def test_pinned_versions_come_from_the_constraints_file() -> None:
    assert re.fullmatch(r"3\.\d+\.\d+", versions.mlflow_version())
    # That the pinned MLflow still saves the course's sklearn models as pickle (not skops)
    # is checked on the real thing: tests/e2e/lab/test_stack.py logs one in the lab.
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


def test_stale_images_are_the_missing_and_the_differently_built(
    fake: FakeDocker, lab: settings.Settings
) -> None:
    from mlflow_lab.lab.compose import LabCompose

    compose = LabCompose(lab)
    assert images.stale_images(compose) == ["mlflow", "jupyter"], "none exists"
    fake.on(LABEL_QUERY + r" mlflow-lab/mlflow:latest$", images.inputs_digest("mlflow"))
    fake.on(LABEL_QUERY + r" mlflow-lab/jupyter:latest$", "0123456789abcdef\n")
    assert images.stale_images(compose) == ["jupyter"]
    fake.on(LABEL_QUERY + r" mlflow-lab/jupyter:latest$", images.inputs_digest("jupyter"))
    assert images.stale_images(compose) == []


def test_build_context_carries_the_hosts_ca_bundle(
    fake: FakeDocker, lab: settings.Settings, tmp_path: Path
) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nproxy\n", encoding="utf-8")
    with_ca = settings.Settings(**{**lab.__dict__, "ca_bundle": bundle})
    env = images.prepare_build_context(with_ca)
    assert (images.BUILD_DIR / "ca-bundle.pem").read_text() == bundle.read_text()
    assert env["DOCKER_BUILDKIT"] == "0", "no buildx: the classic builder, said up front"
    assert env["BUILD_INPUTS_JUPYTER"] == images.inputs_digest("jupyter")
    without = settings.Settings(**{**lab.__dict__, "ca_bundle": None})
    images.prepare_build_context(without)
    assert (images.BUILD_DIR / "ca-bundle.pem").read_text() == ""


def test_with_buildx_buildkit_is_left_alone(fake: FakeDocker, lab: settings.Settings) -> None:
    fake.on(r"^docker buildx version$", "github.com/docker/buildx v0.17.1\n")
    assert "DOCKER_BUILDKIT" not in images.prepare_build_context(lab)


def test_dockerfiles_trust_the_bundle_only_in_the_build_stage() -> None:
    for name in ("mlflow", "jupyter"):
        text = (PROJECT_ROOT / f"docker/{name}/Dockerfile").read_text(encoding="utf-8")
        final_stage = text.rsplit("\nFROM ", 1)[1]
        assert "ca-bundle.pem" in text.split("\nFROM ", 2)[1], name
        assert "ca-bundle.pem" not in final_stage, name
        assert "--trusted-host" not in text
        assert "HEALTHCHECK" in final_stage and "\nUSER " in final_stage, name


def test_local_torch_wheel_replaces_the_index(
    fake: FakeDocker, lab: settings.Settings, tmp_path: Path
) -> None:
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


# ------------------------------------------------------------------- the base image


def test_unpullable_upstream_falls_back_to_a_local_base(
    fake: FakeDocker,
    lab: settings.Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda: None)
    fake.fail(rf"^docker pull {UPSTREAM}$", "dial tcp: lookup registry-1.docker.io: no such host")
    fake.on(r"^sh \S+/docker/base/build\.sh mlflow-lab/base:bookworm-\w+$", "built\n")
    assert images.ensure_base_image(lab) == images.local_base_tag()
    out = capsys.readouterr().out
    assert "cannot be pulled" in out
    assert f"✓ Base image {images.local_base_tag()} from Debian packages" in out
    assert fake.argvs[-1] == ["sh", str(images.BASE_RECIPE), images.local_base_tag()]
    assert "built" in (lab.state_dir / images.BUILD_LOG).read_text(encoding="utf-8")


def test_the_local_base_is_built_once(
    fake: FakeDocker, lab: settings.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda: None)
    fake.fail(r"^docker pull ", "no such host")
    fake.on(LABEL_QUERY + r" mlflow-lab/base:bookworm-\w+$", "\n")  # present, unlabelled
    assert images.ensure_base_image(lab) == images.local_base_tag()
    assert not fake.matching(r"^sh "), "an existing local base is not built again"


def test_the_mirror_goes_to_the_base_recipe(
    fake: FakeDocker, lab: settings.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda: None)
    fake.on(r"^sh ")
    mirrored = settings.Settings(**{**lab.__dict__, "debian_mirror": "http://mirror.example/d"})
    images.build_local_base(mirrored, "mlflow-lab/base:test")
    assert fake.calls[-1].env == {"LAB_DEBIAN_MIRROR": "http://mirror.example/d"}


def test_present_or_pullable_upstream_is_used_as_is(
    fake: FakeDocker, lab: settings.Settings
) -> None:
    fake.on(rf"^docker pull {UPSTREAM}$")
    assert images.ensure_base_image(lab) == versions.upstream_base_image()
    assert len(fake.matching(r"^docker pull ")) == 1
    fake.on(LABEL_QUERY + rf" {UPSTREAM}$", "\n")
    assert images.ensure_base_image(lab) == versions.upstream_base_image()
    assert len(fake.matching(r"^docker pull ")) == 1, "a present image is not pulled again"


def test_a_named_base_image_that_cannot_be_had_is_an_error(
    fake: FakeDocker, lab: settings.Settings
) -> None:
    fake.fail(r"^docker pull registry\.example/py:3$", "manifest unknown")
    named = settings.Settings(**{**lab.__dict__, "base_image": "registry.example/py:3"})
    with pytest.raises(LabError, match=r"LAB_BASE_IMAGE='registry.example/py:3' is neither"):
        images.ensure_base_image(named)
    assert not fake.matching(r"^sh "), "no local base is built instead of the named one"


def test_failed_base_build_names_the_mirror(
    fake: FakeDocker,
    lab: settings.Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda: None)
    fake.fail(r"^docker pull ", "no such host")
    fake.fail(r"^sh ", "E: cannot reach deb.debian.org")
    with pytest.raises(LabError, match=r"cannot reach deb\.debian\.org.*LAB_DEBIAN_MIRROR"):
        images.ensure_base_image(lab)
    assert "full log: " in capsys.readouterr().out


def test_no_mmdebstrap_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(LabError, match=r"needs mmdebstrap: install it .*LAB_BASE_IMAGE"):
        images._ensure_mmdebstrap()


# ------------------------------------------------------------------------ the builds

VENV_FAILED = Result(
    (),
    1,
    stdout="Step 5/20 : RUN python3 -m venv /opt/venv\n",
    stderr="The command '/bin/sh -c python3 -m venv /opt/venv' returned a non-zero code: 1\n"
    "\x1b[0m\n",
)
COMPOSE = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "mlflow-lab"]


@pytest.fixture
def builder(fake: FakeDocker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeDocker:
    """A base image at hand, no wheels; the engine keeps its data in tmp_path/docker."""
    monkeypatch.setattr(images, "ensure_base_image", lambda lab, steps=None: "base:1")
    monkeypatch.setattr(images, "_place_wheels", lambda lab: False)
    (tmp_path / "docker").mkdir()
    fake.on(r"^docker info --format \{\{\.DockerRootDir\}\}$", f"{tmp_path / 'docker'}\n")
    return fake


def test_build_builds_in_composes_order_with_the_build_variables(
    builder: FakeDocker, lab: settings.Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    builder.on(r"^docker compose .* build ", "Step 1/2 : FROM base:1\n")
    # A build of the jupyter image fetches the listed datasets with it (datasets.toml).
    builder.on(r"^docker run .*/lab_datasets\.py fetch ", '{"california_housing": null}\n')
    images.build(lab, ["jupyter", "mlflow"], no_cache=True)
    assert len(builder.matching(r"lab_datasets\.py fetch .*california_housing")) == 1
    builds = builder.matching(r" build ")
    assert [c.argv for c in builds] == [
        [*COMPOSE, "build", "--no-cache", "mlflow"],
        [*COMPOSE, "build", "--no-cache", "jupyter"],
    ]
    env = builds[0].env or {}
    assert env["BASE_IMAGE"] == "base:1"
    assert env["BUILD_INPUTS_MLFLOW"] == images.inputs_digest("mlflow")
    assert env["LAB_IMAGE_TAG"] == "latest"
    out = capsys.readouterr().out.splitlines()
    assert [re.sub(r"\(\d+ s\)", "(N s)", line) for line in out] == [
        "✓ The mlflow image, on base:1 (N s)",
        "✓ The jupyter image, on base:1 (N s)",
        "Datasets: fetched california_housing",
    ]
    images.build(lab, ["jupyter"])
    last = builder.matching(r" build ")[-1]
    assert last.argv == [*COMPOSE, "build", "jupyter"], "only what was asked"


@pytest.mark.parametrize(
    ("free", "told"),
    [
        # pip and venv can hide the ENOSPC: the engine's disk tells.
        (
            12 * 1024**2,
            "the disk is full (0.0 GiB free on {root}): free space (e.g. `docker "
            "system prune`) and run the command again; no lab data was touched",
        ),
        (
            50 * 1024**3,
            "building the mlflow image failed: The command '/bin/sh -c python3 -m venv "
            "/opt/venv' returned a non-zero code: 1: the full log is in {log}; fix it, then "
            "run the command again",
        ),
    ],
)
def test_a_failed_build_says_whether_the_disk_ran_full(
    builder: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
    lab: settings.Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    free: int,
    told: str,
) -> None:
    measured: list[str] = []

    def usage(where: str) -> SimpleNamespace:
        measured.append(str(where))
        return SimpleNamespace(free=free)

    monkeypatch.setattr(docker.shutil, "disk_usage", usage)
    builder.on(r"^docker compose .* build mlflow$", VENV_FAILED)
    log = lab.state_dir / images.BUILD_LOG
    with pytest.raises(LabError) as raised:
        images.build(lab, ["mlflow"])
    assert str(raised.value) == told.format(root=tmp_path / "docker", log=log)
    assert measured == [str(tmp_path / "docker")], "the engine's data root is measured"
    out = capsys.readouterr().out
    assert "✗ The mlflow image, on base:1: failed after" in out
    assert "    Step 5/20 : RUN python3 -m venv /opt/venv" in out
    assert f"  full log: {log}" in out
    assert "Step 5/20" in log.read_text(encoding="utf-8")


def test_the_local_base_build_runs_from_a_checkout_path_with_spaces(
    lab: settings.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for docker/base/build.sh in a checkout whose path has spaces: it writes
    # down the arguments the real shell gave it.
    recipe = tmp_path / "my course checkout" / "docker" / "base" / "build.sh"
    recipe.parent.mkdir(parents=True)
    seen = tmp_path / "argv.txt"
    recipe.write_text(f'printf "%s\\n" "$0" "$@" > "{seen}"\n', encoding="utf-8")
    monkeypatch.setattr(images, "BASE_RECIPE", recipe)
    monkeypatch.setattr(images, "_can_use", lambda image: False)
    monkeypatch.setattr(images, "image_label", lambda image, label="": None)
    monkeypatch.setattr(images, "_ensure_mmdebstrap", lambda: None)
    # A real shell runs the stand-in: the gateway is not faked here.
    tag = images.ensure_base_image(lab)
    assert seen.read_text(encoding="utf-8").splitlines() == [str(recipe), tag]


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
