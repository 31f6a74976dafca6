"""jupyterhub-singleuser for a student's server, asking Docker's DNS for the hub every time.

The server calls the hub back (the login's OAuth exchange, token checks, activity) with
aiohttp, which resolves with aiodns (c-ares) when that is installed, as it is here, and
c-ares keeps answers for their TTL: Docker's DNS gives the hub's service name 600 s. A
hub restarted by a redeploy (a setting, a certificate, a new image) gets a new address,
and every student whose server kept running was sent to the old one for ten minutes: their
login hung until it timed out. getaddrinfo asks Docker's DNS every time (the hub itself
resolves the same way: docker/hub/jupyterhub_config.py).
"""

from __future__ import annotations

import sys

import aiohttp.connector
import aiohttp.resolver

aiohttp.resolver.DefaultResolver = aiohttp.resolver.ThreadedResolver
aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver

from jupyterhub.singleuser import main  # noqa: E402  (after the resolver is chosen)

if __name__ == "__main__":
    sys.exit(main())
