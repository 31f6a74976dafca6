"""workspace_sync against a local upstream served over git:// by a real `git daemon`."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.helpers import container_module

ws = container_module("jupyter", "workspace_sync")

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

BRANCH = "dev"
# Only the tests' own commits carry an identity; the module must cope without one.
TEST_IDENTITY = (
    "-c",
    "user.name=Course Author",
    "-c",
    "user.email=author@example.invalid",
)
INITIAL_FILES = {
    "README.md": "# Course\n",
    "lab/a.txt": "line 1\nline 2\nline 3\n",
    "lab/b.txt": "b original\n",
    ".gitignore": "*.log\n",
}
TS = r"\d{8}-\d{6}"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(
        ["git", *TEST_IDENTITY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def snapshot(root: Path, *, include_git: bool = False) -> dict[str, bytes]:
    """Every path under root with its bytes (directories as empty entries)."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not include_git and (rel == ".git" or rel.startswith(".git/")):
            continue
        if path.is_symlink():
            found[rel] = b"-> " + os.fsencode(os.readlink(path))
        elif path.is_file():
            found[rel] = path.read_bytes()
        else:
            found[rel + "/"] = b""
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"


def _accepts(port: int, proc: subprocess.Popen[bytes], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("served")
    log = tmp_path_factory.mktemp("daemon-log") / "daemon.log"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    for _ in range(5):
        # git daemon cannot bind port 0; a just-freed port can be taken by
        # someone else, so a failed start is retried with a new one.
        port = free_port()
        with log.open("ab") as log_file:
            proc = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    "--reuseaddr",
                    "--export-all",
                    "--informative-errors",
                    f"--base-path={base}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=env,
            )
        try:
            if _accepts(port, proc, within_s=10):
                yield Daemon(base, port)
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    pytest.fail(f"git daemon did not start: {log.read_text()}")


