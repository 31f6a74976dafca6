"""`invoke bundle` and `invoke load`: provision classroom machines from one file, offline.

A bundle is a plain (uncompressed) tar, so `tar tvf` lists it, holding:

- `images.tar.zst`: `docker save` of both lab images, compressed with `zstd -T0 -3`
  (measured on 2 cores: faster than `gzip -1` and a fifth smaller); `images.tar.gz`
  with `gzip -1` where zstd is not installed;
- `lab/`: the bundled lab as the Jupyter image carries it, readable without Docker;
- `course/<cache>.git/`: the course repo's bare cache as fetched, at the manifest's commit;
- `datasets/`: the datasets notebooks fetch at run time, as scikit-learn's fetchers left
  them in LAB_STATE_DIR/datasets (mlflow_lab/lab/datasets.py), when any was fetched;
- `manifest.json`, last: versions, image IDs and build inputs, the course commit, and the
  size and sha256 of every other member.

The manifest comes last because the images member's size and checksum are known only
once it is written; `load` reads the whole file to check every checksum before it
changes anything anyway.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
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

from invoke.context import Context

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import engine, versions
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import course, datasets, images
from mlflow_lab.lab.compose import SERVICES, Compose

FORMAT = "mlflow-lab-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MANIFEST_MAX_BYTES = 16 << 20
LAB_DIR = PROJECT_ROOT / "lab"
LAB_PREFIX = "lab"
COURSE_PREFIX = "course"
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


@dataclass(frozen=True)
class Member:
    size: int | None  # None: a folder
    sha256: str | None


@dataclass(frozen=True)
class Image:
    service: str
    name: str
    id: str
    inputs: str


@dataclass(frozen=True)
class Course:
    url: str
    branch: str
    commit: str | None  # None: the bundle holds no course repo
    cache: str | None  # the cache folder's name under course/
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

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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
                "cache": self.course.cache,
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
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"it is bundle format {version}, this mlflow-lab reads {FORMAT_VERSION}"
        )
    tool = _get(document, "tool", dict)
    images_doc = _get(document, "images", dict)
    compression = _get(images_doc, "compression", str)
    if compression not in {c.name for c in CODECS}:
        raise ManifestError(f"manifest.json names an unknown compression {compression!r}")
    services = _get(images_doc, "services", dict)
    if set(services) != set(SERVICES):
        raise ManifestError(f"manifest.json lists images {sorted(services)}, not {list(SERVICES)}")
    bundled = tuple(
        Image(
            service,
            _get(services[service], "name", str),
            _get(services[service], "id", str),
            _get(services[service], "inputs", str),
        )
        for service in SERVICES
    )
    course_doc = _get(document, "course", dict)
    bundled_course = Course(
        _get(course_doc, "url", str),
        _get(course_doc, "branch", str),
        _get(course_doc, "commit", str, optional=True),
        _get(course_doc, "cache", str, optional=True),
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
    cache = manifest.course.cache
    if (cache is None) != (manifest.course.commit is None):
        raise ManifestError("manifest.json gives a course commit without its cache, or back")
    allowed = [LAB_PREFIX, datasets.BUNDLE_PREFIX]
    if cache is not None:
        if "/" in cache or not cache.endswith(".git") or not _safe_name(cache):
            raise ManifestError(f"manifest.json names an odd course cache {cache!r}")
        allowed.append(f"{COURSE_PREFIX}/{cache}")
    for name in manifest.members:
        if name != manifest.images_member and not any(
            name == top or name.startswith(f"{top}/") for top in allowed
        ):
            raise ManifestError(f"manifest.json lists an unexpected member {name!r}")


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


def verify(path: Path, progress: Progress | None = None) -> Manifest:
    """Read the whole bundle; its manifest when every member matches it, else LabError."""
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
    try:
        with raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for info in tar:
                if info.name in found or (info.name == MANIFEST_NAME and document is not None):
                    raise damaged(path, f"{info.name} appears twice")
                if info.name == MANIFEST_NAME and info.isfile():
                    if info.size > MANIFEST_MAX_BYTES:
                        raise damaged(path, "manifest.json is implausibly large")
                    document = b"".join(_read_member(tar, info))
                elif info.isdir():
                    found[info.name] = Member(None, None)
                elif info.isfile():
                    digest, size = hashlib.sha256(), 0
                    for chunk in _read_member(tar, info):
                        digest.update(chunk)
                        size += len(chunk)
                        if progress:  # by file position, so headers count too
                            progress.add(raw.tell() - progress.done_bytes)
                    found[info.name] = Member(size, digest.hexdigest())
                else:
                    raise damaged(path, f"unexpected member {info.name}")
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise damaged(path, f"cannot be read to the end: {exc}") from None
    finally:
        if progress:  # ends a live progress line before any error is printed
            progress.finish()
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
        save = subprocess.Popen(["docker", "save", *names], stdout=subprocess.PIPE, stderr=save_err)
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


def _bundled_images(ctx: Context, settings: Settings) -> tuple[Image, ...]:
    compose = Compose(ctx, settings)
    stale = images.stale_images(compose)
    if stale:
        print(f"  the {' and '.join(stale)} image is missing or out of date: building it")
        images.build(ctx, settings, stale)
        if images.stale_images(compose):
            raise LabError("the images still do not match this checkout after the build")
    found = []
    for service in SERVICES:
        name = compose.image(service)
        image_id, inputs = images.image_id(name), images.image_label(name)
        if image_id is None or inputs is None:
            raise LabError(f"the image {name} vanished during the bundle: run the command again")
        found.append(Image(service, name, image_id, inputs))
        print(f"  {name}: {image_id[:19]} (inputs {found[-1].inputs})")
    return tuple(found)


def _course_to_bundle(settings: Settings) -> tuple[Course, Path | None]:
    fetched = course.fetch_course_repo(settings)
    if fetched.warning:
        print(f"warning: {fetched.warning}")
    commit = course.branch_commit(fetched.cache, settings.repo_branch) if fetched.cache else None
    if commit is None or fetched.cache is None:
        print(
            f"warning: the bundle holds no course repo ({settings.repo_url} was never fetched "
            "here): machines loading it get the bundled lab only until `invoke clone` runs online"
        )
        return Course(settings.repo_url, settings.repo_branch, None, None, fetched.warning), None
    print(f"  {settings.repo_url} (branch {settings.repo_branch}) at {commit[:12]}")
    cache = fetched.cache
    return Course(
        settings.repo_url, settings.repo_branch, commit, cache.name, fetched.warning
    ), cache


def write_bundle(
    out: BinaryIO,
    codec: Codec,
    image_chunks: Iterable[bytes],
    raw_bytes: list[int],
    bundled: tuple[Image, ...],
    course_entry: Course,
    cache: Path | None,
    lab_dir: Path = LAB_DIR,
    datasets_dir: Path | None = None,
) -> Manifest:
    """Every member, then the manifest; raw_bytes[0] is the uncompressed images' size."""
    writer = Writer(out)
    progress = Progress("written")
    writer.add_stream(codec.member, image_chunks, progress)
    progress.finish()
    print(f"  {_human(raw_bytes[0])} of images compressed to {_human(progress.done_bytes)}")
    print("[4/4] Lab material and manifest")
    writer.add_tree(LAB_PREFIX, lab_dir)
    if cache is not None:
        writer.add_tree(f"{COURSE_PREFIX}/{cache.name}", cache)
    if datasets_dir is not None:
        writer.add_tree(datasets.BUNDLE_PREFIX, datasets_dir)
    version, commit = tool_version()
    manifest = Manifest(
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


def create(ctx: Context, settings: Settings, output: Path) -> None:
    """Write the bundle to `output` (replaced only once the new one is complete)."""
    output = output.expanduser().absolute()
    if not output.parent.is_dir():
        raise LabError(f"{output.parent}: no such folder: create it or choose another --output")
    if output.is_dir():
        raise LabError(f"{output} is a folder: give a file name, e.g. {output}/mlflow-lab.bundle")
    codec = next((c for c in CODECS if shutil.which(c.compress[0])), None)
    if codec is None:
        raise LabError("neither zstd nor gzip is installed: install zstd (`apt-get install zstd`)")
    engine.engine_version()
    began = time.monotonic()
    print("[1/4] Images")
    bundled = _bundled_images(ctx, settings)
    for line in datasets.fetch(settings, bundled[SERVICES.index("jupyter")].name):
        print(f"  {line}" if not line.startswith("warning:") else line)
    datasets_dir = datasets.bundle_dir(settings)
    print(f"  datasets: {datasets.describe(settings)}")
    print("[2/4] Course repo")
    course_entry, cache = _course_to_bundle(settings)
    print(f"[3/4] Saving the images ({codec.name})")
    partial = output.with_name(output.name + ".partial")
    raw_bytes = [0]
    try:
        with partial.open("wb") as out:
            write_bundle(
                out,
                codec,
                _saved_images([i.name for i in bundled], codec, raw_bytes),
                raw_bytes,
                bundled,
                course_entry,
                cache,
                datasets_dir=datasets_dir,
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
    print(
        f"Wrote {output}: {_human(size)} ({size} bytes) in {time.monotonic() - began:.0f} s. "
        f"On each machine: `invoke load {output.name}`, then `invoke up`."
    )


# ---------------------------------------------------------------- load


def _docker_root() -> Path:
    result = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    root = Path(result.stdout.strip() or "/")
    # Docker Desktop's data folder lives in its VM, not on this file system.
    return root if root.is_dir() else Path("/")


def _images_present(manifest: Manifest) -> bool:
    return all(images.image_id(i.name) == i.id for i in manifest.images)


def check_fits(manifest: Manifest, settings: Settings, path: Path) -> None:
    """Whether this checkout and its settings are the ones the bundle was made for."""
    made_by = f"mlflow-lab {manifest.tool_version}" + (
        f" at commit {manifest.tool_commit[:12]}" if manifest.tool_commit else ""
    )
    for image in manifest.images:
        if image.inputs != images.inputs_digest(image.service):
            raise LabError(
                f"{path} was made by another version of mlflow-lab ({made_by}): its "
                f"{image.service} image would be rebuilt by `invoke up`; load it with that "
                "version's checkout"
            )
        wanted = f"mlflow-lab/{image.service}:{settings.image_tag}"
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
        root = _docker_root()
        free = shutil.disk_usage(root).free
        if free < manifest.images_size:
            raise LabError(
                f"the images need up to {_human(manifest.images_size)} on {root}, which has "
                f"{_human(free)} free: free space (e.g. `docker system prune`) and load again"
            )


def _members_of(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for info in tar:
            yield tar, info


def _docker_load(path: Path, manifest: Manifest) -> None:
    codec = manifest.codec()
    size = manifest.members[manifest.images_member].size
    progress = Progress("loaded", size)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        unpack = subprocess.Popen(
            codec.decompress, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
        load = subprocess.Popen(["docker", "load"], stdin=unpack.stdout, stdout=out, stderr=err)
        assert unpack.stdin and unpack.stdout
        unpack.stdout.close()  # docker load holds the read end now
        try:
            for tar, info in _members_of(path):
                if info.name == manifest.images_member:
                    for chunk in _read_member(tar, info):
                        unpack.stdin.write(chunk)
                        progress.add(len(chunk))
                    break
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
            if "no space left" in reason.lower():
                raise LabError(
                    "the disk is full: free space (e.g. `docker system prune`) and run "
                    "`invoke load` again"
                )
            raise LabError(f"`docker load` failed ({reason}): check the Docker engine, load again")
        out.seek(0)
        for line in out.read().decode("utf-8", "replace").splitlines():
            print(f"  {line.strip()}")


def _place_course(path: Path, manifest: Manifest, settings: Settings) -> None:
    """The bundled cache replaces this machine's, whole; the first `up` will not fetch."""
    bundled = manifest.course
    target = course.cache_path(settings)
    _place_tree(path, manifest, f"{COURSE_PREFIX}/{bundled.cache}", target)
    course.bundle_marker(target).write_text(f"{bundled.commit}\n", encoding="utf-8")
    print(f"  {target} at {str(bundled.commit)[:12]} (the first `invoke up` will not fetch it)")


def _place_tree(path: Path, manifest: Manifest, prefix: str, target: Path) -> None:
    """The bundle's folder `prefix` replaces `target`, whole, each file checked again."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for tar, info in _members_of(path):
            if info.name != prefix and not info.name.startswith(prefix + "/"):
                continue
            dest = partial / PurePosixPath(info.name).relative_to(prefix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if info.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                dest.chmod(info.mode | 0o700)  # the owner must be able to replace it later
                continue
            digest = hashlib.sha256()
            with dest.open("wb") as sink:
                for chunk in _read_member(tar, info):
                    sink.write(chunk)
                    digest.update(chunk)
            if digest.hexdigest() != manifest.members[info.name].sha256:
                raise damaged(path, f"{info.name} changed since it was checked")
            dest.chmod(info.mode & 0o777)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def load(settings: Settings, path: Path) -> None:
    """Check the whole bundle, then load its images and place its course repo."""
    path = path.expanduser()
    size = path.stat().st_size if path.is_file() else None
    print(f"[1/3] Checking {path}" + (f" ({_human(size)})" if size else ""))
    # The file first: a damaged bundle is worth knowing about even without an engine.
    manifest = verify(path, Progress("checked", size))
    engine.engine_version()
    check_fits(manifest, settings, path)
    print(
        f"  made {manifest.created} by mlflow-lab {manifest.tool_version}, "
        f"MLflow {manifest.mlflow_version}"
    )
    try:
        print("[2/3] Images")
        if _images_present(manifest):
            print("  both images are already here, with the same IDs: nothing to load")
        else:
            _docker_load(path, manifest)
            for image in manifest.images:
                loaded = images.image_id(image.name)
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
            _place_course(path, manifest, settings)
        if datasets.BUNDLE_PREFIX in manifest.members:
            _place_tree(path, manifest, datasets.BUNDLE_PREFIX, settings.datasets_cache_dir)
            print(f"  datasets: {datasets.describe(settings)}")
    except (tarfile.TarError, EOFError) as exc:
        raise damaged(path, f"it changed while it was loaded: {exc}") from None
    except OSError as exc:
        raise LabError(
            f"loading {path} failed ({exc.strerror or exc}): fix that, then load again"
        ) from None
    print(f"Loaded {path.name}: `invoke up` now starts the lab without network or builds.")
