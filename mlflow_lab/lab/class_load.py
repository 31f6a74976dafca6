"""A class's load on a tracking server: concurrent clients logging metric batches.

One load for the benchmark (`invoke bench`, figure (d)) and the reliability tests:
every client creates a run and logs BATCHES batches of POINTS_PER_BATCH points, all
clients starting at once, each on its own keep-alive connection.
Runnable by hand: `.venv/bin/python -m mlflow_lab.lab.class_load http://127.0.0.1:8080`.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

CLIENTS = 30
BATCHES = 50
POINTS_PER_BATCH = 10
# A client gives up on one request after this long; it then counts as an error. Well
# above the p99 target, so a slow server shows up as latency rather than as errors.
REQUEST_TIMEOUT_S = 60


class Api:
    """MLflow's REST API over one keep-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=REQUEST_TIMEOUT_S
        )

    def call(self, method: str, path: str, body: dict[str, object] | None = None) -> object:
        """The JSON answer; RuntimeError naming the call on any other status."""
        self.conn.request(
            method,
            f"/api/2.0/mlflow/{path}",
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path.split('?')[0]}: HTTP {response.status} {data[:200]!r}")
        return json.loads(data) if data else {}

    def create_experiment(self) -> str:
        created = self.call("POST", "experiments/create", {"name": f"load-{uuid.uuid4().hex[:8]}"})
        return str(created["experiment_id"])  # type: ignore[index]

    def close(self) -> None:
        self.conn.close()


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)  # of the log-batch calls
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    experiment_id: str = ""
    wall_s: float = 0.0

    @property
    def p99_s(self) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0

    @property
    def points_per_s(self) -> float:
        return len(self.latencies_s) * POINTS_PER_BATCH / self.wall_s if self.wall_s else 0.0

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
    url: str, number: int, batches: int, start: threading.Barrier, result: LoadResult
) -> None:
    api = Api(url)
    try:
        start.wait()
        created = api.call(
            "POST",
            "runs/create",
            {"experiment_id": result.experiment_id, "run_name": f"client-{number}"},
        )
        run_id = str(created["run"]["info"]["run_id"])  # type: ignore[index]
        result.run_ids.append(run_id)  # list.append is atomic: no lock needed
        for batch in range(batches):
            now = int(time.time() * 1000)
            metrics = [
                {"key": "loss", "value": float(step), "timestamp": now, "step": step}
                for step in range(batch * POINTS_PER_BATCH, (batch + 1) * POINTS_PER_BATCH)
            ]
            began = time.perf_counter()
            try:
                api.call("POST", "runs/log-batch", {"run_id": run_id, "metrics": metrics})
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                result.errors.append(str(exc))
                api.close()  # a fresh connection for the next batch
                continue
            result.latencies_s.append(time.perf_counter() - began)
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        result.errors.append(str(exc))  # counted, not raised: the figure is the error count
    finally:
        api.close()


def run_load(url: str, clients: int = CLIENTS, batches: int = BATCHES) -> LoadResult:
    """Every client creates a run and logs `batches` batches; all start at once."""
    api = Api(url)
    try:
        result = LoadResult(experiment_id=api.create_experiment())
    finally:
        api.close()
    start = threading.Barrier(clients + 1)
    threads = [
        threading.Thread(target=_client, args=(url, n, batches, start, result))
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
    api = Api(url)
    steps: list[int] = []
    token = ""
    try:
        while True:
            query = {"run_id": run_id, "metric_key": "loss", "max_results": "25000"}
            if token:
                query["page_token"] = token
            page = api.call("GET", f"metrics/get-history?{urllib.parse.urlencode(query)}")
            steps += [int(m["step"]) for m in page.get("metrics", [])]  # type: ignore[attr-defined]
            token = page.get("next_page_token", "")  # type: ignore[attr-defined]
            if not token:
                return steps
    finally:
        api.close()


if __name__ == "__main__":
    target = sys.argv[1].rstrip("/")
    load = run_load(target)
    lost = sum(BATCHES * POINTS_PER_BATCH - len(stored_points(target, r)) for r in load.run_ids)
    print(json.dumps({**load.summary(), "runs": len(load.run_ids), "lost_points": lost}))
