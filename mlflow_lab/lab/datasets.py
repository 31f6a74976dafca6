"""Datasets course notebooks fetch at run time, cached so the same calls work offline.

The list is LAB_DATASETS_FILE (`datasets.toml`): scikit-learn fetchers by name. Each is
fetched once where the network allows (`invoke build`, `invoke bundle`, `invoke
datasets`) by running the fetcher itself in the Jupyter image with its data home on
LAB_STATE_DIR/datasets, so the cache holds exactly what the fetcher looks for. The
Jupyter container copies that cache into the student's SCIKIT_LEARN_DATA at start
(docker/jupyter/sync_datasets.sh); bundles carry it. What the container side does, and
the index of what each dataset left in the cache, is docker/jupyter/lab_datasets.py,
which the host also loads to read that index: one definition for both sides.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import docker
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings
from mlflow_lab.lab import layout

CONTAINER_SCRIPT_SOURCE = PROJECT_ROOT / "docker" / "jupyter" / "lab_datasets.py"
CONTAINER_SCRIPT = layout.tool("lab_datasets.py")
SYNC_SCRIPT = layout.tool("sync_datasets.sh")
BUNDLE_PREFIX = "datasets"
CACHE_MOUNT = "/data"
CA_MOUNT = "/tmp/lab-ca.pem"
# Starting the image and importing scikit-learn takes seconds; the downloads, with
# scikit-learn's retries, the rest.
FETCH_TIMEOUT_S = 900
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
KEYS = frozenset({"fetcher", "args", "url", "sha256"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FETCHER = re.compile(r"^fetch_[a-z0-9_]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Dataset:
    name: str
    fetcher: str
    args: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # a mirror of the fetcher's download, with its sha256
    sha256: str | None = None

    def spec(self) -> dict[str, Any]:
        """What docker/jupyter/lab_datasets.py `fetch` reads for this dataset."""
        return {"fetcher": self.fetcher, "args": self.args, "url": self.url, "sha256": self.sha256}


@cache
def container_side() -> ModuleType:
    """docker/jupyter/lab_datasets.py (stdlib only at import), for its index format."""
    spec = importlib.util.spec_from_file_location("lab_datasets", CONTAINER_SCRIPT_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bad(path: Path, problem: str, fix: str) -> LabError:
    return LabError(f"LAB_DATASETS_FILE ({path}): {problem}: {fix}")


def parse(path: Path) -> tuple[Dataset, ...]:
    """The dataset list in `path`; LabError naming the file, the entry and the fix."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror})", "fix its permissions") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"is not valid TOML ({exc})", "fix that line") from None
    found = []
    for name, entry in document.items():
        if not isinstance(entry, dict):
            raise _bad(path, f"{name!r} is not a table", f"write it as [{name}] with a fetcher")
        if not _NAME.match(name):
            raise _bad(path, f"[{name}] is not a usable name", "use letters, digits, _ and -")
        unknown = sorted(set(entry) - KEYS)
        if unknown:
            raise _bad(
                path, f"[{name}] has an unknown key {unknown[0]!r}", f"use only {sorted(KEYS)}"
            )
        fetcher = entry.get("fetcher")
        if not isinstance(fetcher, str) or not _FETCHER.match(fetcher):
            raise _bad(
                path,
                f'[{name}] has no fetcher = "fetch_..."',
                "name a function of sklearn.datasets, e.g. fetch_california_housing",
            )
        args = entry.get("args", {})
        if not isinstance(args, dict) or "data_home" in args:
            raise _bad(
                path,
                f"[{name}] args is not a table of keyword arguments without data_home",
                "write args = { name = value } (the cache is the data home)",
            )
        url, sha256 = entry.get("url"), entry.get("sha256")
        if (url is None) != (sha256 is None):
            raise _bad(path, f"[{name}] gives url or sha256 alone", "give both, or neither")
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise _bad(path, f"[{name}] url {url!r} is not http(s)", "give the mirror's URL")
        if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
            raise _bad(path, f"[{name}] sha256 is not 64 hex digits", "give the file's sha256")
        found.append(Dataset(name, fetcher, args, url, sha256))
    return tuple(found)


