"""`invoke bundle` and `invoke load`: provision classroom machines from one file, offline.

A bundle is a plain (uncompressed) tar, so `tar tvf` lists it, holding:

- `images.tar.zst`: ONE `docker save` of both lab images (with `--classroom`, of the
  class's four too: one save stores the layers they share, the student image's 2 GB
  of jupyter layers among them, once), compressed with `zstd -T0 -3` (measured on 2
  cores: faster than `gzip -1` and a fifth smaller); `images.tar.gz` with `gzip -1`
  where zstd is not installed;
- `lab/`: the bundled lab as the Jupyter image carries it, readable without Docker;
- `course/course.bundle`: the course branch as a `git bundle` (objects and one ref; no
  config, no hooks: a git folder's own config can run commands on the host);
- `datasets/`: the datasets notebooks fetch at run time, as scikit-learn's fetchers left
  them in LAB_STATE_DIR/datasets (mlflow_lab/lab/datasets.py), when any was fetched;
- `manifest.json`, last: the mode (`lab`, or `classroom` with the class images),
  versions, image IDs and build inputs, the course commit, and the size and sha256 of
  every other member.

The manifest comes last because the images member's size and checksum are known only
once it is written. `load` reads the file once: it checks every checksum while it
copies the members it uses into a staging folder in the state dir, and uses only those
copies, so a file changed after the check cannot slip anything in. A bundle is code
(images that run, a repository): it must come from someone you trust; the checks keep
it from doing anything on the host beyond loading the lab's own images and course repo.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.classroom import bundled as class_bundled
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.core import docker, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import course, datasets, images
from mlflow_lab.lab.compose import JUPYTER, SERVICES, LabCompose

FORMAT = "mlflow-lab-bundle"
FORMAT_VERSION = 3
# Version 2 is version 3 without a mode: the lab's images only.
READABLE_VERSIONS = (2, FORMAT_VERSION)
LAB, CLASSROOM = "lab", "classroom"
# The images each mode carries, by manifest key, in `docker save` order.
MODE_IMAGES: dict[str, tuple[str, ...]] = {
    LAB: SERVICES,
    CLASSROOM: (*SERVICES, *class_bundled.KEYS),
}
MODE_WORDS = {LAB: "the lab's images", CLASSROOM: "the lab's and the class's images"}
MANIFEST_NAME = "manifest.json"
MANIFEST_MAX_BYTES = 16 << 20
LAB_DIR = PROJECT_ROOT / "lab"
LAB_PREFIX = "lab"
COURSE_PREFIX = "course"
COURSE_MEMBER = f"{COURSE_PREFIX}/course.bundle"
CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
# `docker load` has read its whole input by then; what is left is writing the tags.
DOCKER_FINISH_TIMEOUT_S = 600
GIT_TIMEOUT_S = 10
DAMAGED_FIX = "copy it again from the original"


@dataclass(frozen=True)
class Codec:
    name: str
    member: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]


# In order of preference when bundling; `load` uses the one the manifest names.
CODECS = (
    Codec("zstd", "images.tar.zst", ("zstd", "-T0", "-3", "-q", "-c"), ("zstd", "-d", "-q", "-c")),
    Codec("gzip", "images.tar.gz", ("gzip", "-1", "-c"), ("gzip", "-d", "-c")),
)


# What `load` uses, by member name: the staged copy's file name.
STAGED = {**{c.member: c.member for c in CODECS}, COURSE_MEMBER: "course.bundle"}


@dataclass(frozen=True)
class Member:
    size: int | None  # None: a folder
    sha256: str | None


@dataclass(frozen=True)
class Image:
    service: str  # the manifest key: a lab service, or class-hub, ... (MODE_IMAGES)
    name: str
    id: str
    inputs: str


@dataclass(frozen=True)
class Course:
    url: str
    branch: str
    commit: str | None  # None: the bundle holds no course repo
    shallow: tuple[str, ...]  # the cache's shallow boundary (it is fetched with --depth 1)
    note: str | None  # why the copy is missing or not the newest (the fetch warning)


@dataclass(frozen=True)
class Manifest:
    created: str
    tool_version: str
    tool_commit: str | None
    mlflow_version: str
    compression: str
    images_member: str
    images_size: int  # the uncompressed `docker save` stream
    images: tuple[Image, ...]
    course: Course
    members: dict[str, Member]
    mode: str = LAB  # or CLASSROOM: the class's images too

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "created": self.created,
            "tool": {
                "name": "mlflow-lab",
                "version": self.tool_version,
                "commit": self.tool_commit,
            },
            "mlflow_version": self.mlflow_version,
            "images": {
                "member": self.images_member,
                "compression": self.compression,
                "uncompressed_size": self.images_size,
                "services": {
                    i.service: {"name": i.name, "id": i.id, "inputs": i.inputs} for i in self.images
                },
            },
            "course": {
                "url": self.course.url,
                "branch": self.course.branch,
                "commit": self.course.commit,
                "shallow": list(self.course.shallow),
                "note": self.course.note,
            },
            "members": {
                name: {"type": "dir"}
                if m.size is None
                else {"type": "file", "size": m.size, "sha256": m.sha256}
                for name, m in sorted(self.members.items())
            },
        }

    def codec(self) -> Codec:
        return next(c for c in CODECS if c.name == self.compression)

    def image(self, key: str) -> Image:
        return next(i for i in self.images if i.service == key)


class ManifestError(Exception):
    """What is wrong with a manifest; the caller names the file and the fix."""


def _get(document: Any, key: str, kind: type, optional: bool = False) -> Any:
    value = document.get(key) if isinstance(document, dict) else None
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ManifestError(f"manifest.json has no valid {key!r}")
    return value


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def parse_manifest(document: Any) -> Manifest:
    """The manifest, checked for shape and consistency; ManifestError says what is wrong."""
    if _get(document, "format", str) != FORMAT:
        raise ManifestError(f"its manifest's format is {document.get('format')!r}, not {FORMAT}")
    version = _get(document, "format_version", int)
    if version not in READABLE_VERSIONS:
        raise ManifestError(
            f"it is bundle format {version}, this mlflow-lab reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}"
        )
    mode = _get(document, "mode", str) if version >= 3 else LAB
    if mode not in MODE_IMAGES:
        raise ManifestError(f"manifest.json names an unknown mode {mode!r}")
    keys = MODE_IMAGES[mode]
    tool = _get(document, "tool", dict)
    images_doc = _get(document, "images", dict)
    compression = _get(images_doc, "compression", str)
    if compression not in {c.name for c in CODECS}:
        raise ManifestError(f"manifest.json names an unknown compression {compression!r}")
    services = _get(images_doc, "services", dict)
    if set(services) != set(keys):
        raise ManifestError(
            f"manifest.json lists images {sorted(services)}, not the {mode} mode's {list(keys)}"
        )
    bundled = tuple(
        Image(
            service,
            _get(services[service], "name", str),
            _get(services[service], "id", str),
            _get(services[service], "inputs", str),
        )
        for service in keys
    )
    course_doc = _get(document, "course", dict)
    bundled_course = Course(
        _get(course_doc, "url", str),
        _get(course_doc, "branch", str),
        _get(course_doc, "commit", str, optional=True),
        tuple(_commits(_get(course_doc, "shallow", list))),
        _get(course_doc, "note", str, optional=True),
    )
    members: dict[str, Member] = {}
    for name, entry in _get(document, "members", dict).items():
        if not _safe_name(name):
            raise ManifestError(f"manifest.json lists an unsafe member name {name!r}")
        if _get(entry, "type", str) == "dir":
            members[name] = Member(None, None)
        else:
            members[name] = Member(_get(entry, "size", int), _get(entry, "sha256", str))
    manifest = Manifest(
        mode=mode,
        created=_get(document, "created", str),
        tool_version=_get(tool, "version", str),
        tool_commit=_get(tool, "commit", str, optional=True),
        mlflow_version=_get(document, "mlflow_version", str),
        compression=compression,
        images_member=_get(images_doc, "member", str),
        images_size=_get(images_doc, "uncompressed_size", int),
        images=bundled,
        course=bundled_course,
        members=members,
    )
    _check_layout(manifest)
    return manifest


def _check_layout(manifest: Manifest) -> None:
    """Every member belongs where `load` expects it; nothing else is in the bundle."""
    if manifest.members.get(manifest.images_member, Member(None, None)).size is None:
        raise ManifestError(f"manifest.json lists no images member {manifest.images_member!r}")
    commit = manifest.course.commit
    if commit is not None:
        _commits([commit])
    has_course = manifest.members.get(COURSE_MEMBER, Member(None, None)).size is not None
    if has_course != (commit is not None):
        raise ManifestError("manifest.json gives a course commit without its git bundle, or back")
    # Folders (lab/) hold anything below them; files are named one by one. A new kind of
    # member is one more entry here and in `write_bundle`.
    folders, files = [LAB_PREFIX, datasets.BUNDLE_PREFIX], [manifest.images_member, COURSE_MEMBER]
    for name, entry in manifest.members.items():
        in_folder = any(name == top or name.startswith(f"{top}/") for top in folders)
        if not in_folder and not (name in files and entry.size is not None):
            raise ManifestError(f"manifest.json lists an unexpected member {name!r}")


def _commits(values: list[Any]) -> list[str]:
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value):
            raise ManifestError(f"manifest.json names an odd commit {value!r}")
    return values


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Bytes done in one step: a live line on a terminal, else a line every LOG_EVERY bytes."""

    LOG_EVERY = 256 << 20
    REFRESH_S = 0.5

    def __init__(self, what: str, total: int | None = None, stream: IO[str] | None = None):
        self.what, self.total = what, total
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.done_bytes = 0
        self.started = self.shown_at = time.monotonic()
        self.next_log = self.LOG_EVERY

    def _line(self) -> str:
        text = f"  {self.what}: {_human(self.done_bytes)}"
        if self.total:
            text += f" of {_human(self.total)} ({100 * self.done_bytes // self.total}%)"
        return text

    def add(self, count: int) -> None:
        self.done_bytes += count
        now = time.monotonic()
        if self.live and now - self.shown_at >= self.REFRESH_S:
            self.shown_at = now
            print(f"\r{self._line()}", end="", file=self.stream, flush=True)
        elif not self.live and self.done_bytes >= self.next_log:
            self.next_log += self.LOG_EVERY
            print(self._line(), file=self.stream, flush=True)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = f", {_human(self.done_bytes / elapsed)}/s" if elapsed >= 1 else ""
        end = f"{self._line()} in {elapsed:.0f} s{rate}"
        print(f"\r{end}" if self.live else end, file=self.stream, flush=True)


