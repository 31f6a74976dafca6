"""HTTP to the lab on this machine.

Never through a proxy from the environment: classroom and corporate machines often
set HTTP_PROXY without 127.0.0.1 in NO_PROXY, and a proxy cannot reach the lab's
loopback ports anyway.
"""

from __future__ import annotations

import urllib.error
import urllib.request

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str, timeout: float = 2) -> bool:
    """Whether `url` answers 200 within `timeout` seconds."""
    try:
        with DIRECT.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
