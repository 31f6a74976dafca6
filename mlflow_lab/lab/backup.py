"""Backing up and restoring the lab's data: the SQLite store, the artifacts, the workspace.

A backup is one tar.gz: `manifest.json` (format, time, checksums) and three parts, each
read inside the containers by backup_part.py (docker/mlflow/), so the host needs no
access to Docker's volumes.

A restore never leaves less than it found. It unpacks and checks the backup in the
state dir, stops the lab, takes a safety backup of the current data (kept in the state
dir), writes each part beside the current data (`stage`), and only then swaps them in
by renames (`swap`); a full disk, a failure or a Ctrl-C before the end puts the current
data back (`undo`) and starts the lab on it again.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from mlflow_lab.core import docker
from mlflow_lab.core.docker import Result
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import layout, stack, startup
from mlflow_lab.lab.compose import JUPYTER, MLFLOW, LabCompose

FORMAT = "mlflow-lab-backup"
VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1 << 20
EXEC_TIMEOUT_S = 1800
CHUNK = 1 << 20
# The lab's tool in both images (the Jupyter image inherits it from the MLflow image).
TOOL = layout.tool("backup_part.py")
# The read-only view of the artifact store inside the workspace: the artifacts part
# already holds it, and it cannot be written when the workspace is restored.
ARTIFACTS_VIEW = "mlflowserver-lab/mlartifacts"
SAFETY_DIR = "backups"
# backup_part.py's exit codes.
REFUSED, DISK_FULL, INTERRUPTED = 2, 3, 130


@dataclass(frozen=True)
class Part:
    name: str  # member name in the backup file
    service: str  # the container that reads and writes it
    where: str  # its path inside that container (`$VAR` is expanded there, from the image)
    kind: str  # "sqlite" (one database file) or "tree" (a folder, as a tar)
    skip: str = ""  # a path under a tree that is another mount: left alone

    def args(self, action: str) -> list[str]:
        return [TOOL, action, self.kind, self.where, *(["--skip", self.skip] if self.skip else [])]


# The database comes first: artifacts are written before a run refers to them, so a
# store snapshot taken before the artifact snapshot never points at a missing file.
PARTS = (
    Part("mlflow.db", MLFLOW, layout.MLFLOW_DB, "sqlite"),
    Part("artifacts.tar", MLFLOW, layout.MLFLOW_ARTIFACTS, "tree"),
    Part("workspace.tar", JUPYTER, layout.WORKSPACE, "tree", ARTIFACTS_VIEW),
)


def require_extraction_filters() -> None:
    # tarfile's "data" filter (Python 3.11.4+) is what keeps a backup inside its folder.
    if not hasattr(tarfile, "data_filter"):
        raise LabError(
            "this Python has no safe tar extraction (3.11.4 or later is needed): recreate "
            "the venv with a newer python3"
        )


# -- running backup_part.py ------------------------------------------------------------


class Guard:
    """Ctrl-C (SIGINT) and SIGTERM held back to the restore's safe points.

    While a `stage` runs the signal is passed on to it (it removes its stage and stops);
    while a `swap` or `undo` runs it only waits: those are renames, over in moments, and
    a half-done one is what `undo` exists to avoid.
    """

    def __init__(self) -> None:
        self.hit = False
        self.child: subprocess.Popen[bytes] | None = None
        self.forward = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        if self.child is not None and self.forward and self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)

    @contextmanager
    def installed(self) -> Iterator[Guard]:
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def check(self) -> None:
        if self.hit:
            raise Interrupted


class Interrupted(Exception):
    pass


class StepFailed(Exception):
    """A backup_part.py call failed; `disk_full` when it said so."""

    def __init__(self, part: Part, action: str, result: Result) -> None:
        self.part, self.action, self.result = part, action, result
        self.disk_full = result.code == DISK_FULL or result.disk_full()
        self.interrupted = result.code == INTERRUPTED
        super().__init__(docker.failure(result) if result.engine_gone() else result.last_line())


def _oneoff(compose: LabCompose, service: str, args: list[str]) -> list[str]:
    """backup_part.py in a one-off container with the stopped service container's
    volumes (the same mounts, read-only ones included) and the same image."""
    container = compose.container(service)
    return [
        "run", "--rm", "-i", "--user", "root", "--network", "none",
        "--volumes-from", container, "--entrypoint", "python3", compose.image(service), *args,
    ]  # fmt: skip


def _in_running(compose: LabCompose, service: str, args: list[str]) -> list[str]:
    return ["exec", compose.container(service), "python3", *args]


def _run(
    argv: list[str],
    part: Part,
    action: str,
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
    guard: Guard | None = None,
) -> None:
    """`docker ARGV` with binary stdin/stdout files; StepFailed with its line when it fails."""
    with (
        open(stdin, "rb") if stdin else open(os.devnull, "rb") as source,
        open(stdout, "wb") if stdout else open(os.devnull, "wb") as target,
    ):
        proc = docker.popen(argv, stdin=source, stdout=target, stderr=subprocess.PIPE)
        if guard is not None:
            guard.child, guard.forward = proc, action in ("stage", "dump")
        try:
            _, err = proc.communicate(timeout=EXEC_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise LabError(
                f"`docker {argv[0]}` of {part.name} took over {EXEC_TIMEOUT_S} s: check the "
                "Docker engine (`docker info`)"
            ) from None
        finally:
            if guard is not None:
                guard.child = None
    result = Result(("docker", *argv[:1]), proc.returncode, "", err.decode(errors="replace"))
    if not result.ok:
        raise StepFailed(part, action, result)


# -- backup ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sqlite(path: Path) -> None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as exc:
        raise ValueError(f"the MLflow store is not a SQLite database ({exc})") from None
    if verdict != "ok":
        raise ValueError(f"the MLflow store fails its integrity check ({verdict})")


def manifest_document(settings: Settings, parts: dict[str, dict[str, object]]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "project": settings.project,
        "parts": parts,
    }


def write_archive(output: Path, manifest: dict[str, Any], parts_dir: Path) -> None:
    """The backup file from the parts in `parts_dir`, renamed into place when complete."""
    partial = parts_dir / "backup.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for part in PARTS:
            tar.add(parts_dir / part.name, arcname=part.name)
    # Renamed into place only when complete: a failed backup never leaves a torn file.
    os.replace(partial, output)


def _write(compose: LabCompose, settings: Settings, output: Path, *, running: bool) -> None:
    # The temporary folder sits next to the output, so the final rename cannot cross disks.
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".lab-backup-") as tmp:
        parts: dict[str, dict[str, object]] = {}
        for part in PARTS:
            target = Path(tmp) / part.name
            where = _in_running if running else _oneoff
            try:
                _run(where(compose, part.service, part.args("dump")), part, "dump", stdout=target)
            except StepFailed as exc:
                raise LabError(
                    f"reading the lab's {part.name} failed ({exc}): see `invoke status`"
                ) from None
            parts[part.name] = {"size": target.stat().st_size, "sha256": _sha256(target)}
        try:
            _check_sqlite(Path(tmp) / "mlflow.db")
        except ValueError as exc:
            raise LabError(f"the lab's snapshot is not usable: {exc}: see `invoke logs`") from None
        write_archive(output, manifest_document(settings, parts), Path(tmp))


def _disk_full_line(where: Path, what: str) -> str:
    return f"the disk holding {where} is full: {what}; free space there"


def backup(settings: Settings, output: Path) -> None:
    """Snapshot the running lab into `output` (written whole or not at all)."""
    docker.engine_version()
    compose = LabCompose(settings)
    states = compose.services()
    for service in ("mlflow", "jupyter"):
        if states.get(service, {}).get("state") != "running":
            raise LabError(
                f"the lab's {service} container is not running: a backup is taken from the "
                "running lab, start it with `invoke up`"
            )
    output = output.expanduser().resolve()
    if not output.parent.is_dir():
        raise LabError(f"--output {output}: folder {output.parent} does not exist: create it")
    try:
        _write(compose, settings, output, running=True)
    except OSError as exc:
        raise LabError(
            f"cannot write the backup to {output} ({exc.strerror}): free space there or "
            "choose another --output; the lab was not changed"
        ) from None
    print(f"Backup written to {output} ({output.stat().st_size // 1024} KiB).")


# -- checking a backup -------------------------------------------------------------------


class NoSpace(Exception):
    """Writing the unpacked backup failed on the host (the message is the OSError's)."""


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> str:
    source = tar.extractfile(member)
    if source is None:
        raise ValueError(f"its part {member.name} has no data")
    digest = hashlib.sha256()
    with open(target, "wb") as sink:
        while True:
            chunk = source.read(CHUNK)  # reading: a damaged file raises here
            if not chunk:
                break
            digest.update(chunk)
            try:
                sink.write(chunk)
            except OSError as exc:  # writing: the host's disk, not the backup
                raise NoSpace(exc) from exc
    return digest.hexdigest()


def check_tree(path: Path, name: str) -> None:
    """Every member of a tree part safe to extract: tarfile's "data" rules, before any
    container extracts it (backup_part.py checks again as it writes)."""
    try:
        with tarfile.open(path, "r:") as inner:
            for member in inner:
                tarfile.data_filter(member, "/restore")
    except tarfile.FilterError as exc:
        raise ValueError(f"its part {name} holds an unsafe member ({exc})") from None
    except tarfile.TarError as exc:
        raise ValueError(f"its part {name} is not a tar ({exc})") from None


def unpack(archive: Path, into: Path) -> dict[str, Any]:
    """Unpack and check every part into `into`, hashing as it is written.

    ValueError says what is wrong with the file; NoSpace when `into` cannot take it.
    """
    wanted = {MANIFEST, *(part.name for part in PARTS)}
    hashes: dict[str, str] = {}
    document: Any = None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue  # unknown members are not extracted at all
                if member.name in hashes or not member.isfile():
                    raise ValueError(f"its member {member.name} is repeated or not a file")
                if member.name == MANIFEST:
                    if member.size > MANIFEST_MAX_BYTES:
                        raise ValueError("its manifest is implausibly large")
                    source = tar.extractfile(member)
                    document = json.loads(source.read() if source else b"")
                    hashes[MANIFEST] = ""
                    continue
                hashes[member.name] = _copy_member(tar, member, into / member.name)
    except (tarfile.TarError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"it cannot be read ({exc or type(exc).__name__})") from None
    except json.JSONDecodeError:
        raise ValueError("its manifest is not JSON") from None
    except OSError as exc:  # reading the backup itself
        raise ValueError(f"it cannot be read ({exc.strerror or exc})") from None
    if document is None:
        raise ValueError("it has no manifest")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("it is not an mlflow-lab backup")
    if document.get("version") != VERSION:
        raise ValueError(f"it has format version {document.get('version')}, not {VERSION}")
    listed = document.get("parts")
    for part in PARTS:
        expected = listed.get(part.name) if isinstance(listed, dict) else None
        if not isinstance(expected, dict) or hashes.get(part.name) != expected.get("sha256"):
            raise ValueError(f"its part {part.name} is missing or damaged")
        if part.kind == "tree":
            check_tree(into / part.name, part.name)
    _check_sqlite(into / "mlflow.db")
    return document


@contextmanager
def unpacked(archive: Path, settings: Settings) -> Iterator[tuple[dict[str, Any], Path]]:
    """The backup's manifest and its checked parts, unpacked in the state dir (where the
    restore's safety backup goes too: not the system's temporary folder, which may be
    small), removed afterwards; LabError saying what is wrong otherwise."""
    require_extraction_filters()
    if not archive.is_file():
        raise LabError(f"backup file {archive} does not exist: give the path of a backup")
    state = settings.state_dir
    try:
        state.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=state, prefix=".restore-")
    except OSError as exc:
        raise LabError(
            f"cannot unpack the backup in {state} ({exc.strerror}): make LAB_STATE_DIR "
            "writable; nothing was changed"
        ) from None
    folder = Path(tmp)
    try:
        try:
            manifest = unpack(archive, folder)
        except ValueError as exc:
            raise LabError(
                f"{archive} is not a usable lab backup: {exc}: nothing was changed; use a "
                "file written by `invoke backup`"
            ) from None
        except NoSpace as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
                raise LabError(
                    _disk_full_line(state, "the backup could not be unpacked there")
                    + " (or set LAB_STATE_DIR elsewhere) and run `invoke restore` again; "
                    "nothing was changed"
                ) from None
            raise LabError(
                f"cannot unpack the backup in {state} ({exc}): fix that and run `invoke "
                "restore` again; nothing was changed"
            ) from None
        yield manifest, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def validate(archive: Path, settings: Settings) -> dict[str, Any]:
    """The backup's manifest when the file is complete and intact; LabError otherwise."""
    with unpacked(archive, settings) as (manifest, _):
        return manifest


