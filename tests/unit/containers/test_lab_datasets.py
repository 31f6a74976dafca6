"""lab_datasets (Jupyter image) against a stand-in scikit-learn and a file served on loopback.

The stand-in has scikit-learn's shape where lab_datasets relies on it: fetchers in
sklearn.datasets, each module's RemoteFileMetadata, downloads through urllib with a
sha256 check. The real scikit-learn runs in the e2e tests.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import container_module, fake_california_archive, served_folder

lab_datasets = container_module("jupyter", "lab_datasets")

FAKE_BASE = """
import collections, hashlib, urllib.request
RemoteFileMetadata = collections.namedtuple("RemoteFileMetadata", ["filename", "url", "checksum"])

def _fetch_remote(remote, dirname):
    path = f"{dirname}/{remote.filename}"
    urllib.request.urlretrieve(remote.url, path)
    with open(path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != remote.checksum:
            raise OSError(f"{path} has an SHA256 checksum differing from expected")
    return path
"""
FAKE_FETCHER = """
import os
from sklearn.datasets._base import RemoteFileMetadata, _fetch_remote
ARCHIVE = RemoteFileMetadata("cal_housing.tgz", "https://figshare.invalid/files/1", "0" * 64)

def fetch_fake(*, data_home=None, scale=1):
    target = os.path.join(data_home, "fake_py3.pkz")
    if not os.path.exists(target):
        archive = _fetch_remote(ARCHIVE, dirname=data_home)
        os.replace(archive, target)
    return target
"""


@pytest.fixture
def fake_sklearn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    package = tmp_path / "site" / "sklearn" / "datasets"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("", encoding="utf-8")
    (package / "_base.py").write_text(textwrap.dedent(FAKE_BASE), encoding="utf-8")
    (package / "_fake.py").write_text(textwrap.dedent(FAKE_FETCHER), encoding="utf-8")
    (package / "__init__.py").write_text("from ._fake import fetch_fake\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield
    for name in [n for n in sys.modules if n == "sklearn" or n.startswith("sklearn.")]:
        del sys.modules[name]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data home"
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(folder))
    return folder


def test_fetch_from_a_mirror_writes_what_the_fetcher_reads_and_an_index(
    fake_sklearn: None, home: Path, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    sha256 = fake_california_archive(remote / "cal.tgz", rows=3)
    with served_folder(remote) as base:
        spec = {"fetcher": "fetch_fake", "args": {"scale": 2}, "url": f"{base}/cal.tgz"}
        outcome = lab_datasets.fetch({"fake": {**spec, "sha256": sha256}}, None)
    assert outcome == {"fake": None}
    assert (home / "fake_py3.pkz").read_bytes() == (remote / "cal.tgz").read_bytes()
    index = json.loads((home / lab_datasets.INDEX).read_text(encoding="utf-8"))
    assert index == {"fake": {"fetcher": "fetch_fake", "files": ["fake_py3.pkz"]}}
    assert lab_datasets.present() == {"fake": True}
    (home / "fake_py3.pkz").unlink()
    assert lab_datasets.present(home) == {"fake": False}


def test_an_unreachable_or_wrong_source_is_reported_per_dataset(
    fake_sklearn: None, home: Path, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    fake_california_archive(remote / "cal.tgz", rows=3)
    with served_folder(remote) as base:
        outcome = lab_datasets.fetch(
            {
                "wrong": {"fetcher": "fetch_fake", "url": f"{base}/cal.tgz", "sha256": "1" * 64},
                "absent": {"fetcher": "fetch_nothing"},
            },
            None,
        )
    assert "SHA256 checksum" in outcome["wrong"]
    assert outcome["absent"] == "ValueError: scikit-learn has no sklearn.datasets.fetch_nothing"
    assert lab_datasets.present(home) == {}, "nothing half-fetched is indexed"


def test_the_command_line_prints_one_json_document(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab_datasets.main(["list"]) == 0
    assert json.loads(capsys.readouterr().out) == {}
    assert lab_datasets.main(["nonsense"]) == 2
