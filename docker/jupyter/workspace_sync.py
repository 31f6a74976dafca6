"""Place a course git repository into a student's workspace without losing work.

Standard library only: this file is copied into the JupyterLab image and run as
``python3 workspace_sync.py --source SRC --branch BR --dest DIR [--depth 1]``.

The rules follow nbgitpuller's ``pull.py`` (the student always wins, nothing is
ever deleted):

* ``dest`` missing (or an empty directory): shallow clone of ``branch``.
* ``dest`` is a clone of ``source``: fetch, then merge upstream into the
  student's branch with ``-Xours`` so the student's side wins every conflicting
  hunk while upstream's other changes still arrive. Before merging:

  - tracked files the student deleted are restored (they come back, and get
    upstream's newer content if upstream changed them);
  - the student's uncommitted edits are committed (per-command identity, hooks
    off) so the merge can never overwrite them; the student's own commits are
    merged, never reset;
  - an untracked (or ignored) student file or folder sitting where upstream now
    adds a file is renamed the nbgitpuller way, ``name_<YYYYmmdd-HHMMSS>.ext``
    beside it, and upstream's file takes the original name;
  - a tree-level conflict that ``-Xours`` cannot settle is resolved the same
    way: the student's version if the student still has one, otherwise
    upstream's (a file the student deleted comes back).

* ``dest``'s ``origin`` points at another URL: origin is re-pointed to
  ``source`` and the normal merge runs when the histories are related (a moved
  or mirrored repository keeps the student's work in place).
* History diverged (upstream rewrote the history fetched last time, no common
  ancestor, unfinished merge/rebase, a merge that cannot complete) or ``dest``
  is not a git repository of its own: a fresh copy is cloned *first*, then
  ``dest`` is renamed whole to ``<dest>_backup_<YYYYmmdd-HHMMSS>`` and the fresh
  copy takes its place.
* Clone/fetch failures raise :class:`SourceUnavailableError` or
  :class:`BranchNotFoundError` before the student's files are touched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import enum
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

GIT_TIMEOUT_S = 120.0

# The container user has no git identity; these are passed per command so the
# student's own config (if any) is never edited.
_GIT_CONFIG = (
    "user.name=mlflow-lab sync",
    "user.email=sync@mlflow-lab.invalid",
    # A signing key prompt or a student's hook must not break or hang a sync.
    "commit.gpgsign=false",
    "core.hooksPath=/dev/null",
    # Automatic gc in the background would outlive our timeout handling.
    "gc.autoDetach=false",
    "advice.detachedHead=false",
)
# Environment variables that would point git at some other repository.
_REPO_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_CEILING_DIRECTORIES",
        "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    }
)
_STALE_INDEX_LOCK_S = 600.0
_IN_PROGRESS_MARKERS = {
    "MERGE_HEAD": "merge",
    "CHERRY_PICK_HEAD": "cherry-pick",
    "REVERT_HEAD": "revert",
    "BISECT_LOG": "bisect",
    "rebase-merge": "rebase",
    "rebase-apply": "rebase",
}
_LIST_LIMIT = 5


class SyncError(Exception):
    """A sync failed; the message is a single human-readable line."""


class SourceUnavailableError(SyncError):
    """The source could not be reached or read; ``dest`` was not touched."""

    def __init__(self, source: str, branch: str, detail: str) -> None:
        super().__init__(f"cannot fetch branch '{branch}' from {source}: {detail}")


class BranchNotFoundError(SyncError):
    """The source is reachable but has no such branch; ``dest`` was not touched."""

    def __init__(self, source: str, branch: str) -> None:
        super().__init__(f"branch '{branch}' does not exist in {source}")


class GitCommandError(SyncError):
    """A local git command failed unexpectedly."""

    def __init__(self, args: Sequence[str], code: int, stderr: str) -> None:
        self.stderr = stderr
        super().__init__(f"git {args[0]} failed (exit {code}): {_last_line(stderr)}")


class GitTimeoutError(SyncError):
    """A git command exceeded its timeout and was killed."""


class SyncAction(enum.StrEnum):
    CLONED = "cloned"
    UP_TO_DATE = "up to date"
    UPDATED = "updated"
    REPLACED = "backed up and replaced"


@dataclass(frozen=True)
class SyncResult:
    """What a sync did. Paths inside ``dest`` are relative POSIX strings."""

    action: SyncAction
    source: str
    branch: str
    dest: Path
    commit: str
    updated_files: tuple[str, ...] = ()
    kept_student_edits: tuple[str, ...] = ()
    restored_files: tuple[str, ...] = ()
    # (student's original path, the name it was moved to) for every untracked
    # student file that stood where upstream added a file.
    moved_aside: tuple[tuple[str, str], ...] = ()
    backup: Path | None = None
    reason: str = ""
    repointed_from: str | None = None

    @property
    def summary(self) -> str:
        return _one_line(self._describe())

    def _describe(self) -> str:
        where = f"{self.source} (branch {self.branch})"
        short = self.commit[:12]
        if self.action is SyncAction.CLONED:
            return f"cloned {where} into {self.dest} at {short}"
        if self.action is SyncAction.REPLACED:
            return (
                f"backed up {self.dest} to {self.backup} ({self.reason}) "
                f"and placed a fresh clone of {where} at {short}"
            )
        parts: list[str] = []
        if self.action is SyncAction.UP_TO_DATE:
            head = f"{self.dest} is up to date with {where} at {short}"
        else:
            head = f"updated {self.dest} from {where} to {short}"
            parts.append(f"{_plural(len(self.updated_files), 'file')} updated")
            parts.append(f"kept {_plural(len(self.kept_student_edits), 'student edit')}")
        if self.restored_files or self.action is SyncAction.UPDATED:
            parts.append(
                f"restored {_plural(len(self.restored_files), 'deleted file')}"
                + _listing(self.restored_files)
            )
        if self.moved_aside:
            pairs = [f"{old} -> {new}" for old, new in self.moved_aside]
            parts.append(
                f"renamed {_plural(len(pairs), 'student file')} to make room for "
                f"upstream's{_listing(pairs)}"
            )
        if self.repointed_from is not None:
            parts.append(f"origin re-pointed from {self.repointed_from}")
        return head + (": " + ", ".join(parts) if parts else "")


def sync(
    source: str,
    branch: str,
    dest: Path,
    depth: int | None = 1,
    *,
    timeout: float = GIT_TIMEOUT_S,
) -> SyncResult:
    """Clone ``branch`` of ``source`` into ``dest`` or merge it into an existing copy.

    ``depth`` limits the first clone's history (``None`` = full history); later
    fetches bring exactly the commits the copy lacks. ``timeout`` applies to
    every single git process. Raises :class:`SyncError` (one-line message).
    """
    if shutil.which("git") is None:
        raise SyncError("the git executable was not found on PATH")
    if depth is not None and depth < 1:
        raise SyncError(f"depth must be a positive integer or None, not {depth}")
    if timeout <= 0:
        raise SyncError(f"timeout must be positive, not {timeout}")
    ctx = _Context(_normalise_source(source), branch, Path(os.path.abspath(dest)), depth, timeout)
    _check_branch_name(ctx)
    with _exclusive(ctx.dest, ctx.timeout):
        # Asking the remote first gives a precise error (unreachable vs missing
        # branch) before anything on disk changes.
        remote_tip = _probe_remote(ctx)
        if not os.path.lexists(ctx.dest) or (ctx.dest.is_dir() and not any(ctx.dest.iterdir())):
            return _clone_fresh(ctx)
        if not ctx.dest.is_dir():
            return _clone_fresh(ctx, "it was not a directory")
        top = _git(ctx, "rev-parse", "--show-toplevel", check=False)
        if top.code != 0 or not os.path.samefile(top.text, ctx.dest):
            return _clone_fresh(ctx, "it was not a git repository of its own")
        return _update(ctx, remote_tip)


# --------------------------------------------------------------------------- #
# internals


@dataclass(frozen=True)
class _Context:
    source: str
    branch: str
    dest: Path
    depth: int | None
    timeout: float

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"


@dataclass(frozen=True)
class _Out:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="surrogateescape").strip()

    def zsplit(self) -> list[str]:
        raw = self.stdout.decode("utf-8", errors="surrogateescape")
        return [item for item in raw.split("\0") if item]


def _one_line(text: str) -> str:
    return " ".join(text.replace("\r", "\n").split("\n")).strip()


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("hint:")]
    # The first fatal/error line names the cause ("... does not appear to be a
    # git repository"); later ones are generic. git wraps some of them
    # ("unable to connect to host:" + "errno=Connection refused"), so the
    # lines up to the next fatal/error belong to it.
    starts = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "error:"))]
    if not starts:
        return lines[-1][:300] if lines else "no error output"
    end = starts[1] if len(starts) > 1 else len(lines)
    return " ".join(lines[starts[0] : end])[:300]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _listing(items: Sequence[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return f" ({shown}{f' and {more} more' if more > 0 else ''})"


def _timestamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env.update(
        {
            # Never wait for a password: a bad URL must fail, not hang.
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_MERGE_AUTOEDIT": "no",
            # Student paths are data, never glob patterns.
            "GIT_LITERAL_PATHSPECS": "1",
            # Messages are parsed only for one-line error reports, but keep them stable.
            "LC_ALL": "C",
            "LANGUAGE": "",
        }
    )
    if "GIT_SSH" not in env and "GIT_SSH_COMMAND" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def _run(
    args: Sequence[str],
    cwd: Path,
    timeout: float,
    *,
    check: bool = True,
    stdin: bytes | None = None,
) -> _Out:
    cmd = ["git"]
    for item in _GIT_CONFIG:
        cmd += ["-c", item]
    cmd += list(args)
    try:
        # A new session lets a timeout kill git's helpers (remote-https, ssh,
        # index-pack) too, not only the git process itself.
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise SyncError(f"cannot run git {args[0]} in {cwd}: {exc}") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise GitTimeoutError(f"git {args[0]} timed out after {timeout:g}s") from None
    except BaseException:
        _kill_group(proc)
        raise
    result = _Out(proc.returncode, out, err.decode("utf-8", errors="replace"))
    if check and result.code != 0:
        raise GitCommandError(args, result.code, result.stderr)
    return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _git(ctx: _Context, *args: str, check: bool = True) -> _Out:
    return _run(args, ctx.dest, ctx.timeout, check=check)


def _git_paths(ctx: _Context, paths: Sequence[str], *args: str) -> None:
    """``git ARGS`` on ``paths`` (given on stdin: any number, any characters)."""
    if paths:
        nul = b"".join(os.fsencode(p) + b"\0" for p in paths)
        spec = ["--pathspec-from-file=-", "--pathspec-file-nul"]
        _run([*args, *spec], ctx.dest, ctx.timeout, stdin=nul)


def _network(ctx: _Context, args: Sequence[str], cwd: Path) -> _Out:
    """Run a git command that talks to the source; failures name URL and branch."""
    try:
        return _run(args, cwd, ctx.timeout)
    except GitCommandError as exc:
        raise SourceUnavailableError(ctx.source, ctx.branch, _last_line(exc.stderr)) from None
    except GitTimeoutError as exc:
        raise SourceUnavailableError(ctx.source, ctx.branch, str(exc)) from None


def _normalise_source(source: str) -> str:
    source = source.strip()
    if not source:
        raise SyncError("the source URL is empty")
    if source.startswith("-"):
        raise SyncError(f"refusing a source that looks like an option: {source}")
    # A relative local path would change meaning with the working directory and
    # could never match the absolute path git records as origin.
    if "://" not in source and os.path.exists(source):
        return os.path.abspath(source)
    return source


def _check_branch_name(ctx: _Context) -> None:
    out = _run(["check-ref-format", "--branch", ctx.branch], Path("/"), ctx.timeout, check=False)
    if out.code != 0 or ctx.branch.startswith("-"):
        raise SyncError(f"invalid branch name: '{ctx.branch}'")


@contextlib.contextmanager
def _exclusive(dest: Path, wait_s: float) -> Iterator[None]:
    """Serialise syncs of one destination (e.g. start-up hook plus a manual run)."""
    key = hashlib.sha256(os.fsencode(dest)).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"mlflow-lab-sync-{key}.lock"
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open(lock_path, "a"))
        except OSError:
            # Another user owns the lock file: syncing unlocked beats not syncing.
            yield
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SyncError(f"another sync of {dest} is still running") from None
                time.sleep(0.1)
        yield  # closing the file releases the lock


def _probe_remote(ctx: _Context) -> str:
    ref = f"refs/heads/{ctx.branch}"
    try:
        out = _run(
            ["ls-remote", "--exit-code", "--", ctx.source, ref], Path("/"), ctx.timeout, check=False
        )
    except GitTimeoutError as exc:
        raise SourceUnavailableError(ctx.source, ctx.branch, str(exc)) from None
    if out.code not in (0, 2):
        raise SourceUnavailableError(ctx.source, ctx.branch, _last_line(out.stderr))
    for line in out.text.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    # Exit 2, or only a longer ref such as refs/heads/x/dev matched the pattern.
    raise BranchNotFoundError(ctx.source, ctx.branch)


def _clone_fresh(ctx: _Context, reason: str = "") -> SyncResult:
    """Clone next to ``dest``, then put the clone in its place.

    With a ``reason``, the existing ``dest`` is first renamed whole to a backup
    (renaming, never copy-and-delete, cannot lose data). Cloning comes first, so a
    failing source leaves the student's folder untouched.
    """
    ctx.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{ctx.dest.name}.sync-", dir=ctx.dest.parent))
    try:
        clone = tmp_root / "clone"
        args = ["clone", "--quiet", "--single-branch", "--no-tags", "--branch", ctx.branch]
        # git ignores --depth for local paths (with a warning) and hard-links instead.
        if ctx.depth is not None and ("://" in ctx.source or not os.path.isdir(ctx.source)):
            args += ["--depth", str(ctx.depth)]
        # Run outside any repository so an enclosing repo's config cannot apply.
        _network(ctx, [*args, "--", ctx.source, str(clone)], Path("/"))
        backup = _backup(ctx.dest) if reason else None
        try:
            # An empty directory at dest is replaced by the rename.
            os.rename(clone, ctx.dest)
        except OSError as exc:
            if backup is not None and not os.path.lexists(ctx.dest):
                with contextlib.suppress(OSError):
                    os.rename(backup, ctx.dest)
            kept = f" (student files are in {backup} or back in place)" if backup else ""
            raise SyncError(f"cannot place a fresh clone at {ctx.dest}{kept}: {exc}") from None
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    action = SyncAction.REPLACED if reason else SyncAction.CLONED
    commit = _git(ctx, "rev-parse", "HEAD").text
    return SyncResult(
        action, ctx.source, ctx.branch, ctx.dest, commit, backup=backup, reason=reason
    )


def _backup(dest: Path) -> Path:
    base = f"{dest.name}_backup_{_timestamp()}"
    backup, n = dest.with_name(base), 2
    while os.path.lexists(backup):
        backup, n = dest.with_name(f"{base}_{n}"), n + 1
    try:
        os.rename(dest, backup)
    except OSError as exc:
        raise SyncError(f"cannot back up {dest}: {exc}") from None
    return backup


def _rev(ctx: _Context, rev: str) -> str | None:
    out = _git(ctx, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return out.text if out.code == 0 and out.text else None


def _in_progress(ctx: _Context, git_dir: Path) -> str | None:
    for marker, operation in _IN_PROGRESS_MARKERS.items():
        if (git_dir / marker).exists():
            return operation
    if _git(ctx, "ls-files", "--unmerged").text:
        # e.g. a conflicted `git stash pop`: no marker file, but no commit possible.
        return "conflict resolution"
    return None


def _check_index_lock(git_dir: Path) -> None:
    lock = git_dir / "index.lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age < _STALE_INDEX_LOCK_S:
        raise SyncError(f"{lock} exists: another git command is running; try again later")
    # A lock this old was left by a killed git process (nbgitpuller does the same).
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()


def _repoint_origin(ctx: _Context) -> str | None:
    current = _git(ctx, "remote", "get-url", "origin", check=False)
    if current.code != 0:
        _git(ctx, "remote", "add", "--", "origin", ctx.source)
        return "(no origin)"
    if current.text == ctx.source:
        return None
    _git(ctx, "remote", "set-url", "--", "origin", ctx.source)
    return current.text


def _restore_deleted(ctx: _Context) -> list[str]:
    """Bring back tracked files missing from the working tree."""
    # Deleted in the working tree only: restored from the index, which keeps
    # anything the student had staged; removed with `git rm`: from HEAD.
    unstaged = _git(ctx, "ls-files", "--deleted", "-z").zsplit()
    staged = _git(ctx, "diff", "--cached", "--name-only", "--diff-filter=D", "-z", "HEAD").zsplit()
    unstaged = [p for p in unstaged if not os.path.lexists(ctx.dest / p)]
    staged = [p for p in staged if not os.path.lexists(ctx.dest / p)]
    _git_paths(ctx, unstaged, "checkout")
    _git_paths(ctx, staged, "checkout", "HEAD")
    return sorted({*unstaged, *staged})


def _commit_student_work(ctx: _Context) -> None:
    _git(ctx, "add", "--update")
    if _git(ctx, "diff", "--cached", "--quiet", "HEAD", check=False).code != 0:
        message = "Student work saved by mlflow-lab sync before merging upstream"
        _git(ctx, "commit", "--quiet", "--no-verify", "-m", message)


def _changed(ctx: _Context, a: str, b: str) -> set[str]:
    return set(_git(ctx, "diff", "--name-only", "--no-renames", "-z", a, b).zsplit())


def _tree_files(ctx: _Context, rev: str) -> set[str]:
    return set(_git(ctx, "ls-tree", "-r", "--name-only", "-z", rev).zsplit())


def _aside_name(dest: Path, rel: str, is_dir: bool, taken: set[str]) -> str:
    head, _, name = rel.rpartition("/")
    stem, ext = (name, "") if is_dir else os.path.splitext(name)
    ts = _timestamp()
    n = 1
    while True:
        suffix = f"_{ts}" if n == 1 else f"_{ts}_{n}"
        candidate = f"{head}/{stem}{suffix}{ext}" if head else f"{stem}{suffix}{ext}"
        if candidate not in taken and not os.path.lexists(dest / candidate):
            return candidate
        n += 1


def _blocker(ctx: _Context, rel: str, tracked: set[str]) -> str | None:
    """The untracked student path that stops upstream writing ``rel``, if any."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        full = ctx.dest / prefix
        if os.path.islink(full) or (full.exists() and not full.is_dir()):
            # A student file where upstream needs a directory.
            return None if prefix in tracked else prefix
    full = ctx.dest / rel
    if not os.path.lexists(full):
        return None
    if full.is_dir() and not full.is_symlink():
        inside = _git(ctx, "ls-files", "-z", "--", rel).zsplit()
        return None if inside else rel
    return rel