# -- restore -----------------------------------------------------------------------------


def _safety_path(settings: Settings) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return settings.state_dir / SAFETY_DIR / f"before-restore-{stamp}.tar.gz"


def _failure(exc: BaseException, archive: Path, undone: str) -> str:
    """One line: what happened, that `undone` (nothing was changed), and what to run."""
    again = f"run `invoke restore --yes {archive}` again"
    if isinstance(exc, StepFailed) and exc.disk_full:
        return (
            f"the disk holding the lab's Docker volumes is full: the backup's {exc.part.name} "
            f"did not fit beside the current data; {undone}: free space (e.g. `docker system "
            f"prune`), then {again}"
        )
    if isinstance(exc, StepFailed) and exc.result.code == REFUSED:
        return f"the backup's {exc.part.name} was refused ({exc}); {undone}: use another backup"
    if isinstance(exc, StepFailed):
        return f"{exc.action} of {exc.part.name} failed ({exc}); {undone}: fix that, then {again}"
    return f"{exc}; {undone}: fix that, then {again}"


def restore(settings: Settings, archive: Path, *, yes: bool) -> None:
    """Replace the lab's data with the backup's, then start the lab again."""
    archive = archive.expanduser().resolve()
    try:
        _restore(settings, archive, yes=yes)
    except KeyboardInterrupt:
        # Only before the lab is stopped: from then on the guard holds Ctrl-C back.
        raise LabError("interrupted before anything was changed") from None