@pytest.fixture(autouse=True)
def _no_git_identity(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the container: no global/system git config, so no user identity."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    # Keeps the module's lock files out of the real /tmp.
    monkeypatch.setenv("TMPDIR", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for var in (
        "XDG_CONFIG_HOME",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(var, raising=False)


class Upstream:
    """A non-bare repository under the daemon's base path; tests commit to it directly."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    def commit(self, files: Mapping[str, str | None], message: str = "change") -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                git(self.path, "rm", "-q", "--", rel)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            git(self.path, "add", "--force", "--", rel)
        git(self.path, "commit", "-q", "-m", message)
        return self.head()

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def rewrite_history(self, files: Mapping[str, str]) -> str:
        """Replace `dev` with an unrelated history, like a force-push of a new root."""
        git(self.path, "checkout", "-q", "--orphan", "rewritten")
        git(self.path, "rm", "-rq", "--cached", ".")
        for child in self.path.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.commit(files, "new history")
        git(self.path, "branch", "-D", BRANCH)
        git(self.path, "branch", "-m", BRANCH)
        return self.head()

    def tree(self) -> dict[str, bytes]:
        return snapshot(self.path)


@pytest.fixture
def make_upstream(daemon: Daemon) -> Callable[[], Upstream]:
    def make() -> Upstream:
        name = f"course-{uuid.uuid4().hex[:10]}"
        path = daemon.base / name
        git(daemon.base, "init", "-q", "-b", BRANCH, name)
        upstream = Upstream(path, daemon.url(name))
        upstream.commit(INITIAL_FILES, "initial")
        # Another branch that a single-branch clone must not fetch.
        git(path, "branch", "other")
        return upstream

    return make


@pytest.fixture
def upstream(make_upstream: Callable[[], Upstream]) -> Upstream:
    return make_upstream()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "workspace" / "MLOps"


def backups_of(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(f"{dest.name}_backup_*"))


def leftovers(dest: Path) -> list[Path]:
    """Temporary clone folders that should have been cleaned up."""
    return sorted(dest.parent.glob(f".{dest.name}.sync-*"))


def assert_one_line(text: str) -> None:
    assert text.strip(), "expected a message"
    assert "\n" not in text.strip(), text


# --------------------------------------------------------------------------- #


def test_first_clone_is_shallow_single_branch(upstream: Upstream, dest: Path) -> None:
    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.CLONED
    assert result.commit == upstream.head()
    assert snapshot(dest) == upstream.tree()
    assert git(dest, "branch", "--show-current") == BRANCH
    assert git(dest, "rev-parse", "--is-shallow-repository") == "true"
    remote_branches = git(dest, "for-each-ref", "--format=%(refname:short)", "refs/remotes")
    assert "origin/other" not in remote_branches.split()
    assert f"origin/{BRANCH}" in remote_branches.split()
    assert git(dest, "remote", "get-url", "origin") == upstream.url
    assert result.summary.startswith(f"cloned {upstream.url} (branch {BRANCH}) into {dest}")
    assert_one_line(result.summary)
    assert not leftovers(dest)


def test_rerun_without_changes_is_up_to_date(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    before_head = git(dest, "rev-parse", "HEAD")
    before = snapshot(dest)

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UP_TO_DATE
    assert "is up to date" in result.summary
    assert git(dest, "rev-parse", "HEAD") == before_head
    assert snapshot(dest) == before
    assert git(dest, "status", "--porcelain") == ""
    assert not backups_of(dest)


def test_upstream_adds_changes_and_deletes_files(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    upstream.commit({"lab/a.txt": "line 1\nline 2 v2\nline 3\n", "lab/new.txt": "new\n"})
    upstream.commit({"lab/b.txt": None})
    upstream.commit({"docs/guide.md": "guide\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED
    assert snapshot(dest) == upstream.tree()
    assert result.updated_files == (
        "docs/guide.md",
        "lab/a.txt",
        "lab/b.txt",
        "lab/new.txt",
    )
    # No student changes: a fast-forward, no merge commit.
    assert git(dest, "rev-parse", "HEAD") == upstream.head()
    assert "4 files updated" in result.summary
    assert git(dest, "rev-parse", "--is-shallow-repository") == "true"
    assert not backups_of(dest)


def test_shallow_clone_merges_many_upstream_commits(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/a.txt").write_text("student\n")
    for i in range(20):
        upstream.commit({f"lab/step{i:02}.txt": f"{i}\n"}, f"step {i}")

    result = ws.sync(upstream.url, BRANCH, dest)

    # 20 new commits are beyond the first depth-1 fetch and the first retries:
    # the merge must still find the common history instead of "diverging".
    assert result.action is ws.SyncAction.UPDATED
    assert not backups_of(dest)
    assert (dest / "lab/a.txt").read_text() == "student\n"
    assert (dest / "lab/step19.txt").read_text() == "19\n"
    git(dest, "merge-base", "--is-ancestor", upstream.head(), "HEAD")


def test_full_history_when_depth_is_none(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest, depth=None)
    assert git(dest, "rev-parse", "--is-shallow-repository") == "false"
    (dest / "lab/a.txt").write_text("student\n")
    upstream.commit({"lab/b.txt": "b v2\n"})

    result = ws.sync(upstream.url, BRANCH, dest, depth=None)

    assert result.action is ws.SyncAction.UPDATED
    assert (dest / "lab/a.txt").read_text() == "student\n"
    assert (dest / "lab/b.txt").read_text() == "b v2\n"
    assert git(dest, "rev-parse", "--is-shallow-repository") == "false"


def test_student_edit_wins_over_conflicting_upstream_change(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    student = "line 1\nline 2 by student\nline 3\n"
    (dest / "lab/a.txt").write_text(student)
    upstream.commit({"lab/a.txt": "line 1\nline 2 by upstream\nline 3\n", "lab/b.txt": "b v2\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED
    assert (dest / "lab/a.txt").read_text() == student
    assert (dest / "lab/b.txt").read_text() == "b v2\n"
    assert result.kept_student_edits == ("lab/a.txt",)
    assert "kept 1 student edit" in result.summary
    assert git(dest, "status", "--porcelain") == ""
    git(dest, "merge-base", "--is-ancestor", upstream.head(), "HEAD")
    assert not backups_of(dest)


def test_non_overlapping_edits_in_one_file_are_both_kept(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/a.txt").write_text("line 1 student\nline 2\nline 3\n")
    upstream.commit({"lab/a.txt": "line 1\nline 2\nline 3 upstream\n"})

    ws.sync(upstream.url, BRANCH, dest)

    assert (dest / "lab/a.txt").read_text() == "line 1 student\nline 2\nline 3 upstream\n"


@pytest.mark.parametrize("upstream_changes_it", [False, True])
@pytest.mark.parametrize("how", ["rm", "git rm"])
def test_deleted_file_comes_back(
    upstream: Upstream, dest: Path, upstream_changes_it: bool, how: str
) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    if how == "rm":
        (dest / "lab/a.txt").unlink()
    else:
        git(dest, "rm", "-q", "lab/a.txt")
    expected = INITIAL_FILES["lab/a.txt"]
    if upstream_changes_it:
        expected = "upstream v2\n"
        upstream.commit({"lab/a.txt": expected})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert (dest / "lab/a.txt").read_text() == expected
    assert result.restored_files == ("lab/a.txt",)
    assert "restored 1 deleted file" in result.summary
    expected_action = ws.SyncAction.UPDATED if upstream_changes_it else ws.SyncAction.UP_TO_DATE
    assert result.action is expected_action
    assert git(dest, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    ("student_path", "upstream_path", "renamed_pattern"),
    [
        ("lab/new.txt", "lab/new.txt", rf"lab/new_{TS}\.txt"),
        (
            "lab/my notes ü.ipynb",
            "lab/my notes ü.ipynb",
            rf"lab/my notes ü_{TS}\.ipynb",
        ),
        # Ignored files are silently overwritten by git, so they must be moved too.
        ("lab/run.log", "lab/run.log", rf"lab/run_{TS}\.log"),
        # A student file where upstream now needs a folder.
        ("lab/results", "lab/results/summary.txt", rf"lab/results_{TS}"),
        # A student folder where upstream now puts a file.
        ("lab/notes/mine.txt", "lab/notes", rf"lab/notes_{TS}"),
    ],
)
def test_untracked_student_file_in_upstreams_way_is_renamed_beside(
    upstream: Upstream,
    dest: Path,
    student_path: str,
    upstream_path: str,
    renamed_pattern: str,
) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / student_path).parent.mkdir(parents=True, exist_ok=True)
    (dest / student_path).write_text("student's own\n")
    upstream.commit({upstream_path: "upstream's\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED
    assert (dest / upstream_path).read_text() == "upstream's\n"
    assert len(result.moved_aside) == 1
    original, renamed = result.moved_aside[0]
    assert re.fullmatch(renamed_pattern, renamed), renamed
    assert student_path.startswith(original)
    moved_file = dest / renamed / student_path[len(original) :].lstrip("/")
    assert moved_file.read_text() == "student's own\n"
    assert f"{original} -> {renamed}" in result.summary
    assert not backups_of(dest)


def test_student_local_commit_survives(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/a.txt").write_text("committed by student\n")
    (dest / "lab/mine.txt").write_text("mine\n")
    git(dest, "add", "lab/a.txt", "lab/mine.txt")
    git(dest, "commit", "-q", "-m", "student work")
    student_commit = git(dest, "rev-parse", "HEAD")
    upstream.commit({"lab/a.txt": "upstream a\n", "lab/b.txt": "b v2\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED
    git(dest, "merge-base", "--is-ancestor", student_commit, "HEAD")
    git(dest, "merge-base", "--is-ancestor", upstream.head(), "HEAD")
    assert (dest / "lab/a.txt").read_text() == "committed by student\n"
    assert (dest / "lab/mine.txt").read_text() == "mine\n"
    assert (dest / "lab/b.txt").read_text() == "b v2\n"


def test_student_edit_survives_upstream_deleting_the_file(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/b.txt").write_text("student kept working here\n")
    upstream.commit({"lab/b.txt": None, "lab/c.txt": "c\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED
    assert (dest / "lab/b.txt").read_text() == "student kept working here\n"
    assert (dest / "lab/c.txt").read_text() == "c\n"
    assert git(dest, "status", "--porcelain") == ""


def _student_state(dest: Path) -> dict[str, bytes]:
    (dest / "lab/a.txt").write_text("student edit\n")
    (dest / "lab/untracked.ipynb").write_text("{}\n")
    (dest / "lab/debug.log").write_text("ignored but precious\n")
    return snapshot(dest)


def test_force_pushed_unrelated_history_backs_up_then_clones(
    upstream: Upstream, dest: Path
) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/committed.txt").write_text("local commit\n")
    git(dest, "add", "lab/committed.txt")
    git(dest, "commit", "-q", "-m", "student commit")
    student_commit = git(dest, "rev-parse", "HEAD")
    before = _student_state(dest)
    upstream.rewrite_history({"NEW.md": "brand new course\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.REPLACED
    [backup] = backups_of(dest)
    assert re.fullmatch(rf"MLOps_backup_{TS}", backup.name)
    assert result.backup == backup
    assert snapshot(backup) == before
    git(backup, "merge-base", "--is-ancestor", student_commit, "HEAD")
    assert snapshot(dest) == upstream.tree()
    assert "rewritten" in result.reason
    assert f"backed up {dest} to {backup}" in result.summary
    assert_one_line(result.summary)
    assert not leftovers(dest)


def test_a_local_source_that_moves_on_is_merged(upstream: Upstream, dest: Path) -> None:
    # The lab bundled in the image: a local repository whose history continues from one
    # image to the next, so a new image's lab is an ordinary update.
    ws.sync(str(upstream.path), BRANCH, dest)
    (dest / "lab/a.txt").write_text("student edit\n")
    (dest / "lab/untracked.ipynb").write_text("{}\n")
    (dest / "README.md").unlink()
    upstream.commit({"lab/a.txt": "upstream a v2\n", "lab/new.txt": "new\n"}, "next release")

    result = ws.sync(str(upstream.path), BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED, result.summary
    assert not backups_of(dest)
    assert (dest / "lab/a.txt").read_text() == "student edit\n"
    assert (dest / "lab/new.txt").read_text() == "new\n"
    assert (dest / "lab/untracked.ipynb").read_text() == "{}\n"
    assert (dest / "README.md").exists(), "a file the student deleted comes back"
    assert result.kept_student_edits == ("lab/a.txt",)
    assert ws.sync(str(upstream.path), BRANCH, dest).action is ws.SyncAction.UP_TO_DATE


def test_a_shallow_source_cloned_anew_is_not_left_stale(
    upstream: Upstream, dest: Path, tmp_path: Path
) -> None:
    # The host's course cache is a shallow clone; made again later, its new tip hangs
    # from a new shallow boundary: git's fetch would reject it unless told otherwise.
    cache = tmp_path / "cache.git"
    git(
        tmp_path,
        "clone",
        "-q",
        "--bare",
        "--depth",
        "1",
        "--branch",
        BRANCH,
        upstream.url,
        str(cache),
    )
    ws.sync(str(cache), BRANCH, dest)
    before = _student_state(dest)
    upstream.commit({"lab/b.txt": "b v2\n"})
    upstream.commit({"lab/c.txt": "c\n"})
    shutil.rmtree(cache)
    git(
        tmp_path,
        "clone",
        "-q",
        "--bare",
        "--depth",
        "1",
        "--branch",
        BRANCH,
        upstream.url,
        str(cache),
    )

    result = ws.sync(str(cache), BRANCH, dest)

    assert result.action is ws.SyncAction.REPLACED, result.summary
    [backup] = backups_of(dest)
    assert snapshot(backup) == before
    assert snapshot(dest) == upstream.tree()


@pytest.mark.parametrize("depth", [1, None])
def test_force_push_that_keeps_an_older_ancestor_still_backs_up(
    upstream: Upstream, dest: Path, depth: int | None
) -> None:
    upstream.commit({"lab/b.txt": "b v2\n"}, "second")
    ws.sync(upstream.url, BRANCH, dest, depth)
    before = _student_state(dest)
    # Amend-style rewrite: the new tip shares the first commit but drops ours.
    git(upstream.path, "reset", "-q", "--hard", "HEAD~1")
    upstream.commit({"lab/b.txt": "b rewritten\n"}, "second, rewritten")

    result = ws.sync(upstream.url, BRANCH, dest, depth)

    # With full history a common ancestor exists, yet upstream dropped the
    # commit we had: that is still a rewrite, not something to merge.
    assert result.action is ws.SyncAction.REPLACED
    [backup] = backups_of(dest)
    assert snapshot(backup) == before
    assert snapshot(dest) == upstream.tree()


@pytest.mark.parametrize("kind", ["plain folder", "file", "folder inside another repo"])
def test_destination_that_is_not_a_git_repo_is_backed_up(
    upstream: Upstream, dest: Path, kind: str
) -> None:
    dest.parent.mkdir(parents=True)
    if kind == "file":
        dest.write_text("a file, not a folder\n")
        before: dict[str, bytes] | bytes = dest.read_bytes()
    else:
        if kind == "folder inside another repo":
            git(dest.parent, "init", "-q")
        (dest / "sub").mkdir(parents=True)
        (dest / "notes.txt").write_text("student notes\n")
        (dest / "sub/x.py").write_text("print(1)\n")
        before = snapshot(dest)

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.REPLACED
    [backup] = backups_of(dest)
    assert (backup.read_bytes() if kind == "file" else snapshot(backup)) == before
    assert snapshot(dest) == upstream.tree()
    assert "not" in result.reason


def test_empty_destination_folder_is_cloned_into(upstream: Upstream, dest: Path) -> None:
    dest.mkdir(parents=True)

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.CLONED
    assert snapshot(dest) == upstream.tree()
    assert not backups_of(dest)
    assert not leftovers(dest)


def test_other_origin_url_with_same_history_is_repointed(upstream: Upstream, dest: Path) -> None:
    # First placed from a local path (as the bundled lab is), then from the URL.
    ws.sync(str(upstream.path), BRANCH, dest)
    (dest / "lab/a.txt").write_text("student\n")
    upstream.commit({"lab/b.txt": "b v2\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.UPDATED
    assert result.repointed_from == str(upstream.path)
    assert git(dest, "remote", "get-url", "origin") == upstream.url
    assert (dest / "lab/a.txt").read_text() == "student\n"
    assert (dest / "lab/b.txt").read_text() == "b v2\n"
    assert "origin re-pointed from" in result.summary
    assert not backups_of(dest)


def test_other_origin_url_with_unrelated_history_backs_up(
    make_upstream: Callable[[], Upstream], dest: Path
) -> None:
    first, second = make_upstream(), make_upstream()
    second.rewrite_history({"OTHER.md": "another repository\n"})
    ws.sync(first.url, BRANCH, dest)
    before = _student_state(dest)

    result = ws.sync(second.url, BRANCH, dest)

    assert result.action is ws.SyncAction.REPLACED
    [backup] = backups_of(dest)
    assert snapshot(backup) == before
    assert snapshot(dest) == second.tree()
    assert git(dest, "remote", "get-url", "origin") == second.url


def test_unfinished_student_merge_is_backed_up(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    git(dest, "checkout", "-q", "-b", "experiment")
    (dest / "lab/a.txt").write_text("experiment\n")
    git(dest, "commit", "-qam", "experiment")
    git(dest, "checkout", "-q", BRANCH)
    (dest / "lab/a.txt").write_text("dev side\n")
    git(dest, "commit", "-qam", "dev side")
    git(dest, "merge", "experiment", check=False)  # leaves conflict markers
    assert (dest / ".git/MERGE_HEAD").exists()
    before = snapshot(dest)
    upstream.commit({"lab/b.txt": "b v2\n"})

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.REPLACED
    [backup] = backups_of(dest)
    assert snapshot(backup) == before
    assert (backup / ".git/MERGE_HEAD").exists()
    assert snapshot(dest) == upstream.tree()


def test_merge_that_cannot_complete_backs_up_everything(
    upstream: Upstream, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/b.txt").write_text("student edit\n")
    (dest / "lab/new.txt").write_text("student's untracked\n")
    before = snapshot(dest)
    # A modify/delete conflict, made unresolvable to exercise the abort path.
    upstream.commit({"lab/b.txt": None, "lab/new.txt": "upstream's\n"})
    monkeypatch.setattr(ws, "_settle_tree_conflicts", lambda ctx: False)

    result = ws.sync(upstream.url, BRANCH, dest)

    assert result.action is ws.SyncAction.REPLACED
    assert "merge" in result.reason
    [backup] = backups_of(dest)
    # Same files, same bytes: the renamed untracked file went back to its name.
    assert snapshot(backup) == before
    assert snapshot(dest) == upstream.tree()


def test_concurrent_syncs_of_one_destination_are_serialised(upstream: Upstream, dest: Path) -> None:
    # Without the lock both would clone and the second could not place its copy.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: ws.sync(upstream.url, BRANCH, dest), range(2)))

    assert sorted(r.action for r in results) == sorted(
        [ws.SyncAction.CLONED, ws.SyncAction.UP_TO_DATE]
    )
    assert snapshot(dest) == upstream.tree()
    assert not leftovers(dest)


def test_recent_git_index_lock_stops_the_sync(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/a.txt").write_text("student\n")
    (dest / ".git/index.lock").touch()
    upstream.commit({"lab/b.txt": "b v2\n"})
    before = snapshot(dest)

    with pytest.raises(ws.SyncError, match="another git command"):
        ws.sync(upstream.url, BRANCH, dest)

    assert snapshot(dest) == before
    assert not backups_of(dest)


def test_unreachable_url_raises_and_touches_nothing(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/a.txt").write_text("student\n")
    before = snapshot(dest, include_git=True)
    closed = f"git://127.0.0.1:{free_port()}/course.git"

    with pytest.raises(ws.SourceUnavailableError) as caught:
        ws.sync(closed, BRANCH, dest)

    assert closed in str(caught.value)
    assert_one_line(str(caught.value))
    assert snapshot(dest, include_git=True) == before
    assert not backups_of(dest)
    assert not leftovers(dest)


def test_unreachable_url_does_not_create_the_destination(dest: Path) -> None:
    closed = f"git://127.0.0.1:{free_port()}/course.git"

    with pytest.raises(ws.SyncError, match=re.escape(closed)):
        ws.sync(closed, BRANCH, dest)

    assert not dest.parent.exists()


def test_missing_repository_on_server_names_the_url(daemon: Daemon, dest: Path) -> None:
    url = daemon.url("no-such-course.git")

    with pytest.raises(ws.SourceUnavailableError, match=re.escape(url)):
        ws.sync(url, BRANCH, dest)

    assert not dest.parent.exists()


def test_missing_branch_raises_and_touches_nothing(upstream: Upstream, dest: Path) -> None:
    ws.sync(upstream.url, BRANCH, dest)
    (dest / "lab/a.txt").write_text("student\n")
    before = snapshot(dest, include_git=True)

    with pytest.raises(ws.BranchNotFoundError) as caught:
        ws.sync(upstream.url, "no-such-branch", dest)

    message = str(caught.value)
    assert "'no-such-branch'" in message
    assert upstream.url in message
    assert_one_line(message)
    assert snapshot(dest, include_git=True) == before


def test_silent_server_times_out_instead_of_hanging(dest: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        # The kernel completes the handshake but nobody ever answers.
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"git://127.0.0.1:{server.getsockname()[1]}/course.git"
        started = time.monotonic()

        with pytest.raises(ws.SourceUnavailableError, match="timed out"):
            ws.sync(url, BRANCH, dest, timeout=1.0)

    assert time.monotonic() - started < 10
    assert not dest.parent.exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Run the file itself, from elsewhere: it is shipped as a standalone script.
    return subprocess.run(
        [sys.executable, str(Path(ws.__file__)), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_prints_one_line_and_exits_zero(upstream: Upstream, dest: Path, tmp_path: Path) -> None:
    args = (
        "--source",
        upstream.url,
        "--branch",
        BRANCH,
        "--dest",
        str(dest),
        "--depth",
        "1",
    )

    first = run_cli(*args, cwd=tmp_path)
    second = run_cli(*args, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("cloned ")
    assert_one_line(first.stdout)
    assert first.stderr == ""
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stdout
    assert_one_line(second.stdout)


@pytest.mark.parametrize(
    "case",
    ["missing branch", "unreachable", "usage"],
)
def test_cli_failure_is_one_line_on_stderr_exit_one(
    upstream: Upstream, dest: Path, tmp_path: Path, case: str
) -> None:
    if case == "missing branch":
        args = ["--source", upstream.url, "--branch", "nope", "--dest", str(dest)]
        expected = "'nope'"
    elif case == "unreachable":
        url = f"git://127.0.0.1:{free_port()}/course.git"
        args = ["--source", url, "--branch", BRANCH, "--dest", str(dest)]
        expected = url
    else:
        args = ["--source", upstream.url, "--branch", BRANCH]
        expected = "--dest"

    proc = run_cli(*args, cwd=tmp_path)

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert_one_line(proc.stderr)
    assert proc.stderr.startswith("workspace_sync: error: ")
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not dest.exists()
