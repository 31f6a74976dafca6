"""The lab's facts as read from compose.yaml and the Dockerfiles, and LabCompose's calls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlflow_lab import COMPOSE_FILE, PROJECT_ROOT
from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import backup, compose, course, layout, verify
from mlflow_lab.lab.compose import LabCompose
from tests.helpers import FakeDocker, isolate_settings

DOCKERFILES = {
    name: PROJECT_ROOT / "docker" / name / "Dockerfile" for name in ("mlflow", "jupyter")
}


# ------------------------------------------------------------------- compose.yaml


def test_services_in_composes_order_mlflow_first() -> None:
    assert compose.services() == ("mlflow", "jupyter")
    assert compose.services() == compose.SERVICES
    assert (compose.MLFLOW, compose.JUPYTER) == compose.SERVICES


def test_image_repositories() -> None:
    assert compose.image_repository("mlflow") == "mlflow-lab/mlflow"
    assert compose.image_repository("jupyter") == "mlflow-lab/jupyter"


def test_ports_inside_the_containers() -> None:
    assert compose.container_port("mlflow") == 8080
    assert compose.container_port("jupyter") == 8888


def test_mount_targets() -> None:
    assert compose.mount_target("mlflow", "mlflow-db") == "/data/db"
    assert compose.mount_target("mlflow", "mlflow-artifacts") == "/data/artifacts"
    assert compose.mount_target("jupyter", "workspace") == "/home/student/workspace"
    # A bind mount is found by its source's last part.
    assert compose.mount_target("jupyter", "course") == "/opt/course-upstream"
    with pytest.raises(LabError, match=r"^compose.yaml mounts no nothing in mlflow: restore"):
        compose.mount_target("mlflow", "nothing")


def test_facts_follow_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    spec["services"]["mlflow"]["ports"] = [
        "${LAB_BIND_ADDRESS:-127.0.0.1}:${LAB_MLFLOW_PORT:-8080}:5000"
    ]
    spec["services"]["mlflow"]["image"] = "school/tracking:${LAB_IMAGE_TAG:-latest}"
    edited = tmp_path / "compose.yaml"
    edited.write_text(yaml.safe_dump(spec), encoding="utf-8")
    monkeypatch.setattr(compose, "COMPOSE_FILE", edited)
    compose.spec.cache_clear()
    try:
        assert compose.container_port("mlflow") == 5000
        assert compose.image_repository("mlflow") == "school/tracking"
        edited.write_text("- not a mapping\n", encoding="utf-8")
        compose.spec.cache_clear()
        with pytest.raises(LabError, match="is not a compose file: restore it from git"):
            compose.spec()
    finally:
        compose.spec.cache_clear()


# ----------------------------------------------------------- layout (+ Dockerfiles)


def test_the_notebooks_tracking_uri_is_mlflow_inside_the_jupyter_container() -> None:
    assert layout.NOTEBOOK_TRACKING_URI == "http://127.0.0.1:8080"
    assert layout.NOTEBOOK_TRACKING_URI.endswith(f":{compose.container_port('mlflow')}")


def test_workspace_and_course_cache_mount() -> None:
    assert layout.WORKSPACE == "/home/student/workspace"
    assert layout.COURSE_CACHE_MOUNT == "/opt/course-upstream"
    assert course.SYNC_SCRIPT == "/usr/local/lib/mlflow-lab/workspace_sync.py"


def test_tool_paths_and_data_paths() -> None:
    assert str(layout.TOOLS) == "/usr/local/lib/mlflow-lab"
    assert layout.tool("lab_probe.py") == "/usr/local/lib/mlflow-lab/lab_probe.py"
    assert layout.BUNDLED_LAB_SOURCE == "/opt/mlflow-lab/lab"
    assert layout.MLFLOW_DB == "/data/db/mlflow.db"
    assert layout.MLFLOW_ARTIFACTS == "/data/artifacts"
    # The database and the artifacts live on the volumes compose.yaml mounts there.
    assert layout.MLFLOW_DB.startswith(compose.mount_target("mlflow", "mlflow-db") + "/")
    assert compose.mount_target("mlflow", "mlflow-artifacts") == layout.MLFLOW_ARTIFACTS


def test_every_tool_the_host_runs_is_copied_into_an_image() -> None:
    copied: set[str] = set()
    for dockerfile in DOCKERFILES.values():
        text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
            *sources, target = line.split()
            if target.rstrip("/") in ("${LAB_TOOLS}", str(layout.TOOLS)):
                copied.update(Path(source).name for source in sources)
    used = {
        Path(p).name for p in (course.SYNC_SCRIPT, verify.PROBE, verify.HARD_DELETE, backup.TOOL)
    }
    assert used <= copied, f"not in any image: {used - copied}"
    for name in used:
        assert any((PROJECT_ROOT / "docker" / image / name).is_file() for image in DOCKERFILES)


def test_image_env_reads_later_lines_and_continuations() -> None:
    mlflow_env = layout.image_env("mlflow")
    assert mlflow_env["PYTHONUNBUFFERED"] == "1", "a continued ENV line"
    assert mlflow_env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "MLFLOW_TRACKING_URI" not in mlflow_env
    assert layout.image_env("jupyter")["SHELL"] == "/bin/bash"


# --------------------------------------------------------------------- LabCompose


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.Settings:
    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_PROJECT", "unit-lab")
    monkeypatch.setenv("LAB_IMAGE_TAG", "v7")
    return settings.load()


def test_lab_compose_runs_the_project_with_the_settings(
    fake_docker: FakeDocker, lab: settings.Settings
) -> None:
    fake_docker.on(r"^docker compose -f \S+/compose\.yaml -p unit-lab build mlflow$")
    LabCompose(lab, extra_env={"BASE_IMAGE": "base:1"}).run("build", "mlflow")
    [call] = fake_docker.calls
    assert call.argv[:6] == ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", "unit-lab"]
    assert call.env == {**lab.compose_env(), "BASE_IMAGE": "base:1"}
    assert call.timeout == 600


def test_lab_compose_images_carry_the_tag(lab: settings.Settings) -> None:
    assert LabCompose(lab).image("jupyter") == "mlflow-lab/jupyter:v7"


def test_exec_in_a_service_finds_its_container(
    fake_docker: FakeDocker, lab: settings.Settings
) -> None:
    fake_docker.on(r"^docker ps .*label=com\.docker\.compose\.project=unit-lab", "jupyter j1\n")
    fake_docker.on(r"^docker exec j1 ls /$", "bin\n")
    assert LabCompose(lab).exec("jupyter", "ls", "/").stdout == "bin\n"
    with pytest.raises(LabError, match=r"^the mlflow container does not exist: start the lab"):
        LabCompose(lab).exec("mlflow", "ls")
