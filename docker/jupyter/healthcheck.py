"""Container health: JupyterLab answers and the MLflow forward is listening."""

import socket
import sys
import urllib.request

try:
    with urllib.request.urlopen("http://127.0.0.1:8888/api", timeout=2) as response:
        if response.status != 200:
            sys.exit(1)
    socket.create_connection(("127.0.0.1", 8080), timeout=2).close()
except OSError:
    sys.exit(1)