def _tar_info(
    name: str, size: int, mode: int, mtime: float, is_dir: bool = False
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(mtime)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    return info


class Writer:
    """Writes the bundle's tar member by member, noting each one's size and sha256."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.members: dict[str, Member] = {}

    def _pad(self, size: int) -> None:
        self.out.write(bytes(-size % BLOCK))

    def add_stream(self, name: str, chunks: Iterable[bytes], progress: Progress) -> None:
        """A member of unknown size: its header is written last, over a placeholder."""
        start = self.out.tell()
        self.out.write(bytes(BLOCK))
        digest, size = hashlib.sha256(), 0
        for chunk in chunks:
            self.out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            progress.add(len(chunk))
        self._pad(size)
        end = self.out.tell()
        # GNU headers hold any size in one block; the name is short by construction.
        header = _tar_info(name, size, 0o644, time.time()).tobuf(tarfile.GNU_FORMAT)
        if len(header) != BLOCK:
            raise ValueError(f"member name {name!r} too long for a one-block header")
        self.out.seek(start)
        self.out.write(header)
        self.out.seek(end)
        self.members[name] = Member(size, digest.hexdigest())

    def add_bytes(self, name: str, data: bytes) -> None:
        self.out.write(_tar_info(name, len(data), 0o644, time.time()).tobuf(tarfile.GNU_FORMAT))
        self.out.write(data)
        self._pad(len(data))

    def add_tree(self, prefix: str, root: Path) -> None:
        """A folder's files and subfolders under `prefix`; nothing else may be in it."""
        for path in [root, *sorted(root.rglob("*"))]:
            rel = path.relative_to(root).as_posix()
            name = prefix if rel == "." else f"{prefix}/{rel}"
            stat = path.lstat()
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise LabError(f"{path} is not a plain file or folder: a bundle holds only those")
            if path.is_dir():
                info = _tar_info(name, 0, stat.st_mode & 0o777, stat.st_mtime, is_dir=True)
                self.out.write(info.tobuf(tarfile.GNU_FORMAT))
                self.members[name] = Member(None, None)
                continue
            self.add_file(name, path)

    def add_file(self, name: str, path: Path) -> None:
        """One plain file as member `name`."""
        stat = path.lstat()
        info = _tar_info(name, stat.st_size, stat.st_mode & 0o777, stat.st_mtime)
        self.out.write(info.tobuf(tarfile.GNU_FORMAT))
        digest, left = hashlib.sha256(), stat.st_size
        with path.open("rb") as source:
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise LabError(f"{path} shrank while it was bundled: run the command again")
                self.out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        self._pad(stat.st_size)
        self.members[name] = Member(stat.st_size, digest.hexdigest())

    def finish(self, manifest: Manifest) -> None:
        self.add_bytes(MANIFEST_NAME, json.dumps(manifest.document(), indent=2).encode() + b"\n")
        # Two zero blocks end a tar; tar tools expect whole records.
        self.out.write(bytes(2 * BLOCK))
        self.out.write(bytes(-self.out.tell() % tarfile.RECORDSIZE))


def damaged(path: Path, detail: str) -> LabError:
    return LabError(f"{path} is damaged ({detail}): {DAMAGED_FIX}")


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[bytes]:
    source = tar.extractfile(info)
    if source is None:
        raise tarfile.ReadError(f"member {info.name} has no data")
    while chunk := source.read(CHUNK):
        yield chunk


class _Hashing:
    """A file read through: the sha256 of every byte tarfile takes from it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data

    def tell(self) -> int:
        return self.raw.tell()


def verify(
    path: Path,
    progress: Progress | None = None,
    *,
    stage: Path | None = None,
    sha256: str | None = None,
) -> Manifest:
    """Read the whole bundle once; its manifest when every member matches it, else LabError.

    With `stage`, the members `load` uses (the images, the course bundle) are copied
    there as they are hashed: what is used afterwards is exactly what was checked.
    With `sha256`, the whole file must have that digest as well.
    """
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise LabError(
            f"{path}: no such file: give the path of a bundle made with `invoke bundle`"
        ) from None
    except OSError as exc:
        raise LabError(f"cannot read {path} ({exc.strerror}): check its permissions") from None
    found: dict[str, Member] = {}
    document: bytes | None = None
    hashing = _Hashing(raw)
    try:
        with raw, tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                if not _safe_name(info.name):
                    raise damaged(path, f"unsafe member name {info.name!r}")
                if info.name in found or (info.name == MANIFEST_NAME and document is not None):
                    raise damaged(path, f"{info.name} appears twice")
                if info.name == MANIFEST_NAME and info.isfile():
                    if info.size > MANIFEST_MAX_BYTES:
                        raise damaged(path, "manifest.json is implausibly large")
                    document = b"".join(_read_member(tar, info))
                elif info.isdir():
                    found[info.name] = Member(None, None)
                elif info.isfile():
                    staged = _staged_path(stage, info.name) if stage else None
                    found[info.name] = _hash_member(tar, info, staged, raw, progress)
                else:
                    raise damaged(path, f"{info.name} is a link or device: a bundle holds none")
            # tarfile stops at the end-of-archive blocks: the rest counts for the digest.
            while hashing.read(CHUNK):
                pass
    except StageError as exc:
        raise LabError(f"cannot stage {path} in {stage} ({exc}): free space there") from None
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise damaged(path, f"cannot be read to the end: {exc}") from None
    finally:
        if progress:  # ends a live progress line before any error is printed
            progress.finish()
    if sha256 is not None and hashing.digest.hexdigest() != sha256.strip().lower():
        raise LabError(
            f"{path} does not match the sha256 you gave (its sha256 is "
            f"{hashing.digest.hexdigest()}): {DAMAGED_FIX}"
        )
    if document is None:
        raise damaged(path, "no manifest.json: it is cut short or not a bundle")
    try:
        manifest = parse_manifest(json.loads(document))
    except (ValueError, ManifestError) as exc:
        raise LabError(
            f"{path} is not a bundle this mlflow-lab can load ({exc}): {DAMAGED_FIX}, or make "
            "a new one with `invoke bundle`"
        ) from None
    missing = sorted(set(manifest.members) - set(found))
    if missing:
        raise damaged(path, f"{len(missing)} member(s) missing, e.g. {missing[0]}")
    extra = sorted(set(found) - set(manifest.members))
    if extra:
        raise damaged(path, f"member {extra[0]} is not in its manifest")
    wrong = sorted(n for n, m in manifest.members.items() if found[n] != m)
    if wrong:
        raise damaged(path, f"checksum mismatch in {wrong[0]}")
    return manifest


def _staged_path(stage: Path, name: str) -> Path | None:
    """Where `load` keeps its checked copy of member `name`; None for what it does not use."""
    if name in STAGED:
        return stage / STAGED[name]
    if name.startswith(f"{datasets.BUNDLE_PREFIX}/"):
        staged = stage / name  # a safe name (checked first): it stays below the stage
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged
    return None


class StageError(Exception):
    """Writing a staged copy failed (the disk of the state dir, not the bundle)."""


def _hash_member(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    staged: Path | None,
    raw: BinaryIO,
    progress: Progress | None,
) -> Member:
    digest, size = hashlib.sha256(), 0
    with staged.open("xb") if staged else open(os.devnull, "wb") as sink:
        for chunk in _read_member(tar, info):
            digest.update(chunk)
            size += len(chunk)
            try:
                sink.write(chunk)
            except OSError as exc:
                raise StageError(exc.strerror or exc) from None
            if progress:  # by file position, so headers count too
                progress.add(raw.tell() - progress.done_bytes)
    return Member(size, digest.hexdigest())


# ---------------------------------------------------------------- bundle


def tool_version() -> tuple[str, str | None]:
    """This checkout's version (pyproject.toml) and commit, when it is a git checkout."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    commit = None
    if (PROJECT_ROOT / ".git").exists() and shutil.which("git"):
        result = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        commit = result.stdout.strip() if result.returncode == 0 else None
    return str(project["project"]["version"]), commit


def _last_line(text: bytes | str, fallback: str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else fallback


def _saved_images(names: list[str], codec: Codec, raw_bytes: list[int]) -> Iterator[bytes]:
    """`docker save NAMES | compress`, as chunks; the uncompressed size lands in raw_bytes."""
    with tempfile.TemporaryFile() as save_err, tempfile.TemporaryFile() as comp_err:
        save = docker.popen(["save", *names], stdout=subprocess.PIPE, stderr=save_err)
        comp = subprocess.Popen(
            codec.compress, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=comp_err
        )
        assert save.stdout and comp.stdin and comp.stdout

        def pump() -> None:
            # Through Python rather than a shell pipe, to count the uncompressed bytes.
            assert save.stdout and comp.stdin
            try:
                while chunk := save.stdout.read(CHUNK):
                    comp.stdin.write(chunk)
                    raw_bytes[0] += len(chunk)
            except BrokenPipeError:
                save.kill()
            finally:
                comp.stdin.close()

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        complete = False
        try:
            while chunk := comp.stdout.read(CHUNK):
                yield chunk
            complete = True
        finally:
            if not complete:  # the bundle failed or was interrupted: stop both now
                for proc in (save, comp):
                    proc.kill()
            pumper.join()
            save.wait()
            comp.wait()
        if save.returncode != 0:
            save_err.seek(0)
            raise LabError(
                f"`docker save` failed ({_last_line(save_err.read(), 'no output')}): check the "
                "Docker engine and the disk, then run `invoke bundle` again"
            )
        if comp.returncode != 0:
            comp_err.seek(0)
            raise LabError(f"{codec.name} failed ({_last_line(comp_err.read(), 'no output')})")


def _bundled_images(settings: Settings, mode: str) -> tuple[Image, ...]:
    """The images of `mode`, each built first when it is missing or out of date."""
    compose = LabCompose(settings)
    stale = images.stale_images(compose)
    if stale:
        print(f"  the {' and '.join(stale)} image is missing or out of date: building it")
        images.build(settings, stale)
        if images.stale_images(compose):
            raise LabError("the images still do not match this checkout after the build")
    wanted = [(service, compose.image(service)) for service in SERVICES]
    if mode == CLASSROOM:
        # After the lab's: the student image's label follows the jupyter image's ID.
        wanted += class_bundled.ensure_built(settings)
    found = []
    for key, name in wanted:
        image_id, inputs = docker.image_id(name), images.image_label(name)
        if image_id is None or inputs is None:
            raise LabError(f"the image {name} vanished during the bundle: run the command again")
        found.append(Image(key, name, image_id, inputs))
        print(f"  {name}: {image_id[:19]} (inputs {found[-1].inputs})")
    return tuple(found)


def _git_bundle(cache: Path, branch: str, into: Path) -> tuple[Path, tuple[str, ...]]:
    """The branch as a git bundle file in `into`, and the cache's shallow boundary."""
    target = into / "course.bundle"
    result = course._git(["bundle", "create", str(target), f"refs/heads/{branch}"], cwd=cache)
    if result.returncode != 0:
        raise LabError(
            f"`git bundle create` in {cache} failed ({course._reason(result)}): delete that "
            "folder (it is fetched again) and run `invoke bundle` again"
        )
    shallow_file = cache / "shallow"
    shallow = shallow_file.read_text(encoding="utf-8").split() if shallow_file.is_file() else []
    return target, tuple(shallow)


def _course_to_bundle(settings: Settings, into: Path) -> tuple[Course, Path | None]:
    fetched = course.fetch_course_repo(settings)
    if fetched.warning:
        print(f"warning: {fetched.warning}")
    commit = course.branch_commit(fetched.cache, settings.repo_branch) if fetched.cache else None
    if commit is None or fetched.cache is None:
        print(
            f"warning: the bundle holds no course repo ({settings.repo_url} was never fetched "
            "here): machines loading it get the bundled lab only until `invoke clone` runs online"
        )
        return Course(settings.repo_url, settings.repo_branch, None, (), fetched.warning), None
    print(f"  {settings.repo_url} (branch {settings.repo_branch}) at {commit[:12]}")
    bundle_file, shallow = _git_bundle(fetched.cache, settings.repo_branch, into)
    return Course(
        settings.repo_url, settings.repo_branch, commit, shallow, fetched.warning
    ), bundle_file


def write_bundle(
    out: BinaryIO,
    codec: Codec,
    image_chunks: Iterable[bytes],
    raw_bytes: list[int],
    bundled: tuple[Image, ...],
    course_entry: Course,
    course_bundle: Path | None,
    lab_dir: Path = LAB_DIR,
    datasets_dir: Path | None = None,
    mode: str = LAB,
) -> Manifest:
    """Every member, then the manifest; raw_bytes[0] is the uncompressed images' size."""
    writer = Writer(out)
    progress = Progress("written")
    writer.add_stream(codec.member, image_chunks, progress)
    progress.finish()
    print(f"  {_human(raw_bytes[0])} of images compressed to {_human(progress.done_bytes)}")
    print("[4/4] Lab material and manifest")
    writer.add_tree(LAB_PREFIX, lab_dir)
    if course_bundle is not None:
        writer.add_file(COURSE_MEMBER, course_bundle)
    if datasets_dir is not None:
        writer.add_tree(datasets.BUNDLE_PREFIX, datasets_dir)
    version, commit = tool_version()
    manifest = Manifest(
        mode=mode,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tool_version=version,
        tool_commit=commit,
        mlflow_version=versions.mlflow_version(),
        compression=codec.name,
        images_member=codec.member,
        images_size=raw_bytes[0],
        images=bundled,
        course=course_entry,
        members=writer.members,
    )
    writer.finish(manifest)
    return manifest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def create(settings: Settings, output: Path, *, classroom: bool = False) -> None:
    """Write the bundle to `output` (replaced only once the new one is complete); with
    `classroom`, the class's images too."""
    mode = CLASSROOM if classroom else LAB
    output = output.expanduser().absolute()
    if not output.parent.is_dir():
        raise LabError(f"{output.parent}: no such folder: create it or choose another --output")
    if output.is_dir():
        raise LabError(f"{output} is a folder: give a file name, e.g. {output}/mlflow-lab.bundle")
    codec = next((c for c in CODECS if shutil.which(c.compress[0])), None)
    if codec is None:
        raise LabError("neither zstd nor gzip is installed: install zstd (`apt-get install zstd`)")
    docker.engine_version()
    began = time.monotonic()
    print(f"[1/4] Images: {MODE_WORDS[mode]}")
    bundled = _bundled_images(settings, mode)
    for line in datasets.fetch(settings, bundled[SERVICES.index(JUPYTER)].name):
        print(f"  {line}" if not line.startswith("warning:") else line)
    datasets_dir = datasets.bundle_dir(settings)
    print(f"  datasets: {datasets.describe(settings)}")
    partial = output.with_name(output.name + ".partial")
    raw_bytes = [0]
    try:
        # The git bundle is written next to the output: the same disk the bundle needs.
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".lab-bundle-") as tmp:
            print("[2/4] Course repo")
            course_entry, course_bundle = _course_to_bundle(settings, Path(tmp))
            print(f"[3/4] Saving the images ({codec.name})")
            with partial.open("wb") as out:
                write_bundle(
                    out,
                    codec,
                    _saved_images([i.name for i in bundled], codec, raw_bytes),
                    raw_bytes,
                    bundled,
                    course_entry,
                    course_bundle,
                    datasets_dir=datasets_dir,
                    mode=mode,
                )
        partial.replace(output)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LabError(
                f"the disk holding {output.parent} is full: free space or write the bundle "
                "elsewhere with --output"
            ) from None
        raise LabError(f"cannot write {output} ({exc.strerror}): choose another --output") from None
    finally:
        partial.unlink(missing_ok=True)
    size = output.stat().st_size
    then = "`invoke up`" + (" or `invoke classroom.up --no-build`" if classroom else "")
    print(
        f"Wrote {output} ({MODE_WORDS[mode]}): {_human(size)} ({size} bytes) in "
        f"{time.monotonic() - began:.0f} s, sha256 {file_sha256(output)}. On each machine: "
        f"`invoke load {output.name}` (add `--sha256 HEX` to check the copy), then {then}."
    )


# ---------------------------------------------------------------- load


def _images_present(manifest: Manifest) -> bool:
    return all(docker.image_id(i.name) == i.id for i in manifest.images)


def _expected(image: Image, manifest: Manifest, settings: Settings) -> tuple[str, str, str]:
    """The name and inputs label this checkout and its settings want for a bundled image,
    and the command that would rebuild it otherwise."""
    if image.service in SERVICES:
        name = LabCompose(settings).image(image.service)
        return name, images.inputs_digest(image.service), "invoke up"
    room = class_settings.load(lab=settings)
    name = room.image(class_bundled.image_of(image.service))
    inputs = class_bundled.expected_inputs(image.service, manifest.image(JUPYTER).id)
    return name, inputs, "invoke classroom.up"


def check_fits(manifest: Manifest, settings: Settings, path: Path) -> None:
    """Whether this checkout and its settings are the ones the bundle was made for."""
    made_by = f"mlflow-lab {manifest.tool_version}" + (
        f" at commit {manifest.tool_commit[:12]}" if manifest.tool_commit else ""
    )
    for image in manifest.images:
        wanted, inputs, user = _expected(image, manifest, settings)
        if image.inputs != inputs:
            raise LabError(
                f"{path} was made by another version of mlflow-lab ({made_by}): its "
                f"{image.service} image would be rebuilt by `{user}`; load it with that "
                "version's checkout"
            )
        if image.name.rsplit(":", 1)[0] != wanted.rsplit(":", 1)[0]:
            raise _foreign(path, manifest, image.name)
        if image.name != wanted:
            raise LabError(
                f"{path} holds {image.name}, but LAB_IMAGE_TAG here asks for {wanted}: set "
                f"LAB_IMAGE_TAG={image.name.rsplit(':', 1)[1]} (in .env or the environment)"
            )
    bundled = manifest.course
    if bundled.commit is not None and (
        bundled.url != settings.repo_url or bundled.branch != settings.repo_branch
    ):
        raise LabError(
            f"{path} holds the course repo {bundled.url} (branch {bundled.branch}), but "
            f"LAB_REPO_URL/LAB_REPO_BRANCH here say {settings.repo_url} ({settings.repo_branch}):"
            " set them as on the machine that made the bundle"
        )
    if shutil.which(manifest.codec().decompress[0]) is None:
        raise LabError(
            f"{path} is compressed with {manifest.compression}, which is not installed here: "
            f"install it (`sudo apt-get install {manifest.compression}`) and load again"
        )
    state = settings.course_cache_dir
    existing = next(p for p in (state, *state.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise LabError(
            f"{existing} is not writable: make LAB_STATE_DIR writable or point it elsewhere"
        )
    if not _images_present(manifest):
        root, free = docker.free_space()
        if free < manifest.images_size:
            raise LabError(
                f"the images need up to {_human(manifest.images_size)} on {root}, which has "
                f"{_human(free)} free: free space (e.g. `docker system prune`) and load again"
            )


IMAGE_INDEX_MAX_BYTES = 16 << 20


def image_tags(staged: Path, codec: Codec) -> tuple[set[str], set[str]]:
    """The tags and image (config) IDs a `docker save` stream would give `docker load`,
    read from its manifest.json and repositories before the engine sees any of it."""
    tags: set[str] = set()
    ids: set[str] = set()
    seen_manifest = False
    with staged.open("rb") as source:
        unpack = subprocess.Popen(
            codec.decompress, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert unpack.stdout is not None
        try:
            with tarfile.open(fileobj=unpack.stdout, mode="r|") as tar:
                for info in tar:
                    if info.name not in ("manifest.json", "repositories"):
                        continue
                    if not info.isfile() or info.size > IMAGE_INDEX_MAX_BYTES:
                        raise ValueError(f"its {info.name} is odd")
                    document = json.loads(b"".join(_read_member(tar, info)))
                    if info.name == "manifest.json":
                        seen_manifest = True
                        for entry in document:
                            tags.update(entry.get("RepoTags") or [])
                            config = str(entry["Config"]).removesuffix(".json")
                            ids.add("sha256:" + config.rsplit("/", 1)[-1])
                    else:
                        for repo, by_tag in document.items():
                            tags.update(f"{repo}:{tag}" for tag in by_tag)
        except (tarfile.TarError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"its images cannot be read ({exc})") from None
        finally:
            unpack.kill()
            unpack.wait()
    if not seen_manifest:
        raise ValueError("its images have no manifest.json")
    return tags, ids


def _foreign(path: Path, manifest: Manifest, image: str) -> LabError:
    owners = "the lab's" if manifest.mode == LAB else "the lab's or the class's"
    return LabError(
        f"{path} carries images that are not {owners} ({image}): it was not made by "
        "`invoke bundle`; nothing was loaded, use a bundle from someone you trust"
    )


def check_images(staged: Path, manifest: Manifest, path: Path) -> None:
    """Only the images of the bundle's mode (the lab's; with --classroom the class's too),
    with the IDs the manifest names: anything else in the stream would be tagged on this
    machine by `docker load`."""
    try:
        tags, ids = image_tags(staged, manifest.codec())
    except ValueError as exc:
        raise damaged(path, str(exc)) from None
    # The manifest's names were checked against this machine's (check_fits) first.
    wanted_tags = {i.name for i in manifest.images}
    foreign = sorted(tags - wanted_tags) or sorted(ids - {i.id for i in manifest.images})
    if foreign:
        raise _foreign(path, manifest, foreign[0])
    if ids != {i.id for i in manifest.images} or tags != wanted_tags:
        raise damaged(path, "its images are not the ones its manifest names")


def _docker_load(staged: Path, manifest: Manifest) -> None:
    codec = manifest.codec()
    progress = Progress("loaded", staged.stat().st_size)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        unpack = subprocess.Popen(
            codec.decompress, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
        load = docker.popen(["load"], stdin=unpack.stdout, stdout=out, stderr=err)
        assert unpack.stdin and unpack.stdout
        unpack.stdout.close()  # docker load holds the read end now
        try:
            with staged.open("rb") as source:
                while chunk := source.read(CHUNK):
                    unpack.stdin.write(chunk)
                    progress.add(len(chunk))
            unpack.stdin.close()
            unpack.wait(timeout=DOCKER_FINISH_TIMEOUT_S)
            load.wait(timeout=DOCKER_FINISH_TIMEOUT_S)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            pass  # the exit codes and stderr below tell what went wrong
        finally:
            for proc in (unpack, load):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        progress.finish()
        if unpack.returncode != 0 or load.returncode != 0:
            err.seek(0)
            reason = _last_line(err.read(), "no output")
            if docker.says_disk_full(reason):
                raise LabError(
                    "the disk is full: free space (e.g. `docker system prune`) and run "
                    "`invoke load` again"
                )
            raise LabError(f"`docker load` failed ({reason}): check the Docker engine, load again")
        out.seek(0)
        for line in out.read().decode("utf-8", "replace").splitlines():
            print(f"  {line.strip()}")


def _git_checked(args: list[str], cwd: Path, what: str, path: Path) -> str:
    # The repository is ours (written here, no hooks, our config); nothing in the bundle
    # is read as configuration.
    result = course._git(["-c", "core.hooksPath=/dev/null", *args], cwd=cwd)
    if result.returncode != 0:
        raise damaged(path, f"its course repo: {what} failed: {course._reason(result)}")
    return result.stdout


def make_cache(staged_bundle: Path, manifest: Manifest, settings: Settings, into: Path) -> None:
    """A bare course cache in `into` made from the git bundle: `git init` with a config
    this tool writes (origin is LAB_REPO_URL), the bundle's objects, the one branch."""
    bundled, path = manifest.course, staged_bundle
    branch = settings.repo_branch
    # An empty template: no sample hooks or other files from the system's templates.
    _git_checked(["init", "-q", "--bare", "--template=", str(into)], into.parent, "init", path)
    _git_checked(["config", "remote.origin.url", settings.repo_url], into, "config", path)
    _git_checked(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], into, "symbolic-ref", path)
    _git_checked(["bundle", "verify", "-q", str(staged_bundle)], into, "bundle verify", path)
    # unbundle, not fetch: the cache is shallow (fetched with --depth 1), and fetch would
    # refuse history that stops there; the boundary comes from the checked manifest.
    heads = _git_checked(["bundle", "unbundle", str(staged_bundle)], into, "unbundle", path)
    ref = f"refs/heads/{branch}"
    if f"{bundled.commit} {ref}" not in heads.splitlines():
        raise damaged(path, f"its course repo has no {ref} at {bundled.commit}")
    if bundled.shallow:
        (into / "shallow").write_text("".join(f"{c}\n" for c in bundled.shallow), "utf-8")
    _git_checked(["update-ref", ref, str(bundled.commit)], into, "update-ref", path)
    _git_checked(["fsck", "--connectivity-only", "--no-progress"], into, "fsck", path)


def _place_course(
    staged_bundle: Path, manifest: Manifest, settings: Settings, *, lab: bool = True
) -> None:
    """A cache made from the bundle replaces this machine's, whole. The lab's (`lab`) gets
    a note that the first `up` is not to fetch it; the class's cache is fetched on every
    `classroom.up` and falls back to this copy offline."""
    target = course.cache_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        make_cache(staged_bundle, manifest, settings, partial)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    commit = str(manifest.course.commit)[:12]
    if not lab:
        print(f"  {target} at {commit} (the class's copy, used while offline)")
        return
    course.bundle_marker(target).write_text(f"{manifest.course.commit}\n", encoding="utf-8")
    print(f"  {target} at {commit} (the first `invoke up` will not fetch it)")


def _staging(settings: Settings) -> Path:
    state = settings.state_dir
    try:
        state.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=state, prefix=".load-"))
    except OSError as exc:
        raise LabError(
            f"cannot write in {state} ({exc.strerror}): make LAB_STATE_DIR writable"
        ) from None


def load(settings: Settings, path: Path, sha256: str | None = None) -> None:
    """Check the whole bundle, then load its images and place its course repo."""
    path = path.expanduser()
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
        raise LabError(f"--sha256 {sha256!r} is not a sha256: give the 64 hex digits")
    size = path.stat().st_size if path.is_file() else None
    print(f"[1/3] Checking {path}" + (f" ({_human(size)})" if size else ""))
    stage = _staging(settings)
    try:
        # The file first: a damaged bundle is worth knowing about even without an engine.
        manifest = verify(path, Progress("checked", size), stage=stage, sha256=sha256)
        docker.engine_version()
        check_fits(manifest, settings, path)
        print(
            f"  made {manifest.created} by mlflow-lab {manifest.tool_version}, "
            f"MLflow {manifest.mlflow_version}; it holds {MODE_WORDS[manifest.mode]}"
        )
        _load_staged(settings, path, manifest, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if manifest.mode == CLASSROOM:
        print(
            f"Loaded {path.name} ({MODE_WORDS[manifest.mode]}): `invoke up` starts the lab, "
            "`invoke classroom.up --no-build` the class, without network or builds."
        )
    else:
        print(
            f"Loaded {path.name} ({MODE_WORDS[manifest.mode]} only): `invoke up` now starts "
            "the lab without network or builds (for a class, `invoke bundle --classroom` "
            "makes a bundle with the class's images too)."
        )


def _replace_tree(checked: Path, target: Path) -> None:
    """The checked copy takes `target`'s place, whole: the old one goes only once it has."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    shutil.move(str(checked), str(target))
    shutil.rmtree(old, ignore_errors=True)


def _load_staged(settings: Settings, path: Path, manifest: Manifest, stage: Path) -> None:
    try:
        print("[2/3] Images")
        if _images_present(manifest):
            print(
                f"  all {len(manifest.images)} images are already here, with the same IDs: "
                "nothing to load"
            )
        else:
            staged = stage / STAGED[manifest.images_member]
            check_images(staged, manifest, path)
            _docker_load(staged, manifest)
            for image in manifest.images:
                loaded = docker.image_id(image.name)
                if loaded != image.id:
                    raise LabError(
                        f"after `docker load`, {image.name} is {loaded}, not {image.id} as "
                        f"bundled: {path} may be damaged; {DAMAGED_FIX}"
                    )
        print("[3/3] Course repo")
        if manifest.course.commit is None:
            print(
                f"warning: {path} holds no course repo (it could not be fetched where the bundle"
                " was made): the workspace gets the bundled lab only until `invoke clone` runs "
                "online"
            )
        else:
            _place_course(stage / STAGED[COURSE_MEMBER], manifest, settings)
            if manifest.mode == CLASSROOM:
                room = class_settings.load(lab=settings)
                _place_course(stage / STAGED[COURSE_MEMBER], manifest, room.course_lab, lab=False)
        if (stage / datasets.BUNDLE_PREFIX).is_dir():
            _replace_tree(stage / datasets.BUNDLE_PREFIX, settings.datasets_cache_dir)
            print(f"  datasets: {datasets.describe(settings)}")
    except OSError as exc:
        raise LabError(
            f"loading {path} failed ({exc.strerror or exc}): fix that, then load again"
        ) from None
