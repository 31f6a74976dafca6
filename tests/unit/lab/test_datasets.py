"""The dataset list, the cache's state, and what a fetch prints. No Docker."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from mlflow_lab import PROJECT_ROOT
from mlflow_lab.core import settings
from mlflow_lab.core.docker import DockerError, Result
from mlflow_lab.core.errors import LabError
from mlflow_lab.lab import bundle, datasets
from tests.helpers import FakeDocker, isolate_settings

IMAGE = "mlflow-lab/jupyter:latest"


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> settings.Settings:
    isolate_settings(monkeypatch, tmp_path)
    return settings.load()


def with_list(lab: settings.Settings, tmp_path: Path, text: str) -> settings.Settings:
    path = tmp_path / "list.toml"
    path.write_text(text, encoding="utf-8")
    return dataclasses.replace(lab, datasets_file=path)


def cache_with(lab: settings.Settings, files: dict[str, str]) -> None:
    """The cache as lab_datasets.py leaves it: the files and their index."""
    folder = lab.datasets_cache_dir
    folder.mkdir(parents=True, exist_ok=True)
    for name in files.values():
        (folder / name).write_bytes(b"data")
    index = {n: {"fetcher": f"fetch_{n}", "files": [f]} for n, f in files.items()}
    (folder / datasets.container_side().INDEX).write_text(json.dumps(index), encoding="utf-8")


def test_the_projects_list_names_the_course_fetch(lab: settings.Settings) -> None:
    assert lab.datasets_file == PROJECT_ROOT / "datasets.toml"
    assert datasets.listed(lab) == (
        datasets.Dataset("california_housing", "fetch_california_housing"),
    )


def test_an_empty_setting_means_no_datasets(
    monkeypatch: pytest.MonkeyPatch, lab: settings.Settings
) -> None:
    monkeypatch.setenv("LAB_DATASETS_FILE", "")
    empty = settings.load()
    assert empty.datasets_file is None and datasets.listed(empty) == ()
    assert datasets.describe(empty) == "none listed (LAB_DATASETS_FILE)"


def test_a_missing_list_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, lab: settings.Settings
) -> None:
    monkeypatch.setenv("LAB_DATASETS_FILE", "no-such.toml")
    with pytest.raises(LabError, match=r"^LAB_DATASETS_FILE='no-such.toml': no such file: "):
        settings.load()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[a\n", "is not valid TOML"),
        ("a = 1\n", "'a' is not a table"),
        ('["bad name"]\nfetcher = "fetch_x"\n', "is not a usable name"),
        ('[a]\nfetcher = "fetch_x"\ncolour = 1\n', "unknown key 'colour'"),
        ("[a]\n", 'has no fetcher = "fetch_..."'),
        ('[a]\nfetcher = "load_iris"\n', 'has no fetcher = "fetch_..."'),
        ('[a]\nfetcher = "fetch_x"\nargs = { data_home = "/x" }\n', "without data_home"),
        ('[a]\nfetcher = "fetch_x"\nurl = "http://m/x"\n', "gives url or sha256 alone"),
        ('[a]\nfetcher = "fetch_x"\nurl = "ftp://m"\nsha256 = "' + "0" * 64 + '"\n', "not http"),
        ('[a]\nfetcher = "fetch_x"\nurl = "http://m"\nsha256 = "abc"\n', "not 64 hex digits"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_setting_and_the_fix(
    lab: settings.Settings, tmp_path: Path, text: str, problem: str
) -> None:
    bad = with_list(lab, tmp_path, text)
    with pytest.raises(LabError) as caught:
        datasets.listed(bad)
    message = str(caught.value)
    assert message.startswith(f"LAB_DATASETS_FILE ({bad.datasets_file}): "), message
    assert problem in message and "\n" not in message
    assert message.rsplit(": ", 1)[1], "ends with the fix"


def test_report_tells_cached_from_missing(lab: settings.Settings, tmp_path: Path) -> None:
    two = with_list(lab, tmp_path, '[a]\nfetcher = "fetch_a"\n[b]\nfetcher = "fetch_b"\n')
    assert datasets.report(two) == ([], ["a", "b"])
    assert datasets.bundle_dir(two) is None, "nothing fetched: nothing to bundle"
    cache_with(two, {"a": "a.pkz", "c": "c.pkz"})
    assert datasets.report(two) == (["a"], ["b"])
    assert datasets.describe(two).startswith("cached: a; not cached: b (")
    assert datasets.bundle_dir(two) == two.datasets_cache_dir
    (two.datasets_cache_dir / "a.pkz").unlink()
    assert datasets.report(two) == ([], ["a", "b"]), "an indexed file gone: not cached"


@pytest.fixture
def docker(fake_docker: FakeDocker) -> FakeDocker:
    return fake_docker


def test_fetch_runs_the_fetcher_in_the_image_for_the_missing_ones_only(
    lab: settings.Settings, tmp_path: Path, docker: FakeDocker
) -> None:
    two = with_list(lab, tmp_path, '[a]\nfetcher = "fetch_a"\n[b]\nfetcher = "fetch_b"\n')
    two = dataclasses.replace(two, ca_bundle=tmp_path / "ca.pem")
    cache_with(two, {"a": "a.pkz"})
    docker.on(r"^docker run ", 'progress\n{"b": null}\n')
    assert datasets.fetch(two, IMAGE) == ["Datasets: fetched b"]
    [command] = docker.argvs
    assert command[:3] == ["docker", "run", "--rm"]
    assert command[3:5] == ["--network", "host"], "the host's loopback and proxies"
    assert f"{two.datasets_cache_dir}:{datasets.CACHE_MOUNT}" in command
    assert f"{tmp_path / 'ca.pem'}:{datasets.CA_MOUNT}:ro" in command
    script = command.index(datasets.CONTAINER_SCRIPT)
    assert command[script - 1] == IMAGE and command[script + 1] == "fetch"
    specs = json.loads(command[script + 2])
    assert specs == {"b": {"fetcher": "fetch_b", "args": {}, "url": None, "sha256": None}}
    assert command[script + 3 :] == ["--ca", datasets.CA_MOUNT]


def test_nothing_to_fetch_runs_nothing(lab: settings.Settings, docker: FakeDocker) -> None:
    cache_with(lab, {"california_housing": "cal_housing_py3.pkz"})
    assert datasets.fetch(lab, IMAGE) == []
    assert docker.calls == []  # any call would also have failed: no rule matches it


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Result((), 0, '{"california_housing": "URLError: <urlopen error no route>"}'), "no route"),
        (Result((), 125, "", "Unable to find image"), "Unable to find image"),
        (DockerError("`docker run` did not finish within 900 s"), "did not finish within"),
        (Result((), 0, "not json"), "printed no result"),
    ],
)
def test_a_failed_fetch_is_one_warning_line_per_dataset(
    lab: settings.Settings, docker: FakeDocker, answer: Any, reason: str
) -> None:
    docker.on(r"^docker run ", answer)
    [line] = datasets.fetch(lab, IMAGE)
    assert line.startswith(
        "warning: dataset california_housing (fetch_california_housing) could not be fetched ("
    )
    assert reason in line
    assert line.endswith("run `invoke datasets` where it is reachable")


def test_a_bundle_carries_the_cache_and_load_puts_it_back(
    lab: settings.Settings, tmp_path: Path
) -> None:
    cache_with(lab, {"california_housing": "cal_housing_py3.pkz"})
    path = tmp_path / "lab.bundle"
    entry = bundle.Course(lab.repo_url, "dev", None, (), None)
    images = tuple(
        bundle.Image(s, f"mlflow-lab/{s}:latest", f"sha256:{s[0] * 64}", "x")
        for s in ("mlflow", "jupyter")
    )
    with path.open("wb") as out:
        bundle.write_bundle(
            out, bundle.CODECS[0], [b"images"], [6], images, entry, None,
            datasets_dir=datasets.bundle_dir(lab),
        )  # fmt: skip
    manifest = bundle.verify(path, bundle.Progress("checked", stream=io.StringIO()))
    assert manifest.members["datasets/cal_housing_py3.pkz"].sha256 == (
        "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"  # sha256 of b"data"
    )
    # What load uses is the copy staged while it was checked.
    stage = tmp_path / "stage"
    stage.mkdir()
    bundle.verify(path, bundle.Progress("checked", stream=io.StringIO()), stage=stage)
    wiped = dataclasses.replace(lab, state_dir=tmp_path / "wiped")
    bundle._replace_tree(stage / datasets.BUNDLE_PREFIX, wiped.datasets_cache_dir)
    assert datasets.report(wiped) == (["california_housing"], [])