def _move_untracked_aside(
    ctx: _Context, head: str, tip: str, upstream_changed: set[str]
) -> list[tuple[str, str]]:
    """Rename student files (untracked or ignored) that upstream would overwrite.

    git refuses to overwrite untracked files but silently overwrites ignored
    ones, so both are moved, nbgitpuller-style, to ``name_<timestamp>.ext``.
    """
    in_head = _tree_files(ctx, head)
    in_tip = _tree_files(ctx, tip)
    moved: list[tuple[str, str]] = []
    done: set[str] = set()
    for rel in sorted(p for p in upstream_changed if p in in_tip and p not in in_head):
        victim = _blocker(ctx, rel, in_head)
        if victim is None or victim in done:
            continue
        full = ctx.dest / victim
        new = _aside_name(ctx.dest, victim, full.is_dir() and not full.is_symlink(), in_tip)
        os.rename(full, ctx.dest / new)
        done.add(victim)
        moved.append((victim, new))
    return moved


def _merge(ctx: _Context, tip: str) -> bool:
    """Merge upstream with the student's side winning; False if it cannot complete."""
    message = f"Merge upstream {ctx.branch} from {ctx.source} (mlflow-lab sync)"
    args = ("merge", "-Xours", "--ff", "--no-edit", "--no-verify", "-m", message, tip)
    if _git(ctx, *args, check=False).code == 0:
        return True
    if _rev(ctx, "MERGE_HEAD") is None:
        # The merge never started; nothing to undo.
        return False
    if _settle_tree_conflicts(ctx):
        commit = _git(ctx, "commit", "--quiet", "--no-edit", "--no-verify", check=False)
        if commit.code == 0:
            return True
    _git(ctx, "merge", "--abort", check=False)
    return False


