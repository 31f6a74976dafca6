"""The datasets course notebooks fetch at run time, cached in scikit-learn's data home.

    lab_datasets.py fetch SPEC_JSON [--ca FILE]   fetch these datasets into SCIKIT_LEARN_DATA
    lab_datasets.py list                          which cached datasets are present there

`fetch` runs scikit-learn's own fetcher for each dataset, with the data home pointed at
the cache, so the cache holds exactly what that fetcher looks for: offline, the same
call in a notebook loads it from there. SPEC_JSON maps a dataset's name to its
`fetcher` (a function of sklearn.datasets), `args` (keyword arguments) and optionally
`url` and `sha256` (a mirror of the fetcher's one download). The host (mlflow-lab's
mlflow_lab/lab/datasets.py) checks the list before it gets here. An index in the data
home (INDEX) names the files each dataset left there. Both commands print one JSON
document as their last line.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.request
from pathlib import Path

INDEX = "mlflow-lab-datasets.json"
# A blocked network should cost a warning, not a hung build.
SOCKET_TIMEOUT_S = 30


def data_home() -> Path:
    home = Path(os.environ.get("SCIKIT_LEARN_DATA") or "~/scikit_learn_data").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def read_index(home: Path) -> dict[str, dict[str, object]]:
    try:
        index = json.loads((home / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def snapshot(home: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in home.rglob("*")
        if p.is_file() and p.name != INDEX
    }


def trust(ca_file: str | None) -> None:
    """HTTPS trusts the system's CAs and the host's bundle (TLS-intercepting proxies)."""
    context = ssl.create_default_context()
    if ca_file and Path(ca_file).is_file() and Path(ca_file).stat().st_size:
        context.load_verify_locations(cafile=ca_file)
    # scikit-learn downloads with urllib's module-level opener: this one replaces it.
    urllib.request.install_opener(
        urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    )


def use_mirror(fetcher: object, name: str, url: str, sha256: str) -> None:
    """Point the fetcher's one RemoteFileMetadata (URL, checksum) at the mirror."""
    from sklearn.datasets._base import RemoteFileMetadata

    module = sys.modules[getattr(fetcher, "__module__", "")]
    remotes = [k for k, v in vars(module).items() if isinstance(v, RemoteFileMetadata)]
    if len(remotes) != 1:
        raise ValueError(
            f"{name} sets url, but its fetcher downloads {len(remotes)} files: remove url/sha256"
        )
    original = getattr(module, remotes[0])
    setattr(module, remotes[0], original._replace(url=url, checksum=sha256))


def fetch_one(name: str, spec: dict[str, object], home: Path) -> list[str]:
    """Fetch one dataset; the files it added or changed in the data home."""
    import sklearn.datasets

    fetcher = getattr(sklearn.datasets, str(spec["fetcher"]), None)
    if fetcher is None:
        raise ValueError(f"scikit-learn has no sklearn.datasets.{spec['fetcher']}")
    if spec.get("url"):
        use_mirror(fetcher, name, str(spec["url"]), str(spec["sha256"]))
    args = spec.get("args") or {}
    assert isinstance(args, dict)
    before = snapshot(home)
    fetcher(data_home=str(home), **args)
    after = snapshot(home)
    return sorted(f for f, stat in after.items() if before.get(f) != stat)


def fetch(specs: dict[str, dict[str, object]], ca_file: str | None) -> dict[str, str | None]:
    """Each dataset's error (None: fetched); the index is updated for those fetched."""
    socket.setdefaulttimeout(SOCKET_TIMEOUT_S)
    trust(ca_file)
    home = data_home()
    outcome: dict[str, str | None] = {}
    for name, spec in specs.items():
        try:
            files = fetch_one(name, spec, home)
        except Exception as exc:  # one dataset's failure is reported, the others still come
            reason = " ".join(str(exc).split()) or type(exc).__name__
            outcome[name] = f"{type(exc).__name__}: {reason}"[:300]
            continue
        index = read_index(home)
        index[name] = {"fetcher": spec["fetcher"], "files": files}
        (home / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
        outcome[name] = None
    return outcome


def present(home: Path | None = None) -> dict[str, bool]:
    """Each indexed dataset: whether every file it left is still there."""
    home = data_home() if home is None else home
    found = {}
    for name, entry in read_index(home).items():
        files = entry.get("files") if isinstance(entry, dict) else None
        found[name] = isinstance(files, list) and all((home / str(f)).is_file() for f in files)
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["fetch"] and len(argv) in (2, 4):
        ca_file = argv[3] if len(argv) == 4 and argv[2] == "--ca" else None
        print(json.dumps(fetch(json.loads(argv[1]), ca_file)))
        return 0
    if argv == ["list"]:
        print(json.dumps(present()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
