"""`invoke bench --classroom`'s side inside a student's server (and an all-in-one container).

Run as `python3 class_bench.py COMMAND ARGS...`; each command prints one JSON document.

- `lab SCRIPT`: the lab script, as a student runs it top to bottom, with every HTTP call
  the MLflow client makes timed. The timing wraps `requests.Session.request`, the one
  call MLflow's REST client and its artifact uploads and downloads go through (its retries
  happen inside it, so a retried call counts with its whole wait, as the student feels it).
  Wrapping `mlflow.utils.rest_utils.http_request` would miss the modules that imported
  the function by name before the wrap.
- `ready URL...`: wait until each URL answers below 500 (an all-in-one container's
  MLflow and JupyterLab); the seconds it took.
- `runs EXPERIMENT WORKSPACE...`: the ids of the experiment's runs (all lifecycle stages)
  in each workspace, as the login in the environment sees them (the instructor's, whose
  password comes on stdin, never in argv).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# An answer the student sees as a failure of the server, not of their code: a 4xx such as
# the 404 of `get_experiment_by_name` for an experiment not made yet is part of the lab.
SERVER_FAILURE = 500
THROTTLED = 429
RUNS_CREATE = "/runs/create"


@dataclass
class Timing:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    slowest: list[tuple[str, float]] = field(default_factory=list)  # (call, s), top 3

    def record(self, what: str, seconds: float) -> None:
        self.latencies_s.append(round(seconds, 4))
        self.slowest = sorted([*self.slowest, (what, round(seconds, 3))], key=lambda s: -s[1])[:3]


def _path(url: str) -> str:
    return url.split("?", 1)[0].split("/api/", 1)[-1]


def timed_request(original: Callable[..., Any], timing: Timing) -> Callable[..., Any]:
    """`requests.Session.request`, each call's wall time and failure recorded in `timing`."""

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        what = f"{method} {_path(url)}"
        began = time.perf_counter()
        try:
            response = original(self, method, url, *args, **kwargs)
        except Exception as exc:
            timing.record(what, time.perf_counter() - began)
            timing.errors.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
            raise
        timing.record(what, time.perf_counter() - began)
        status = int(response.status_code)
        if status >= SERVER_FAILURE or status == THROTTLED:
            timing.errors.append(f"{what}: HTTP {status}")
        elif status == 200 and url.split("?", 1)[0].endswith(RUNS_CREATE):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                timing.run_ids.append(str(response.json()["run"]["info"]["run_id"]))
        return response

    return request


def run_lab(script: Path) -> dict[str, Any]:
    """Run the script in a fresh folder, its own output discarded; the timings as a dict."""
    import requests

    timing = Timing()
    original = requests.Session.request
    requests.Session.request = timed_request(original, timing)  # type: ignore[method-assign]
    failed = ""
    began = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory() as folder,
            contextlib.chdir(folder),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            runpy.run_path(str(script), run_name="__main__")
    except BaseException as exc:  # the figure is whether the lab ran; the reason goes along
        failed = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        requests.Session.request = original  # type: ignore[method-assign]
    return {**asdict(timing), "failed": failed, "wall_s": round(time.perf_counter() - began, 2)}


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return int(response.status) < SERVER_FAILURE
    except urllib.error.HTTPError as exc:
        return exc.code < SERVER_FAILURE
    except OSError:
        return False


def wait_ready(urls: Sequence[str], timeout: float) -> dict[str, Any]:
    began = time.monotonic()
    waiting = list(urls)
    while waiting and time.monotonic() - began < timeout:
        waiting = [u for u in waiting if not _answers(u)]
        if waiting:
            time.sleep(0.2)
    return {"ready": not waiting, "waiting": waiting, "s": round(time.monotonic() - began, 2)}


def run_ids(experiment: str, workspaces: Sequence[str], password: str) -> dict[str, Any]:
    """Each workspace's run ids; the 3.13 client reads MLFLOW_WORKSPACE at every request."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    client = MlflowClient()
    found: dict[str, list[str]] = {}
    for workspace in workspaces:
        os.environ["MLFLOW_WORKSPACE"] = workspace
        ids: list[str] = []
        experiment_found = client.get_experiment_by_name(experiment)
        token: str | None = None
        while experiment_found is not None:
            page = client.search_runs(
                [experiment_found.experiment_id],
                run_view_type=ViewType.ALL,
                max_results=1000,
                page_token=token,
            )
            ids += [r.info.run_id for r in page]
            token = page.token
            if not token:
                break
        found[workspace] = ids
    return {"runs": found}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="class_bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("lab").add_argument("script", type=Path)
    ready = commands.add_parser("ready")
    ready.add_argument("--timeout", type=float, default=300)
    ready.add_argument("urls", nargs="+")
    runs = commands.add_parser("runs")
    runs.add_argument("experiment")
    runs.add_argument("workspaces", nargs="+")
    args = parser.parse_args(argv)
    found: object
    if args.command == "lab":
        found = run_lab(args.script)
    elif args.command == "ready":
        found = wait_ready(args.urls, args.timeout)
    else:
        found = run_ids(args.experiment, args.workspaces, sys.stdin.read().strip())
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