def _settle_tree_conflicts(ctx: _Context) -> bool:
    """Resolve what -Xours leaves (modify/delete, rename/delete...) toward the student.

    -Xours settles conflicting hunks, but not whole-file conflicts. The student's
    version wins when the student still has one; otherwise upstream's file comes
    back, consistent with restoring files the student deleted.
    """
    stages: dict[str, set[str]] = {}
    for entry in _git(ctx, "ls-files", "--unmerged", "-z").zsplit():
        meta, _, path = entry.partition("\t")
        stages.setdefault(path, set()).add(meta.split()[-1])
    ours = sorted(p for p, s in stages.items() if "2" in s)
    theirs = sorted(p for p, s in stages.items() if "2" not in s and "3" in s)
    gone = sorted(p for p, s in stages.items() if not s & {"2", "3"})
    for side, paths in (("--ours", ours), ("--theirs", theirs)):
        _git_paths(ctx, paths, "checkout", side)
        _git_paths(ctx, paths, "add", "--force")
    # --cached: whatever is in the working tree stays there.
    _git_paths(ctx, gone, "rm", "--cached", "--quiet")
    return not _git(ctx, "ls-files", "--unmerged").text


def _update(ctx: _Context, remote_tip: str) -> SyncResult:
    git_dir = Path(_git(ctx, "rev-parse", "--absolute-git-dir").text)
    _check_index_lock(git_dir)
    marker = _in_progress(ctx, git_dir)
    if marker is not None:
        return _clone_fresh(ctx, f"an unfinished git {marker} was in progress")
    head = _rev(ctx, "HEAD")
    if head is None:
        return _clone_fresh(ctx, "the git repository had no commits")

    old_tip = _rev(ctx, ctx.remote_ref)
    if remote_tip != old_tip:  # nothing new upstream (every start-up): no transfer
        # No --depth: a shallow copy gets exactly the commits it lacks, joined to
        # the ones it has (a shallow source may move the boundary).
        refspec = f"+refs/heads/{ctx.branch}:{ctx.remote_ref}"
        fetch = ["fetch", "--quiet", "--no-tags", "--update-shallow", "--", ctx.source, refspec]
        _network(ctx, fetch, ctx.dest)
    new_tip = _rev(ctx, ctx.remote_ref) or remote_tip
    if old_tip is not None:
        ancestor = _git(ctx, "merge-base", "--is-ancestor", old_tip, new_tip, check=False)
        if ancestor.code != 0:
            # Even when an older commit is still shared: upstream dropped ours.
            return _clone_fresh(ctx, "upstream history was rewritten since the last sync")
    base = _git(ctx, "merge-base", head, new_tip, check=False).text
    if not base:
        return _clone_fresh(ctx, "it shares no history with upstream")
    repointed = _repoint_origin(ctx)
    deleted = _restore_deleted(ctx)
    if base == new_tip:
        return SyncResult(
            SyncAction.UP_TO_DATE,
            ctx.source,
            ctx.branch,
            ctx.dest,
            head,
            restored_files=tuple(deleted),
            repointed_from=repointed,
        )

    _commit_student_work(ctx)
    before = _git(ctx, "rev-parse", "HEAD").text
    upstream_changed = _changed(ctx, base, new_tip)
    student_changed = _changed(ctx, base, before)
    moved = _move_untracked_aside(ctx, before, new_tip, upstream_changed)
    if not _merge(ctx, new_tip):
        for old, new in reversed(moved):  # back to their names, then all into the backup
            if not os.path.lexists(ctx.dest / old):
                with contextlib.suppress(OSError):
                    os.rename(ctx.dest / new, ctx.dest / old)
        return _clone_fresh(ctx, "the merge with upstream could not complete")
    after = _git(ctx, "rev-parse", "HEAD").text
    return SyncResult(
        SyncAction.UPDATED,
        ctx.source,
        ctx.branch,
        ctx.dest,
        after,
        updated_files=tuple(sorted(_changed(ctx, before, after))),
        kept_student_edits=tuple(sorted(student_changed & upstream_changed)),
        restored_files=tuple(p for p in deleted if os.path.lexists(ctx.dest / p)),
        moved_aside=tuple(moved),
        repointed_from=repointed,
    )


# --------------------------------------------------------------------------- #
# command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line and exit 1, like every other failure of this script.
        self.exit(1, f"{self.prog}: error: {_one_line(message)}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="workspace_sync",
        description="Clone or safely update a course git repository in a student workspace.",
    )
    parser.add_argument("--source", required=True, help="git URL or local repository path")
    parser.add_argument("--branch", required=True, help="branch to place")
    parser.add_argument("--dest", required=True, type=Path, help="destination folder")
    parser.add_argument(
        "--depth",
        type=int,
        default=1,
        help="history depth of the first clone; 0 for full history (default 1)",
    )
    args = parser.parse_args(argv)
    if args.depth < 0:
        parser.error("--depth must be 0 or a positive integer")
    try:
        result = sync(args.source, args.branch, args.dest, args.depth or None)
    except SyncError as exc:
        print(f"{parser.prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI contract is one line and no traceback, whatever happens
        print(
            f"{parser.prog}: error: unexpected {type(exc).__name__}: {_one_line(str(exc))}",
            file=sys.stderr,
        )
        return 1
    print(result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
