"""`docker -H HOST ...` for the tests' own Docker engines (second_engine, worker_engine)."""

from __future__ import annotations

import subprocess


class DockerHost:
    """An engine the tests started, reached at `host` (its DOCKER_HOST)."""

    host: str

    def docker(
        self, *args: str, stdin: bytes | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """The CLI against this engine; its output as text, whatever (`docker save`'s
        images, say) goes in."""
        done = subprocess.run(
            ["docker", "-H", self.host, *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
