"""Bound the tracking server's request threads (imported at start-up via PYTHONPATH).

serve.py puts this folder on PYTHONPATH for the server only. uvicorn runs MLflow's Flask
handlers on anyio's default thread limiter, 40 threads per worker. On SQLite every write
waits for one lock, and 40 threads polling for it (SQLite's busy handler sleeps and
retries, newcomers first) while sharing one GIL gave a class of 30 clients a p99 above
2 s and stalls up to 8 s; with a handful of threads the others queue fairly in anyio and
the same load has a p99 under 1 s at the same throughput. anyio offers no setting for
the default limiter outside a running event loop, hence this hook on its backend (anyio
is pinned in docker/constraints.txt).
"""

import os

_THREADS = os.environ.get("LAB_MLFLOW_REQUEST_THREADS")

if _THREADS:
    from anyio._backends._asyncio import AsyncIOBackend

    _default_limiter = AsyncIOBackend.current_default_thread_limiter.__func__

    def _bounded_limiter(cls: type) -> object:
        limiter = _default_limiter(cls)
        limiter.total_tokens = int(_THREADS)
        return limiter

    AsyncIOBackend.current_default_thread_limiter = classmethod(_bounded_limiter)
