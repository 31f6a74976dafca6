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
  or mirrored repository keeps the student's work in place); unrelated history
  falls into the next rule.
* History diverged (upstream force-pushed, no common ancestor, unfinished
  merge/rebase, a merge that cannot complete) or ``dest`` is not a git
  repository: a fresh copy is cloned *first*, then ``dest`` is renamed whole to
  ``<dest>_backup_<YYYYmmdd-HHMMSS>`` and the fresh copy takes its place.
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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

__all__ = [
    "GIT_TIMEOUT_S",
    "BranchNotFoundError",
    "GitCommandError",
    "GitTimeoutError",
    "SourceUnavailableError",
    "SyncAction",
    "SyncError",
    "SyncResult",
    "main",
    "sync",
]

GIT_TIMEOUT_S = 120.0

# The container user has no git identity; these are passed per command so the
# student's own config (if any) is never edited.
_SYNC_NAME = "mlflow-lab sync"
_SYNC_EMAIL = "sync@mlflow-lab.invalid"
_GIT_CONFIG = (
    f"user.name={_SYNC_NAME}",
    f"user.email={_SYNC_EMAIL}",
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
# `fetch --depth N` makes the new tip's N-th ancestor a shallow boundary, which
# cuts the new commits off from the ones we have whenever upstream moved more
# than N-1 commits; merging then would see "unrelated histories". The fetch is
# repeated with a growing depth until it reaches the previously fetched tip
# (related), upstream's root (unrelated) or this cap (treated as diverged).
_DEPTH_CAP = 5000
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
        self.source = source
        self.branch = branch
        super().__init__(f"cannot fetch branch '{branch}' from {source}: {detail}")


class BranchNotFoundError(SyncError):
    """The source is reachable but has no such branch; ``dest`` was not touched."""

    def __init__(self, source: str, branch: str) -> None:
        self.source = source
        self.branch = branch
        super().__init__(f"branch '{branch}' does not exist in {source}")


class GitCommandError(SyncError):
    """A local git command failed unexpectedly."""

    def __init__(self, args: Sequence[str], code: int, stderr: str) -> None:
        self.args_ = tuple(args)
        self.code = code
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
    summary: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", _one_line(self._describe()))

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
    merge_new_history: bool = False,
) -> SyncResult:
    """Clone ``branch`` of ``source`` into ``dest`` or merge it into an existing copy.

    ``depth`` limits history (``None`` = full history). ``timeout`` applies to
    every single git process. Raises :class:`SyncError` (one-line message).

    A source whose history was rewritten since the last sync is a divergence: the
    copy is backed up and replaced. With ``merge_new_history`` (a source that is
    rebuilt with a history of its own on every release, like the lab bundled in the
    image) the new content is merged like any update instead, student edits winning.
    """
    if shutil.which("git") is None:
        raise SyncError("the git executable was not found on PATH")
    if depth is not None and depth < 1:
        raise SyncError(f"depth must be a positive integer or None, not {depth}")
    if timeout <= 0:
        raise SyncError(f"timeout must be positive, not {timeout}")
    ctx = _Context(
        source=_normalise_source(source),
        branch=branch,
        dest=Path(os.path.abspath(dest)),
        depth=depth,
        timeout=timeout,
        merge_new_history=merge_new_history,
    )
    _check_branch_name(ctx)
    with _exclusive(ctx.dest, ctx.timeout):
        # Asking the remote first gives a precise error (unreachable vs missing
        # branch) before anything on disk changes.
        remote_tip = _probe_remote(ctx)
        kind, why = _inspect(ctx)
        if kind is _DestKind.ABSENT:
            return _fresh_clone(ctx)
        if kind is _DestKind.FOREIGN:
            return _replace(ctx, why)
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
    merge_new_history: bool = False

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    @property
    def is_local_source(self) -> bool:
        return "://" not in self.source and os.path.isdir(self.source)


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


