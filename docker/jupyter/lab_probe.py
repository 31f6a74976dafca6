"""`invoke verify`'s probes inside the Jupyter container: what a notebook would see.

Run as `python3 lab_probe.py COMMAND ARGS...`; each command prints one JSON document.
Standard library only, except `kernel-run` (websocket-client comes with Jupyter).
Nothing is written anywhere: a kernel is started, used and shut down; files are read.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

JUPYTER_ADDRESS = "127.0.0.1:8888"


def notebook_get(url: str, timeout: float) -> dict[str, Any]:
    """A GET with the proxy settings the notebooks get: what a notebook's first call sees."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read(400)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(400)
    except OSError as exc:
        status, body = 0, str(getattr(exc, "reason", exc)).encode()
    return {"status": status, "body": body.decode("utf-8", "replace")}


def _jupyter(method: str, path: str, timeout: float, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {
        "Authorization": "token " + os.environ["JUPYTER_TOKEN"],
        "Content-Type": "application/json",
    }
    request = urllib.request.Request(
        f"http://{JUPYTER_ADDRESS}{path}", data=data, method=method, headers=headers
    )
    # The server is local: a proxy from the environment must not see this.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def kernel_run(kernel_name: str, code: str, timeout: float) -> dict[str, Any]:
    """Start a kernel through the server's REST API, run code over its websocket, stop it."""
    import websocket  # only this probe needs it

    deadline = time.monotonic() + timeout
    kernel = _jupyter("POST", "/api/kernels", timeout, {"name": kernel_name})
    result: dict[str, Any] = {"kernel": kernel["name"], "status": "timeout", "output": ""}
    try:
        ws = websocket.create_connection(
            f"ws://{JUPYTER_ADDRESS}/api/kernels/{kernel['id']}/channels",
            header=["Authorization: token " + os.environ["JUPYTER_TOKEN"]],
            timeout=timeout,
        )
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "verify",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "",
        }
        content = {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        message = {"header": header, "parent_header": {}, "metadata": {}, "buffers": []}
        ws.send(json.dumps({**message, "channel": "shell", "content": content}))
        output: list[str] = []
        while time.monotonic() < deadline:
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            reply = json.loads(ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = reply["msg_type"], reply["content"]
            if kind == "stream":
                output.append(body["text"])
            elif kind == "error":
                output.append(f"{body['ename']}: {body['evalue']}")
            elif kind == "execute_reply":
                result.update(status=body["status"], output="".join(output).strip())
                break
        ws.close()
    except websocket.WebSocketTimeoutException:
        pass
    finally:
        _jupyter("DELETE", f"/api/kernels/{kernel['id']}", timeout)
    return result


def artifact_view(mount: str, relative: str, expected: str) -> dict[str, Any]:
    """Is `mount` a read-only mount, and does it show the artifact just uploaded?"""
    # A volume on the same file system as its parent is invisible to os.path.ismount.
    options: list[str] | None = None
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields[4] == mount:
                options = fields[5].split(",")
    found: dict[str, Any] = {
        "mounted": options is not None,
        "readonly": "ro" in (options or []),
        "same": None,
    }
    if relative:
        try:
            with open(os.path.join(mount, relative), encoding="utf-8") as handle:
                found["same"] = handle.read() == expected
        except OSError:
            found["same"] = False
    return found


def missing_files(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if not os.path.isfile(os.path.join(folder, name))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab_probe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("notebook-get")
    get.add_argument("url")
    get.add_argument("timeout", type=float)
    run = commands.add_parser("kernel-run")
    run.add_argument("kernel")
    run.add_argument("code")
    run.add_argument("timeout", type=float)
    view = commands.add_parser("artifact-view")
    view.add_argument("mount")
    view.add_argument("relative")
    view.add_argument("expected")
    files = commands.add_parser("missing-files")
    files.add_argument("folder")
    files.add_argument("names", help="a JSON list of file names")
    args = parser.parse_args(argv)
    found: object
    if args.command == "notebook-get":
        found = notebook_get(args.url, args.timeout)
    elif args.command == "kernel-run":
        found = kernel_run(args.kernel, args.code, args.timeout)
    elif args.command == "artifact-view":
        found = artifact_view(args.mount, args.relative, args.expected)
    else:
        found = missing_files(args.folder, json.loads(args.names))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