def _restore(settings: Settings, archive: Path, *, yes: bool) -> None:
    with unpacked(archive, settings) as (manifest, parts_dir):
        docker.engine_version()
        question = (
            f"This replaces every run, artifact and notebook of the lab '{settings.project}' "
            f"with the backup of {manifest.get('created')}."
        )
        if not stack.confirm(question, yes):
            print("Nothing was changed.")
            return
        stack.preflight(settings)
        compose = LabCompose(settings)
        for service in {part.service for part in PARTS}:
            compose.container(service)  # exists, or one line saying `invoke up`
        guard = Guard()
        with guard.installed():
            _replace(compose, settings, archive, parts_dir, guard)
    _start_again(compose)
    print(f"Restored the backup of {manifest.get('created')}.")
    stack.print_ready(settings)


def _replace(
    compose: LabCompose, settings: Settings, archive: Path, parts_dir: Path, guard: Guard
) -> None:
    """Stop, safety backup, stage, swap, finish; the lab is left stopped on the new data.

    Any failure or interrupt before the swaps are all done puts the old data back,
    starts the lab on it, and raises one line that says so.
    """
    # Stopped, so nothing writes while the volumes are replaced; the containers stay.
    print("[1/4] Stopping the lab")
    compose.run("stop")
    safety = _safety_path(settings)
    again = f"`invoke restore --yes {archive}` restores it"
    changed = "nothing was changed"
    print(f"[2/4] Safety backup of the current data: {safety}")
    try:
        guard.check()
        safety.parent.mkdir(parents=True, exist_ok=True)
        _write(compose, settings, safety, running=False)
        guard.check()
    except (OSError, LabError, Interrupted) as exc:
        if guard.hit:
            what = f"interrupted: nothing was changed; {again}"
        elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            what = (
                f"the disk holding {safety.parent} is full: the safety backup could not be "
                f"written and nothing was changed; free space there, then {again}"
            )
        else:
            what = _failure(
                LabError(f"the safety backup could not be written ({exc})"), archive, changed
            )
        _restart_old(compose, what)
    print(f"  kept: {safety} (`invoke restore --yes {safety}` brings this data back)")
    staged: list[Part] = []
    swapped: list[Part] = []
    try:
        print("[3/4] Writing the backup's data beside the current data")
        for part in PARTS:
            staged.append(part)
            argv = _oneoff(compose, part.service, part.args("stage"))
            _run(argv, part, "stage", stdin=parts_dir / part.name, guard=guard)
            print(f"  {part.name}: written")
            guard.check()
        print("[4/4] Swapping it in")
        for part in PARTS:
            swapped.append(part)
            _run(_oneoff(compose, part.service, part.args("swap")), part, "swap", guard=guard)
        guard.check()
    except (StepFailed, LabError, Interrupted) as exc:
        if guard.hit or (isinstance(exc, StepFailed) and exc.interrupted):
            what = f"interrupted: the restore was undone, nothing was changed; {again}"
        else:
            what = _failure(exc, archive, f"the restore was undone, {changed}")
        _undo(compose, staged, what, safety)
        _restart_old(compose, what)
    # From here the backup's data is in place: the old data kept aside goes.
    for part in PARTS:
        try:
            _run(_oneoff(compose, part.service, part.args("finish")), part, "finish")
        except StepFailed as exc:
            print(f"warning: the old {part.name} kept aside could not be removed ({exc})")