class _DestKind(enum.Enum):
    ABSENT = "absent"  # missing or an empty directory
    FOREIGN = "foreign"  # exists but is not our git repository
    REPO = "repo"


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


def _git(ctx: _Context, *args: str, check: bool = True, stdin: bytes | None = None) -> _Out:
    return _run(args, ctx.dest, ctx.timeout, check=check, stdin=stdin)


def _network(ctx: _Context, args: Sequence[str], cwd: Path) -> _Out:
    """Run a git command that talks to the source; failures name URL and branch."""
    try:
        return _run(args, cwd, ctx.timeout)
    except GitCommandError as exc:
        raise SourceUnavailableError(ctx.source, ctx.branch, _last_line(exc.stderr)) from None
    except GitTimeoutError as exc:
        raise SourceUnavailableError(ctx.source, ctx.branch, str(exc)) from None


def _nul(paths: Iterable[str]) -> bytes:
    return b"".join(os.fsencode(p) + b"\0" for p in paths)


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


def _same_source(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        url = url.strip()
        url = url.removeprefix("file://")
        if "://" not in url and os.path.exists(url):
            url = os.path.realpath(url)
        url = url.rstrip("/")
        return url.removesuffix(".git")

    return norm(a) == norm(b)


def _check_branch_name(ctx: _Context) -> None:
    out = _run(
        ["check-ref-format", "--branch", ctx.branch],
        Path("/"),
        ctx.timeout,
        check=False,
    )
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
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _probe_remote(ctx: _Context) -> str:
    ref = f"refs/heads/{ctx.branch}"
    try:
        out = _run(
            ["ls-remote", "--exit-code", "--", ctx.source, ref],
            Path("/"),
            ctx.timeout,
            check=False,
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


def _inspect(ctx: _Context) -> tuple[_DestKind, str]:
    dest = ctx.dest
    if not os.path.lexists(dest):
        return _DestKind.ABSENT, ""
    if not dest.is_dir():
        return _DestKind.FOREIGN, "it was not a directory"
    if not any(dest.iterdir()):
        return _DestKind.ABSENT, ""
    if not os.path.lexists(dest / ".git"):
        return _DestKind.FOREIGN, "it was not a git repository"
    top = _git(ctx, "rev-parse", "--show-toplevel", check=False)
    if top.code != 0:
        if "dubious ownership" in top.stderr:
            # Backing up would misfire on every run; the owner must fix this.
            raise SyncError(f"git refuses to use {dest}: {_last_line(top.stderr)}")
        return _DestKind.FOREIGN, "it was a broken git repository"
    if os.path.realpath(top.text) != os.path.realpath(dest):
        return _DestKind.FOREIGN, "it was not the top of a git repository"
    return _DestKind.REPO, ""


def _clone_to_temp(ctx: _Context) -> tuple[Path, Path]:
    """Clone next to ``dest`` (same filesystem, so placing it is a rename)."""
    parent = ctx.dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{ctx.dest.name}.sync-", dir=parent))
    target = tmp_root / "clone"
    args = ["clone", "--quiet", "--single-branch", "--no-tags", "--branch", ctx.branch]
    # git ignores --depth for local paths (with a warning) and hard-links instead.
    if ctx.depth is not None and not ctx.is_local_source:
        args += ["--depth", str(ctx.depth)]
    args += ["--", ctx.source, str(target)]
    try:
        # Run outside any repository so an enclosing repo's config cannot apply.
        _network(ctx, args, Path("/"))
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return tmp_root, target


def _place(clone: Path, dest: Path) -> None:
    if os.path.isdir(dest):
        # An existing empty directory may be a mount point, which cannot be
        # replaced by rename; fill it instead.
        for child in clone.iterdir():
            os.rename(child, dest / child.name)
    else:
        os.rename(clone, dest)


def _head(ctx: _Context) -> str:
    return _git(ctx, "rev-parse", "HEAD").text


def _fresh_clone(ctx: _Context) -> SyncResult:
    tmp_root, clone = _clone_to_temp(ctx)
    try:
        try:
            _place(clone, ctx.dest)
        except OSError as exc:
            raise SyncError(f"cannot place the clone at {ctx.dest}: {exc}") from None
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return SyncResult(SyncAction.CLONED, ctx.source, ctx.branch, ctx.dest, _head(ctx))


def _backup_path(dest: Path) -> Path:
    base = f"{dest.name}_backup_{_timestamp()}"
    candidate = dest.with_name(base)
    n = 2
    while os.path.lexists(candidate):
        candidate = dest.with_name(f"{base}_{n}")
        n += 1
    return candidate


def _move_aside(dest: Path) -> Path:
    """Rename ``dest`` whole; renaming (never copy-and-delete) cannot lose data."""
    backup = _backup_path(dest)
    try:
        os.rename(dest, backup)
        return backup
    except OSError as exc:
        if not dest.is_dir():
            raise SyncError(f"cannot back up {dest}: {exc}") from None
    # A mount point cannot be renamed; move its contents instead.
    backup.mkdir()
    for child in list(dest.iterdir()):
        try:
            os.rename(child, backup / child.name)
        except OSError as exc:
            raise SyncError(f"cannot back up {dest} (partly moved to {backup}): {exc}") from None
    return backup


def _replace(ctx: _Context, reason: str) -> SyncResult:
    # Clone first: if the source fails, the student's folder is still untouched.
    tmp_root, clone = _clone_to_temp(ctx)
    try:
        backup = _move_aside(ctx.dest)
        try:
            _place(clone, ctx.dest)
        except OSError as exc:
            if not os.path.lexists(ctx.dest):
                with contextlib.suppress(OSError):
                    os.rename(backup, ctx.dest)
            raise SyncError(
                f"cannot place a fresh clone at {ctx.dest} (student files are in {backup}"
                f" or back in place): {exc}"
            ) from None
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return SyncResult(
        SyncAction.REPLACED,
        ctx.source,
        ctx.branch,
        ctx.dest,
        _head(ctx),
        backup=backup,
        reason=reason,
    )


def _rev(ctx: _Context, rev: str) -> str | None:
    out = _git(ctx, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return out.text if out.code == 0 and out.text else None


def _is_ancestor(ctx: _Context, ancestor: str, descendant: str) -> bool:
    out = _git(ctx, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    if out.code not in (0, 1):
        raise GitCommandError(["merge-base"], out.code, out.stderr)
    return out.code == 0


def _git_dir(ctx: _Context) -> Path:
    return Path(_git(ctx, "rev-parse", "--absolute-git-dir").text)


def _shallow_commits(ctx: _Context) -> set[str]:
    path = _git_dir(ctx) / "shallow"
    try:
        return set(path.read_text().split())
    except FileNotFoundError:
        return set()


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


def _fetch(ctx: _Context, remote_tip: str, old_tip: str | None, head: str) -> tuple[str, bool]:
    """Fetch upstream; return (new tip, whether it continues the history we have).

    "Continues" means the previously fetched upstream tip is an ancestor of the
    new one (so a force-push counts as diverged even if an older commit is
    shared); without a previous tip, any common ancestor with HEAD will do.
    """
    if remote_tip == old_tip:
        # Nothing new upstream (the common case at every start-up): no transfer.
        return remote_tip, True
    refspec = f"+refs/heads/{ctx.branch}:{ctx.remote_ref}"
    anchor = old_tip or head
    depths: list[int | None] = [None]
    if ctx.depth is not None and _git(ctx, "rev-parse", "--is-shallow-repository").text == "true":
        depths = []
        d = ctx.depth
        while d < _DEPTH_CAP:
            depths.append(d)
            d *= 4
        depths.append(_DEPTH_CAP)
    new_tip = ""
    for depth in depths:
        extra = [] if depth is None else ["--depth", str(depth)]
        _network(
            ctx,
            ["fetch", "--quiet", "--no-tags", *extra, "--", ctx.source, refspec],
            ctx.dest,
        )
        tip = _rev(ctx, ctx.remote_ref)
        if tip is None:
            raise SourceUnavailableError(ctx.source, ctx.branch, "fetch stored no commit")
        new_tip = tip
        if old_tip is not None:
            if _is_ancestor(ctx, anchor, new_tip):
                return new_tip, True
        elif _git(ctx, "merge-base", anchor, new_tip, check=False).code == 0:
            return new_tip, True
        shallow = _shallow_commits(ctx)
        if not shallow:
            return new_tip, False
        reachable = set(_git(ctx, "rev-list", new_tip).text.split())
        if not reachable & shallow:
            # Upstream's history is complete down to its root and still never
            # meets ours: definitely unrelated.
            return new_tip, False
    # Not connected within the cap: treat as diverged; a backup loses nothing.
    return new_tip, False


def _bridge(ctx: _Context, old_tip: str, new_tip: str) -> str:
    """A commit with upstream's new content whose parents are its old and new history.

    Merged like any upstream commit, it brings in exactly what changed between the
    two contents (the merge base is the old tip), and later syncs find the new
    history already joined.
    """
    tree = _git(ctx, "rev-parse", f"{new_tip}^{{tree}}").text
    message = f"Upstream {ctx.branch} from {ctx.source} has a new history (mlflow-lab sync)"
    return _git(ctx, "commit-tree", tree, "-p", old_tip, "-p", new_tip, "-m", message).text


def _repoint_origin(ctx: _Context) -> str | None:
    current = _git(ctx, "remote", "get-url", "origin", check=False)
    if current.code != 0:
        _git(ctx, "remote", "add", "--", "origin", ctx.source)
        return "(no origin)"
    if _same_source(current.text, ctx.source):
        return None
    _git(ctx, "remote", "set-url", "--", "origin", ctx.source)
    return current.text


def _restore_deleted(ctx: _Context) -> list[str]:
    """Bring back tracked files missing from the working tree."""
    # Deleted in the working tree only: restore from the index, which keeps
    # anything the student had staged.
    unstaged = _git(ctx, "ls-files", "--deleted", "-z").zsplit()
    unstaged = [p for p in dict.fromkeys(unstaged) if not os.path.lexists(ctx.dest / p)]
    if unstaged:
        _git(
            ctx,
            "checkout",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            stdin=_nul(unstaged),
        )
    # Removed with `git rm` but not committed: restore from HEAD.
    staged = _git(ctx, "diff", "--cached", "--name-only", "--diff-filter=D", "-z", "HEAD").zsplit()
    staged = [p for p in staged if not os.path.lexists(ctx.dest / p)]
    if staged:
        _git(
            ctx,
            "checkout",
            "HEAD",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            stdin=_nul(staged),
        )
    return sorted(set(unstaged) | set(staged))


def _commit_student_work(ctx: _Context) -> bool:
    _git(ctx, "add", "--update")
    if _git(ctx, "diff", "--cached", "--quiet", "HEAD", check=False).code == 0:
        return False
    _git(
        ctx,
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        "Student work saved by mlflow-lab sync before merging upstream",
    )
    return True


def _changed(ctx: _Context, a: str, b: str) -> set[str]:
    out = _git(ctx, "diff", "--name-only", "--no-renames", "-z", a, b)
    return set(out.zsplit())


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


def _undo_moves(ctx: _Context, moved: list[tuple[str, str]]) -> None:
    for old, new in reversed(moved):
        if not os.path.lexists(ctx.dest / old):
            with contextlib.suppress(OSError):
                os.rename(ctx.dest / new, ctx.dest / old)


def _merge(ctx: _Context, tip: str) -> bool:
    """Merge upstream with the student's side winning; False if it cannot complete."""
    message = f"Merge upstream {ctx.branch} from {ctx.source} (mlflow-lab sync)"
    out = _git(
        ctx,
        "merge",
        "-Xours",
        "--ff",
        "--no-edit",
        "--no-verify",
        "-m",
        message,
        tip,
        check=False,
    )
    if out.code == 0:
        return True
    if not (_git_dir(ctx) / "MERGE_HEAD").exists():
        # The merge never started (e.g. unrelated histories); nothing to undo.
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
        if paths:
            _git(
                ctx,
                "checkout",
                side,
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
                stdin=_nul(paths),
            )
            _git(
                ctx,
                "add",
                "--force",
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
                stdin=_nul(paths),
            )
    if gone:
        # --cached: whatever is in the working tree stays there.
        _git(
            ctx,
            "rm",
            "--cached",
            "--quiet",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            stdin=_nul(gone),
        )
    return not _git(ctx, "ls-files", "--unmerged").text


def _update(ctx: _Context, remote_tip: str) -> SyncResult:
    git_dir = _git_dir(ctx)
    _check_index_lock(git_dir)
    marker = _in_progress(ctx, git_dir)
    if marker is not None:
        return _replace(ctx, f"an unfinished git {marker} was in progress")
    head = _rev(ctx, "HEAD")
    if head is None:
        return _replace(ctx, "the git repository had no commits")

    old_tip = _rev(ctx, ctx.remote_ref)
    new_tip, related = _fetch(ctx, remote_tip, old_tip, head)
    if not related:
        if old_tip is None:
            return _replace(ctx, "it shares no history with upstream")
        if not (ctx.merge_new_history and _is_ancestor(ctx, old_tip, head)):
            return _replace(ctx, "upstream history was rewritten since the last sync")
        new_tip = _bridge(ctx, old_tip, new_tip)
    repointed = _repoint_origin(ctx)

    if _is_ancestor(ctx, new_tip, head):
        restored = _restore_deleted(ctx)
        return SyncResult(
            SyncAction.UP_TO_DATE,
            ctx.source,
            ctx.branch,
            ctx.dest,
            head,
            restored_files=tuple(restored),
            repointed_from=repointed,
        )

    deleted = _restore_deleted(ctx)
    _commit_student_work(ctx)
    before = _head(ctx)
    base_out = _git(ctx, "merge-base", before, new_tip, check=False)
    if base_out.code != 0:
        return _replace(ctx, "it shares no history with upstream")
    base = base_out.text.split()[0]
    upstream_changed = _changed(ctx, base, new_tip)
    student_changed = _changed(ctx, base, before)
    moved = _move_untracked_aside(ctx, before, new_tip, upstream_changed)
    if not _merge(ctx, new_tip):
        _undo_moves(ctx, moved)
        return _replace(ctx, "the merge with upstream could not complete")
    after = _head(ctx)
    restored = [p for p in deleted if os.path.lexists(ctx.dest / p)]
    return SyncResult(
        SyncAction.UPDATED,
        ctx.source,
        ctx.branch,
        ctx.dest,
        after,
        updated_files=tuple(sorted(_changed(ctx, before, after))),
        kept_student_edits=tuple(sorted(student_changed & upstream_changed)),
        restored_files=tuple(restored),
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
        help="history depth; 0 for full history (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=GIT_TIMEOUT_S,
        help=f"seconds allowed per git command (default {GIT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--merge-new-history",
        action="store_true",
        help="merge a source whose history was rebuilt instead of backing up and replacing",
    )
    args = parser.parse_args(argv)
    if args.depth < 0:
        parser.error("--depth must be 0 or a positive integer")
    try:
        result = sync(
            args.source,
            args.branch,
            args.dest,
            args.depth or None,
            timeout=args.timeout,
            merge_new_history=args.merge_new_history,
        )
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
