"""Backing up and restoring the lab's data: the SQLite store, the artifacts, the workspace.

A backup is one tar.gz: `manifest.json` (format, time, checksums) and three parts, each
taken inside the running containers so the host needs no access to Docker's volumes.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import layout, stack, startup
from mlflow_lab.lab.compose import LabCompose

FORMAT = "mlflow-lab-backup"
VERSION = 1
MANIFEST = "manifest.json"
EXEC_TIMEOUT_S = 1800
# The read-only view of the artifact store inside the workspace: the artifacts part
# already holds it, and it cannot be written when the workspace is restored.
ARTIFACTS_VIEW = "mlflowserver-lab/mlartifacts"


@dataclass(frozen=True)
class Part:
    name: str  # member name in the backup file
    service: str  # the container that reads and writes it
    path_expr: str  # Python expression for its path inside that container
    kind: str  # "sqlite" (one database file) or "tree" (a folder, as a tar)


# The database comes first: artifacts are written before a run refers to them, so a
# store snapshot taken before the artifact snapshot never points at a missing file.
PARTS = (
    Part("mlflow.db", "mlflow", "os.environ['LAB_MLFLOW_DB']", "sqlite"),
    Part("artifacts.tar", "mlflow", "os.environ['LAB_MLFLOW_ARTIFACTS']", "tree"),
    Part("workspace.tar", "jupyter", repr(layout.WORKSPACE), "tree"),
)

# sqlite3's backup API copies the database inside one read transaction: a consistent
# snapshot while the server keeps writing (a file copy could catch a half-written WAL).
_DUMP_SQLITE = """
import os, sqlite3, sys, tempfile
source = sqlite3.connect({path})
with tempfile.TemporaryDirectory() as tmp:
    target = sqlite3.connect(os.path.join(tmp, "snapshot.db"))
    source.backup(target)
    target.close()
    with open(os.path.join(tmp, "snapshot.db"), "rb") as handle:
        while chunk := handle.read(1 << 20):
            sys.stdout.buffer.write(chunk)
"""

_DUMP_TREE = """
import os, sys, tarfile
root, skip = {path}, {skip!r}
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
    tar.add(root, arcname=".", filter=lambda m: None if skip and (
        m.name == "./" + skip or m.name.startswith("./" + skip + "/")) else m)
