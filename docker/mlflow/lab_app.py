"""The tracking server's ASGI app: MLflow's own, with the lab's request-thread bound.

anyio's default thread limiter (which runs MLflow's Flask handlers) only exists inside
the running event loop, so the bound is applied on the first ASGI call: the lifespan
start-up, before any request is served.
"""

import logging
import os
from typing import Any

import anyio.to_thread
from mlflow.server.fastapi_app import app as mlflow_app

_REQUEST_THREADS = int(os.environ.get("LAB_MLFLOW_REQUEST_THREADS", "40"))
_bounded = False


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _bounded
    if not _bounded:
        anyio.to_thread.current_default_thread_limiter().total_tokens = _REQUEST_THREADS
        _bounded = True
    await mlflow_app(scope, receive, send)


class HealthCheckFilter(logging.Filter):
    """Drops the access-log lines of the container's own 1 s health probe."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/health HTTP/1.0" not in record.getMessage()
