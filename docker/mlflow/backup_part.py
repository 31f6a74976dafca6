"""One part of the lab's data, read or written inside a container (`invoke backup/restore`).

The host (mlflow_lab/lab/backup.py) calls it as small commands; the Jupyter image
inherits it from the MLflow image:

    backup_part.py dump  sqlite PATH            a consistent snapshot of the database, to stdout
    backup_part.py dump  tree ROOT [--skip REL] the folder as a tar stream, to stdout
    backup_part.py stage sqlite PATH            the new database from stdin, beside the old one
    backup_part.py stage tree ROOT [--skip REL] the new tree from stdin, beside the old one
    backup_part.py swap  KIND WHERE [--skip REL] the staged data in place, the old kept aside
    backup_part.py undo  KIND WHERE [--skip REL] the old data back in place, the stage removed
    backup_part.py finish KIND WHERE [--skip REL] the old data kept aside is removed

A restore never deletes before the new data is complete: `stage` writes beside (a
full disk or an interrupt there removes only the stage), `swap` is renames only, and
`undo` puts back whatever `swap` moved, at any point it stopped. Exit codes: 0 done,
2 refused input, 3 disk full, 130 interrupted; the one line on stderr says which.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import sqlite3
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import Any, BinaryIO

CHUNK = 1 << 20
STAGE_DB = ".restoring"  # suffix of the new database while it is written
OLD_DB = ".lab-old"  # suffix of the old database while the restore is not finished
STAGE_DIR = ".lab-restoring"  # the new tree, extracted beside the old one (same volume)
OLD_DIR = ".lab-old"  # the old tree's entries, while the restore is not finished
# Written once every old entry is in OLD_DIR: from then on, what ROOT holds is new.
SWAPPED = ".lab-swapped"
OURS = {STAGE_DIR, OLD_DIR, SWAPPED}
# Pythons with extraction filters (3.11.4+) apply the "data" filter on top of `checked`.
SAFE: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
DB_SUFFIXES = ("-wal", "-shm", "-journal")


class Refused(Exception):
    """Input the restore must not write (an unsafe tar member, a damaged database)."""


class Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- dump ------------------------------------------------------------------------------


def dump_sqlite(path: str, out: BinaryIO) -> None:
    # sqlite3's backup API copies the database inside one read transaction: a consistent
    # snapshot while the server keeps writing (a file copy could catch a half-written WAL).
    # mode=rw: a missing database is an error, not a new empty one.
    source = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = os.path.join(tmp, "snapshot.db")
        target = sqlite3.connect(snapshot)
        source.backup(target)
        target.close()
        source.close()
        with open(snapshot, "rb") as handle:
            shutil.copyfileobj(handle, out, CHUNK)
    out.flush()


def _skipped(name: str, skip: str) -> bool:
    return bool(skip) and (name == f"./{skip}" or name.startswith(f"./{skip}/"))


def dump_tree(root: str, skip: str, out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|") as tar:
        tar.add(root, arcname=".", filter=lambda m: None if _skipped(m.name, skip) else m)
    out.flush()


# -- stage: the new data beside the old -----------------------------------------------


def stage_sqlite(path: str, source: BinaryIO) -> None:
    staged = path + STAGE_DB
    owner = os.stat(os.path.dirname(path))
    try:
        with open(staged, "wb") as handle:
            shutil.copyfileobj(source, handle, CHUNK)
            handle.flush()
            os.fsync(handle.fileno())
        # immutable: the check must not leave -wal/-shm files beside the staged copy.
        conn = sqlite3.connect(f"file:{staged}?immutable=1", uri=True)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        if verdict != "ok":
            raise Refused(f"the new database fails its integrity check ({verdict})")
        os.chown(staged, owner.st_uid, owner.st_gid)
    except sqlite3.DatabaseError as exc:
        os.remove(staged)
        raise Refused(f"the new database is not a SQLite database ({exc})") from None
    except BaseException:
        if os.path.exists(staged):
            os.remove(staged)
        raise


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """The member when it is safe to extract into `dest`; Refused otherwise.

    By hand, the rules of tarfile's "data" filter, which this image's Python (3.11.2)
    lacks: no absolute names, no `..`, nothing through a link out of `dest`, links only
    to places inside, no devices or FIFOs; owner-writable, no setuid bits.
    """
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise Refused(f"unsafe member name {name!r}")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise Refused(f"member {name!r} is a device or FIFO")
    real_dest = os.path.realpath(dest)
    # realpath follows the links already extracted: a name through one cannot escape.
    target_path = os.path.realpath(os.path.join(dest, name))
    if not _inside(real_dest, target_path) and name not in (".", "./"):
        raise Refused(f"member {name!r} would land outside the folder")
    if member.issym() or member.islnk():
        link = member.linkname
        if os.path.isabs(link):
            raise Refused(f"member {name!r} links to an absolute path")
        base = os.path.dirname(os.path.join(dest, name)) if member.issym() else dest
        if not _inside(real_dest, os.path.realpath(os.path.join(base, link))):
            raise Refused(f"member {name!r} links outside the folder")
    member.mode = (member.mode | 0o600) & 0o755 if not member.issym() else member.mode
    return member


def extract(source: BinaryIO, dest: str) -> None:
    """A tar stream into `dest`, every member checked before it is written."""
    with tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            checked(member, dest)
            if member.name in (".", "./"):
                continue
            # Ownership is the volume's, set afterwards: not the uid the dump recorded.
            tar.extract(member, dest, set_attrs=not member.issym(), numeric_owner=True, **SAFE)


def _chown_tree(root: str, uid: int, gid: int) -> None:
    for folder, dirs, files in os.walk(root):
        os.lchown(folder, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, gid)


def stage_tree(root: str, source: BinaryIO) -> None:
    staged = os.path.join(root, STAGE_DIR)
    shutil.rmtree(staged, ignore_errors=True)  # a stage left by an earlier attempt
    os.mkdir(staged, 0o700)
    try:
        extract(source, staged)
        owner = os.stat(root)
        _chown_tree(staged, owner.st_uid, owner.st_gid)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


# -- swap, undo, finish ------------------------------------------------------------------


def swap_sqlite(path: str) -> None:
    staged, old = path + STAGE_DB, path + OLD_DB
    if not os.path.exists(staged):
        raise Refused(f"no staged database {staged}: run the restore again")
    if os.path.exists(path):
        # Fold the old WAL into the old file first: SQLite would otherwise replay it onto
        # the new database, and the old file must be whole by itself for `undo`.
        try:
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        except sqlite3.Error:
            pass  # not a usable database: its sidecar files are worth nothing either
        for suffix in DB_SUFFIXES:
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        os.replace(path, old)
    os.replace(staged, path)
    _fsync_dir(os.path.dirname(path))


def undo_sqlite(path: str) -> None:
    staged, old = path + STAGE_DB, path + OLD_DB
    if os.path.exists(old):
        for suffix in DB_SUFFIXES:  # written by nobody yet: the stack is stopped
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        os.replace(old, path)
        _fsync_dir(os.path.dirname(path))
    if os.path.exists(staged):
        os.remove(staged)


def finish_sqlite(path: str) -> None:
    for leftover in (path + OLD_DB, path + STAGE_DB):
        if os.path.exists(leftover):
            os.remove(leftover)


def _ancestors(skip: str) -> set[str]:
    """`a`, `a/b` for skip `a/b/c`: folders that hold the skipped path stay in place
    (the skipped path is another mount there) and are swapped entry by entry."""
    steps = skip.split("/") if skip else []
    return {"/".join(steps[:n]) for n in range(1, len(steps))}


def _entries(folder: str, rel: str) -> Iterator[tuple[str, str]]:
    """(name, path relative to the root) of each entry of `folder`, sorted."""
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        if not rel and name in OURS:
            continue
        yield name, f"{rel}/{name}" if rel else name


def _move_out(root: str, into: str, rel: str, skip: str, keep: set[str]) -> None:
    """Every entry under root/rel except the skipped path moves to into/rel."""
    here = os.path.join(root, rel)
    os.makedirs(os.path.join(into, rel), exist_ok=True)
    for name, sub in _entries(here, rel):
        if sub == skip:
            continue
        if sub in keep and os.path.isdir(os.path.join(here, name)):
            _move_out(root, into, sub, skip, keep)
            continue
        os.rename(os.path.join(here, name), os.path.join(into, sub))


def _move_in(source: str, root: str, rel: str, skip: str, keep: set[str]) -> None:
    """Every entry under source/rel moves to root/rel; folders kept in place are merged."""
    here = os.path.join(source, rel)
    for name, sub in _entries(here, rel):
        if sub == skip:
            continue
        target = os.path.join(root, sub)
        if sub in keep and os.path.isdir(target):
            _move_in(source, root, sub, skip, keep)
            continue
        os.rename(os.path.join(here, name), target)


def swap_tree(root: str, skip: str) -> None:
    staged, old, marker = (os.path.join(root, n) for n in (STAGE_DIR, OLD_DIR, SWAPPED))
    if not os.path.isdir(staged):
        raise Refused(f"no staged tree in {staged}: run the restore again")
    keep = _ancestors(skip)
    if not os.path.exists(marker):
        _move_out(root, old, "", skip, keep)
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write("every old entry is in .lab-old\n")
        _fsync_dir(root)
    _move_in(staged, root, "", skip, keep)
    _fsync_dir(root)


def undo_tree(root: str, skip: str) -> None:
    staged, old, marker = (os.path.join(root, n) for n in (STAGE_DIR, OLD_DIR, SWAPPED))
    keep = _ancestors(skip)
    if os.path.exists(marker):
        # Everything in ROOT is new now: it goes back to the stage, to be removed.
        os.makedirs(staged, exist_ok=True)
        _move_out(root, staged, "", skip, keep)
    if os.path.isdir(old):
        _move_in(old, root, "", skip, keep)
        _fsync_dir(root)
    if os.path.exists(marker):
        os.remove(marker)
    for leftover in (old, staged):
        shutil.rmtree(leftover, ignore_errors=True)


def finish_tree(root: str, skip: str) -> None:
    marker = os.path.join(root, SWAPPED)
    if os.path.exists(marker):
        os.remove(marker)
    for leftover in (OLD_DIR, STAGE_DIR):
        shutil.rmtree(os.path.join(root, leftover), ignore_errors=True)


# -- the command -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["dump", "stage", "swap", "undo", "finish"])
    parser.add_argument("kind", choices=["sqlite", "tree"])
    parser.add_argument("where", help="the database file (sqlite) or the folder (tree)")
    parser.add_argument("--skip", default="", help="a path under the folder to leave alone")
    args = parser.parse_args(argv)
    if args.action in ("swap", "undo", "finish"):
        # Renames only, over in moments: an interrupt now would leave a half-swapped tree.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
    # `$LAB_MLFLOW_DB`: the image's ENV names its own paths, so the host need not.
    where = os.path.expandvars(args.where)
    try:
        if args.action == "dump" and args.kind == "sqlite":
            dump_sqlite(where, sys.stdout.buffer)
        elif args.action == "dump":
            dump_tree(where, args.skip, sys.stdout.buffer)
        elif args.action == "stage" and args.kind == "sqlite":
            stage_sqlite(where, sys.stdin.buffer)
        elif args.action == "stage":
            stage_tree(where, sys.stdin.buffer)
        elif args.kind == "sqlite":
            {"swap": swap_sqlite, "undo": undo_sqlite, "finish": finish_sqlite}[args.action](where)
        else:
            {"swap": swap_tree, "undo": undo_tree, "finish": finish_tree}[args.action](
                where, args.skip
            )
    except Interrupted:
        print(f"{args.action} of {where} interrupted: nothing of it was kept", file=sys.stderr)
        return 130
    except Refused as exc:
        print(f"{args.action} of {where} refused: {exc}", file=sys.stderr)
        return 2
    except (OSError, tarfile.TarError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            print(f"{args.action} of {where}: no space left on device", file=sys.stderr)
            return 3
        print(f"{args.action} of {where} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
