"""Placing the lab material in the student workspace: the bundled lab and the course repo.

The course repository is fetched on the host (which has the network, proxy and CA
settings) into a cache that the Jupyter container sees read-only; inside the
container, workspace_sync.py places it in the workspace without losing student work.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlflow_lab.core import git
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import layout
from mlflow_lab.lab.compose import JUPYTER, LabCompose
from mlflow_lab.lab.layout import BUNDLED_LAB_SOURCE, COURSE_CACHE_MOUNT, WORKSPACE

BUNDLED_LAB_DIR = "mlflow-tracking-lab"
SYNC_SCRIPT = layout.tool("workspace_sync.py")
GIT_TIMEOUT_S = 300
# Placing a large course repo copies it; the sync itself has its own git timeouts.
SYNC_TIMEOUT_S = 900


@dataclass(frozen=True)
class Fetched:
    cache: Path | None  # the bare cache on the host; None when nothing was ever fetched
    warning: str | None


def repo_name(url: str) -> str:
    name = re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
    return name or "course"


def _git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return git.run(*args, cwd=cwd, timeout=GIT_TIMEOUT_S)


def _reason(result: subprocess.CompletedProcess[str]) -> str:
    return git.reason(result)


def _has_branch(cache: Path, branch: str) -> bool:
    if not (cache / "HEAD").exists():
        return False
    return (
        _git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=cache).returncode
        == 0
    )


def cache_path(settings: Settings) -> Path:
    """The host cache of the course repo LAB_REPO_URL names."""
    # Keyed by URL as well as name: pointing LAB_REPO_URL elsewhere starts a new cache.
    key = hashlib.sha256(settings.repo_url.encode()).hexdigest()[:10]
    return settings.course_cache_dir / f"{repo_name(settings.repo_url)}-{key}.git"


def bundle_marker(cache: Path) -> Path:
    """Left by `invoke load` beside a cache it placed: the next placement skips the fetch."""
    return cache.with_name(cache.name + ".from-bundle")


def branch_commit(cache: Path, branch: str) -> str | None:
    """The commit the cache has for `branch`; None when it has none."""
    if not (cache / "HEAD").exists():
        return None
    result = _git(
        ["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"], cwd=cache
    )
    return result.stdout.strip() if result.returncode == 0 else None


def fetch_course_repo(settings: Settings) -> Fetched:
    """Fetch the course branch into the host cache; never raises for network trouble."""
    url, branch = settings.repo_url, settings.repo_branch
    cache = cache_path(settings)
    cached = _has_branch(cache, branch)
    fallback = (
        f"the workspace keeps the last fetched copy ({repo_name(url)}/) and the bundled lab "
        f"({BUNDLED_LAB_DIR}/)"
        if cached
        else f"the workspace gets the bundled lab ({BUNDLED_LAB_DIR}/) only"
    )
    try:
        if (cache / "HEAD").exists():
            # No --depth here: the new commits must link up with the ones the student's
            # copy already has, or every update would look like rewritten history.
            result = _git(
                ["fetch", "origin", f"+refs/heads/{branch}:refs/heads/{branch}"], cwd=cache
            )
        else:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            # `--`: whatever LAB_REPO_URL says, git reads it as a URL, never as an option.
            result = _git(
                ["clone", "--bare", "--depth", "1", "--branch", branch, "--", url, str(tmp)]
            )
            if result.returncode == 0:
                tmp.rename(cache)
    except FileNotFoundError:
        return Fetched(None, f"git is not installed on this machine: {fallback}")
    except subprocess.TimeoutExpired:
        return Fetched(
            cache if cached else None,
            f"course repo {url} (branch {branch}) did not answer in {GIT_TIMEOUT_S} s: {fallback}",
        )
    if result.returncode != 0:
        return Fetched(
            cache if cached else None,
            f"course repo {url} (branch {branch}) could not be fetched ({_reason(result)}): "
            f"{fallback}",
        )
    return Fetched(cache, None)


def _sync_in_container(compose: LabCompose, source: str, branch: str, dest: str) -> str:
    args = ["--source", source, "--branch", branch, "--dest", dest]
    result = compose.exec(JUPYTER, "python3", SYNC_SCRIPT, *args, timeout=SYNC_TIMEOUT_S)
    line = result.last_line() if not result.ok else (result.lines() or [""])[-1].strip()
    if not result.ok:
        raise LabError(f"placing {dest} failed: {line}")
    return line


def workspace_has(compose: LabCompose, name: str) -> bool:
    return compose.exec(JUPYTER, "test", "-e", f"{WORKSPACE}/{name}").ok


def place_bundled_lab(compose: LabCompose) -> str:
    # The image's bundled lab has a history that continues from one image to the next
    # (images.prepare_lab_history): a new image's lab is an ordinary update.
    return _sync_in_container(compose, BUNDLED_LAB_SOURCE, "main", f"{WORKSPACE}/{BUNDLED_LAB_DIR}")


def place_course_repo(compose: LabCompose, settings: Settings) -> list[str]:
    """Fetch and place the course repo; the lines to show (warnings start with 'warning:')."""
    cache = cache_path(settings)
    marker = bundle_marker(cache)
    # Right after `invoke load` the cache is as fresh as the bundle, and the machine may
    # well be offline: a fetch would only cost a timeout and a warning.
    from_bundle = marker.is_file() and _has_branch(cache, settings.repo_branch)
    fetched = Fetched(cache, None) if from_bundle else fetch_course_repo(settings)
    lines = [f"warning: {fetched.warning}"] if fetched.warning else []
    if fetched.cache is not None:
        name = repo_name(settings.repo_url)
        lines.append(
            _sync_in_container(
                compose,
                f"{COURSE_CACHE_MOUNT}/{fetched.cache.name}",
                settings.repo_branch,
                f"{WORKSPACE}/{name}",
            )
        )
    if from_bundle:
        # Once only: from now on `invoke clone` fetches updates as usual.
        marker.unlink()
        lines.append("as bundled, not fetched; `invoke clone` fetches updates when online")
    return lines
