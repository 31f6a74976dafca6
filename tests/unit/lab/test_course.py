"""The course repo: its name and cache, fetching it (from a local repo, with plain git:
no network), and placing it and the bundled lab through the fake gateway."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlflow_lab.core import settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import course, layout
from mlflow_lab.lab.compose import LabCompose
from tests.helpers import FakeDocker, isolate_settings

SYNC = f"docker exec j1 python3 {layout.tool('workspace_sync.py')}"


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/school/mlops-course.git", "mlops-course"),
        ("https://github.com/school/mlops-course/", "mlops-course"),
        ("git@github.com:school/course.git", "course"),
        ("git@host:tracking-lab.git", "tracking-lab"),
        ("file:///srv/git/lab", "lab"),
        ("", "course"),
    ],
)
def test_repo_name(url: str, name: str) -> None:
    assert course.repo_name(url) == name


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A course repo with branch dev (one commit), as a bare repo LAB_REPO_URL names."""
    isolate_settings(monkeypatch, tmp_path)
    work = tmp_path / "work"
    git("init", "-q", "-b", "dev", str(work))
    (work / "README.md").write_text("v1\n", encoding="utf-8")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "v1", cwd=work)
    bare = tmp_path / "origin" / "mlops-course.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    monkeypatch.setenv("LAB_REPO_URL", f"file://{bare}")
    monkeypatch.setenv("LAB_REPO_BRANCH", "dev")
    return work


def push_commit(work: Path, text: str) -> str:
    (work / "README.md").write_text(text, encoding="utf-8")
    git("commit", "-qam", text.strip(), cwd=work)
    git("push", "-q", str(work.parent / "origin" / "mlops-course.git"), "dev", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def test_cache_path_is_per_url_in_the_state_dir(
    upstream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = settings.load()
    cache = course.cache_path(lab)
    assert cache.parent == lab.state_dir / "course"
    assert cache.name.startswith("mlops-course-") and cache.name.endswith(".git")
    assert course.cache_path(lab) == cache, "the same URL, the same cache"
    monkeypatch.setenv("LAB_REPO_URL", "https://example.org/other/mlops-course.git")
    other = course.cache_path(settings.load())
    assert other != cache and other.name.startswith("mlops-course-")
    assert course.bundle_marker(cache) == cache.with_name(cache.name + ".from-bundle")


def test_fetch_clones_then_updates_the_branch(upstream: Path) -> None:
    lab = settings.load()
    first = course.fetch_course_repo(lab)
    assert first == course.Fetched(course.cache_path(lab), None)
    assert first.cache is not None
    assert course.branch_commit(first.cache, "dev") == git("rev-parse", "HEAD", cwd=upstream)
    assert not first.cache.with_name(first.cache.name + ".partial").exists()
    newer = push_commit(upstream, "v2\n")
    again = course.fetch_course_repo(lab)
    assert again.warning is None and course.branch_commit(first.cache, "dev") == newer
    # The update links up with the commit the student's copy already has.
    log = git("--git-dir", str(first.cache), "log", "--format=%s", "dev")
    assert log.splitlines() == ["v2", "v1"]


def test_fetch_of_a_missing_branch_warns_and_falls_back_to_the_bundled_lab(
    upstream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_REPO_BRANCH", "main")
    fetched = course.fetch_course_repo(settings.load())
    assert fetched.cache is None and fetched.warning is not None
    assert "(branch main) could not be fetched (" in fetched.warning
    assert fetched.warning.endswith(
        f"the workspace gets the bundled lab ({course.BUNDLED_LAB_DIR}/) only"
    )
    assert "\n" not in fetched.warning


def test_an_unreachable_repo_keeps_the_last_fetched_copy(upstream: Path, tmp_path: Path) -> None:
    lab = settings.load()
    cache = course.fetch_course_repo(lab).cache
    assert cache is not None
    (tmp_path / "origin" / "mlops-course.git").rename(tmp_path / "gone.git")
    fetched = course.fetch_course_repo(lab)
    assert fetched.cache == cache
    assert fetched.warning is not None and "could not be fetched" in fetched.warning
    assert "keeps the last fetched copy (mlops-course/)" in fetched.warning


def test_without_git_the_warning_says_so(
    upstream: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    fetched = course.fetch_course_repo(settings.load())
    assert fetched.cache is None
    assert fetched.warning is not None
    assert fetched.warning.startswith("git is not installed on this machine: ")


# ------------------------------------------------------------------- placement


@pytest.fixture
def compose(fake_docker: FakeDocker, upstream: Path) -> LabCompose:
    fake_docker.on(
        r"^docker ps .*label=com\.docker\.compose\.project=mlflow-lab", "mlflow m1\njupyter j1\n"
    )
    return LabCompose(settings.load())


def test_the_course_repo_is_placed_from_the_cache_mount(
    fake_docker: FakeDocker, compose: LabCompose
) -> None:
    fake_docker.on(rf"^{SYNC} ", "fetching\ncloned mlops-course (dev)\n")
    lines = course.place_course_repo(compose, settings.load())
    assert lines == ["cloned mlops-course (dev)"]
    cache = course.cache_path(settings.load())
    [sync] = fake_docker.matching(r"^docker exec ")
    assert sync.argv == [
        "docker", "exec", "j1", "python3", layout.tool("workspace_sync.py"),
        "--source", f"{layout.COURSE_CACHE_MOUNT}/{cache.name}",
        "--branch", "dev",
        "--dest", f"{layout.WORKSPACE}/mlops-course",
    ]  # fmt: skip
    assert sync.timeout == course.SYNC_TIMEOUT_S


def test_a_failed_placement_is_one_line(fake_docker: FakeDocker, compose: LabCompose) -> None:
    fake_docker.fail(rf"^{SYNC} ", "Traceback ...\nPermissionError: [Errno 13] /home/student\n")
    with pytest.raises(LabError) as raised:
        course.place_course_repo(compose, settings.load())
    assert str(raised.value) == (
        f"placing {layout.WORKSPACE}/mlops-course failed: PermissionError: [Errno 13] /home/student"
    )


def test_no_course_repo_places_nothing_and_warns(
    fake_docker: FakeDocker, compose: LabCompose, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_REPO_BRANCH", "nope")
    lines = course.place_course_repo(compose, settings.load())
    assert len(lines) == 1 and lines[0].startswith("warning: course repo file://")
    assert not fake_docker.matching(r"^docker exec "), "nothing to place"


def test_the_bundled_lab_is_placed_as_an_ordinary_update(
    fake_docker: FakeDocker, compose: LabCompose
) -> None:
    fake_docker.on(rf"^{SYNC} ", "up to date\n")
    assert course.place_bundled_lab(compose) == "up to date"
    assert fake_docker.argvs[-1][5:] == [
        "--source", layout.BUNDLED_LAB_SOURCE,
        "--branch", "main",
        "--dest", f"{layout.WORKSPACE}/{course.BUNDLED_LAB_DIR}",
    ]  # fmt: skip


def test_workspace_has_asks_the_jupyter_container(
    fake_docker: FakeDocker, compose: LabCompose
) -> None:
    fake_docker.on(rf"^docker exec j1 test -e {layout.WORKSPACE}/mlops-course$")
    fake_docker.on(rf"^docker exec j1 test -e {layout.WORKSPACE}/other$", code=1)
    assert course.workspace_has(compose, "mlops-course")
    assert not course.workspace_has(compose, "other")