def listed(settings: Settings) -> tuple[Dataset, ...]:
    return () if settings.datasets_file is None else parse(settings.datasets_file)


def cached(settings: Settings) -> dict[str, bool]:
    """Each dataset in the cache's index: whether all its files are there."""
    folder = settings.datasets_cache_dir
    if not folder.is_dir():
        return {}
    present: dict[str, bool] = container_side().present(folder)
    return present


def report(settings: Settings) -> tuple[list[str], list[str]]:
    """(cached, not cached) among the listed datasets."""
    present = cached(settings)
    names = [d.name for d in listed(settings)]
    return [n for n in names if present.get(n)], [n for n in names if not present.get(n)]


def describe(settings: Settings) -> str:
    """One line for `invoke doctor`: which listed datasets are cached."""
    have, lack = report(settings)
    if not have and not lack:
        return "none listed (LAB_DATASETS_FILE)"
    text = f"cached: {', '.join(have) or 'none'}"
    if lack:
        text += (
            f"; not cached: {', '.join(lack)} (notebooks fetching them need the network until "
            "`invoke datasets` runs where it is reachable)"
        )
    return text


def _warning(dataset: Dataset, reason: str) -> str:
    return (
        f"warning: dataset {dataset.name} ({dataset.fetcher}) could not be fetched ({reason}): "
        "notebooks loading it need the network; run `invoke datasets` where it is reachable"
    )


def _fetch_command(settings: Settings, image: str, todo: tuple[Dataset, ...]) -> list[str]:
    command = [
        "run",
        "--rm",
        # The host's view of the network: its proxies and mirrors, loopback ones included.
        "--network",
        "host",
        # Files in the cache belong to whoever runs the lab, not to the image's user.
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-e",
        f"SCIKIT_LEARN_DATA={CACHE_MOUNT}",
        "-e",
        "HOME=/tmp",
        "-v",
        f"{settings.datasets_cache_dir}:{CACHE_MOUNT}",
    ]
    for name in PROXY_VARIABLES:
        if os.environ.get(name):
            command += ["-e", name]
    ca = ["--ca", CA_MOUNT] if settings.ca_bundle else []
    if settings.ca_bundle:
        command += ["-v", f"{settings.ca_bundle.resolve()}:{CA_MOUNT}:ro"]
    specs = {d.name: d.spec() for d in todo}
    return [
        *command,
        "--entrypoint",
        "python3",
        image,
        CONTAINER_SCRIPT,
        "fetch",
        json.dumps(specs),
        *ca,
    ]


def fetch(settings: Settings, image: str) -> list[str]:
    """Fetch the listed datasets not cached yet with `image`; the lines to show.

    Never raises for the network: each dataset that cannot be fetched is one warning.
    """
    datasets = listed(settings)
    present = cached(settings)
    todo = tuple(d for d in datasets if not present.get(d.name))
    if not todo:
        return []
    settings.datasets_cache_dir.mkdir(parents=True, exist_ok=True)
    outcome: object = None
    try:
        result = docker.run(
            *_fetch_command(settings, image, todo), timeout=FETCH_TIMEOUT_S, check=False
        )
        reason = result.last_line()
        if result.ok and result.lines():
            outcome = json.loads(result.lines()[-1])
    except docker.DockerError as exc:
        reason = str(exc)
    except ValueError:
        reason = "the fetch printed no result"
    if not isinstance(outcome, dict):
        return [_warning(d, reason) for d in todo]
    fetched = [d.name for d in todo if d.name in outcome and outcome[d.name] is None]
    lines = [f"Datasets: fetched {', '.join(fetched)}"] if fetched else []
    return lines + [
        _warning(d, str(outcome.get(d.name) or "not attempted"))
        for d in todo
        if d.name not in fetched
    ]


def bundle_dir(settings: Settings) -> Path | None:
    """The cache as a bundle carries it; None when nothing was ever fetched."""
    folder = settings.datasets_cache_dir
    return folder if cached(settings) else None


def sync_running(settings: Settings, container: str | None) -> None:
    """Copy the cache into a running Jupyter container now (it does so at each start)."""
    if container is None:
        return
    docker.exec_in(container, SYNC_SCRIPT, timeout=120)
