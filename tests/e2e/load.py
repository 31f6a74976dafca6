"""A class's load on the tracking server: concurrent clients logging metric batches.

Used by the reliability tests, and runnable by hand to measure a server:
`.venv/bin/python -m tests.e2e.load http://127.0.0.1:18080`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import requests

CLIENTS = 30
BATCHES = 50
POINTS_PER_BATCH = 10
# A client gives up on one request after this long; it then counts as an error. Well
# above the p99 target, so a slow server shows up as latency rather than as errors.
REQUEST_TIMEOUT_S = 60


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    experiment_id: str = ""
    wall_s: float = 0.0

    @property
    def p99_s(self) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0

    def summary(self) -> dict[str, object]:
        ordered = sorted(self.latencies_s)
        return {
            "requests": len(ordered),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "p50_s": round(ordered[len(ordered) // 2], 3) if ordered else None,
            "p99_s": round(self.p99_s, 3),
            "max_s": round(ordered[-1], 3) if ordered else None,
            "wall_s": round(self.wall_s, 1),
        }


def _client(
    url: str,
    experiment_id: str,
    number: int,
    start: threading.Barrier,
    result: LoadResult,
    lock: threading.Lock,
) -> None:
    session = requests.Session()

    def post(path: str, body: dict[str, object]) -> dict[str, object] | None:
        began = time.perf_counter()
        try:
            response = session.post(
                f"{url}/api/2.0/mlflow/{path}", json=body, timeout=REQUEST_TIMEOUT_S
            )
            elapsed = time.perf_counter() - began
            ok = response.status_code == 200
            detail = f"{path}: HTTP {response.status_code} {response.text[:200]}"
        except requests.RequestException as exc:
            elapsed = time.perf_counter() - began
            ok, detail = False, f"{path}: {exc}"
        with lock:
            result.latencies_s.append(elapsed)
            if not ok:
                result.errors.append(detail)
        return response.json() if ok else None

    start.wait()
    created = post(
        "runs/create",
        {"experiment_id": experiment_id, "run_name": f"client-{number}", "start_time": 0},
    )
    if created is None:
        return
    run_id = str(created["run"]["info"]["run_id"])  # type: ignore[index]
    with lock:
        result.run_ids.append(run_id)
    for batch in range(BATCHES):
        now = int(time.time() * 1000)
        metrics = [
            {"key": "loss", "value": float(step), "timestamp": now, "step": step}
            for step in range(batch * POINTS_PER_BATCH, (batch + 1) * POINTS_PER_BATCH)
        ]
        post("runs/log-batch", {"run_id": run_id, "metrics": metrics})
    session.close()


def run_load(url: str, clients: int = CLIENTS) -> LoadResult:
    """Every client creates a run and logs BATCHES batches; all start at once."""
    created = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": f"load-{uuid.uuid4().hex[:8]}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    created.raise_for_status()
    result = LoadResult(experiment_id=str(created.json()["experiment_id"]))
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    threads = [
        threading.Thread(target=_client, args=(url, result.experiment_id, n, start, result, lock))
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    result.wall_s = time.monotonic() - began
    return result


def stored_points(url: str, run_id: str) -> list[int]:
    """The steps of every `loss` point the server has for the run, read back page by page."""
    steps: list[int] = []
    token = ""
    while True:
        params = {"run_id": run_id, "metric_key": "loss", "max_results": "25000"}
        if token:
            params["page_token"] = token
        page = requests.get(
            f"{url}/api/2.0/mlflow/metrics/get-history", params=params, timeout=60
        ).json()
        steps += [int(m["step"]) for m in page.get("metrics", [])]
        token = page.get("next_page_token", "")
        if not token:
            return steps


if __name__ == "__main__":
    load = run_load(sys.argv[1].rstrip("/"))
    lost = sum(
        BATCHES * POINTS_PER_BATCH - len(stored_points(sys.argv[1], r)) for r in load.run_ids
    )
    print(json.dumps({**load.summary(), "runs": len(load.run_ids), "lost_points": lost}))