def _undo(compose: LabCompose, parts: list[Part], what: str, safety: Path) -> None:
    for part in reversed(parts):
        try:
            _run(_oneoff(compose, part.service, part.args("undo")), part, "undo")
        except (StepFailed, LabError) as exc:
            raise LabError(
                f"{what}, and putting the old {part.name} back failed too ({exc}): the lab "
                f"is stopped; its data from before is in {safety}: run `invoke restore --yes "
                f"{safety}`"
            ) from None


def _restart_old(compose: LabCompose, what: str) -> NoReturn:
    """The lab started again on its data from before; raises `what` in one line."""
    try:
        startup.wait_ready(compose, startup.start(compose))
    except (LabError, KeyboardInterrupt) as exc:
        raise LabError(
            f"{what}; the lab did not start again ({exc or 'interrupted'}): `invoke up` starts it"
        ) from None
    raise LabError(f"{what}; the lab runs with its data from before")


def _start_again(compose: LabCompose) -> None:
    try:
        startup.wait_ready(compose, startup.start(compose))
    except (LabError, KeyboardInterrupt) as exc:
        compose.run("stop", check=False)
        raise LabError(
            f"the lab did not come back after the restore ({exc or 'interrupted'}): see "
            "`invoke logs`; the data is restored, `invoke up` starts it"
        ) from None