"""

# Runs as root in a one-off container on the stopped stack's volumes, reading the part
# from stdin. The old WAL and shared-memory files go: SQLite would replay them onto the
# restored database.
_LOAD_SQLITE = """
import os, shutil, sys
path = {path}
owner = os.stat(os.path.dirname(path))
for suffix in ("", "-wal", "-shm", "-journal"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
with open(path + ".restoring", "wb") as handle:
    shutil.copyfileobj(sys.stdin.buffer, handle)
    handle.flush()
    os.fsync(handle.fileno())
os.chown(path + ".restoring", owner.st_uid, owner.st_gid)
os.replace(path + ".restoring", path)
"""

_LOAD_TREE = """
import os, shutil, sys, tarfile
root, skip = {path}, {skip!r}
steps = skip.split("/") if skip else []
keep = {{os.path.join(root, *steps[:n]) for n in range(1, len(steps) + 1)}}
def clear(folder):
    for entry in os.scandir(folder):
        if entry.path in keep:
            if entry.is_dir(follow_symlinks=False) and entry.path != os.path.join(root, skip):
                clear(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)
clear(root)
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
    # Python builds without extraction filters (before 3.11.4) extract as "tar" does.
    tar.extractall(root, **({{"filter": "tar"}} if hasattr(tarfile, "tar_filter") else {{}}))
"""


def _skip(part: Part) -> str:
    return ARTIFACTS_VIEW if part.service == "jupyter" else ""


def dump_scripts() -> dict[str, str]:
    """The Python run inside the containers to read each part, by part name."""
    return {
        part.name: (_DUMP_SQLITE if part.kind == "sqlite" else _DUMP_TREE).format(
            path=part.path_expr, skip=_skip(part)
        )
        for part in PARTS
    }


def load_scripts() -> dict[str, str]:
    """The Python run in one-off containers to write each part back, by part name."""
    return {
        part.name: (_LOAD_SQLITE if part.kind == "sqlite" else _LOAD_TREE).format(
            path=part.path_expr, skip=_skip(part)
        )
        for part in PARTS
    }


def _compose_argv(compose: LabCompose, args: list[str]) -> list[str]:
    return compose.project.argv(*args)


def _stream(
    compose: LabCompose, args: list[str], *, stdin: Path | None = None, stdout: Path | None = None
) -> None:
    """Run a compose command with binary stdin/stdout files; LabError with its last line."""
    env = {**os.environ, **compose.project.env}
    with (
        open(stdin, "rb") if stdin else open(os.devnull, "rb") as source,
        open(stdout, "wb") if stdout else open(os.devnull, "wb") as target,
    ):
        try:
            result = subprocess.run(
                _compose_argv(compose, args),
                stdin=source,
                stdout=target,
                stderr=subprocess.PIPE,
                env=env,
                timeout=EXEC_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(
                f"`docker compose {args[0]}` took over {EXEC_TIMEOUT_S} s: check the engine"
            ) from None
    if result.returncode != 0:
        text = result.stderr.decode(errors="replace")
        if "no space left on device" in text.lower():
            raise LabError("the disk is full: free space and try again; nothing was changed")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raise LabError(
            f"`docker compose {args[0]}` failed: {lines[-1] if lines else result.returncode}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
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
        _write(compose, settings, output)
    except OSError as exc:
        raise LabError(
            f"cannot write the backup to {output} ({exc.strerror}): free space there or "
            "choose another --output; the lab was not changed"
        ) from None
    print(f"Backup written to {output} ({output.stat().st_size // 1024} KiB).")


def _write(compose: LabCompose, settings: Settings, output: Path) -> None:
    # The temporary folder sits next to the output, so the final rename cannot cross disks.
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".lab-backup-") as tmp:
        parts: dict[str, dict[str, object]] = {}
        scripts = dump_scripts()
        for part in PARTS:
            target = Path(tmp) / part.name
            _stream(
                compose,
                ["exec", "-T", part.service, "python3", "-c", scripts[part.name]],
                stdout=target,
            )
            parts[part.name] = {"size": target.stat().st_size, "sha256": _sha256(target)}
        _check_sqlite(Path(tmp) / "mlflow.db")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "project": settings.project,
            "parts": parts,
        }
        partial = Path(tmp) / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            for part in PARTS:
                tar.add(Path(tmp) / part.name, arcname=part.name)
        # Renamed into place only when complete: a failed backup never leaves a torn file.
        os.replace(partial, output)


def _unpack(archive: Path, into: Path) -> dict[str, object]:
    """Extract and check every part; raise ValueError saying what is wrong."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = tar.getnames()
            if MANIFEST not in names:
                raise ValueError("it has no manifest")
            wanted = {MANIFEST, *(part.name for part in PARTS)}
            for member in tar.getmembers():
                if member.name in wanted and member.isfile():
                    tar.extract(member, into, filter="data")
        manifest = json.loads((into / MANIFEST).read_text(encoding="utf-8"))
    except (tarfile.TarError, EOFError, OSError, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"it cannot be read ({exc or type(exc).__name__})") from None
    except json.JSONDecodeError:
        raise ValueError("its manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError("it is not an mlflow-lab backup")
    if manifest.get("version") != VERSION:
        raise ValueError(f"it has format version {manifest.get('version')}, not {VERSION}")
    for part in PARTS:
        expected = manifest.get("parts", {}).get(part.name, {})
        path = into / part.name
        if not path.is_file() or _sha256(path) != expected.get("sha256"):
            raise ValueError(f"its part {part.name} is missing or damaged")
        if part.kind == "tree":
            try:
                with tarfile.open(path, "r:") as inner:
                    inner.getmembers()
            except tarfile.TarError as exc:
                raise ValueError(f"its part {part.name} is not a tar ({exc})") from None
    _check_sqlite(into / "mlflow.db")
    return manifest


def validate(archive: Path) -> dict[str, object]:
    """The backup's manifest when the file is complete and intact; LabError otherwise."""
    if not archive.is_file():
        raise LabError(f"backup file {archive} does not exist: give the path of a backup")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return _unpack(archive, Path(tmp))
        except ValueError as exc:
            raise LabError(
                f"{archive} is not a usable lab backup: {exc}: nothing was changed; use a "
                "file written by `invoke backup`"
            ) from None


def restore(settings: Settings, archive: Path, *, yes: bool) -> None:
    """Replace the lab's data with the backup's, then start the lab again."""
    archive = archive.expanduser().resolve()
    manifest = validate(archive)
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
    scripts = load_scripts()  # before the stack stops: nothing can fail in between
    with tempfile.TemporaryDirectory() as tmp:
        _unpack(archive, Path(tmp))
        # Stopped, so nothing writes while the volumes are replaced; the containers stay.
        compose.run("stop")
        try:
            for part in PARTS:
                args = ["run", "--rm", "--no-deps", "-T", "--user", "root", "--entrypoint"]
                _stream(
                    compose,
                    [*args, "python3", part.service, "-c", scripts[part.name]],
                    stdin=Path(tmp) / part.name,
                )
        except LabError as exc:
            raise LabError(
                f"{exc}; the lab is stopped and only partly restored: fix that, then run "
                f"`invoke restore --yes {archive}` again"
            ) from None
    try:
        startup.wait_ready(compose, startup.start(compose))
    except LabError as exc:
        compose.run("stop", check=False)
        raise LabError(
            f"the lab did not come back after the restore ({exc}): see `invoke logs`; the "
            "data is restored, `invoke up` starts it"
        ) from None
    print(f"Restored the backup of {manifest.get('created')}.")
    stack.print_ready(settings)
