"""Run a notebook top to bottom in the `mlops` kernel, inside the Jupyter container.

    python3 run_notebook.py NOTEBOOK.ipynb [TIMEOUT_S]

Copied into the container by the e2e tests. Runs in the notebook's folder, as
JupyterLab does; prints one JSON document: the errors (none when it ran through) and
the text the last cell printed, which the test notebooks use for their findings.
"""

import contextlib
import json
import os
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(path: str, timeout: int) -> None:
    os.chdir(os.path.dirname(os.path.abspath(path)))
    nb = nbformat.read(path, as_version=4)
    # A failing cell keeps its error output, reported below.
    with contextlib.suppress(CellExecutionError):
        NotebookClient(nb, timeout=timeout, kernel_name="mlops").execute()
    errors = [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    last = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []))
    print(json.dumps({"errors": errors, "last": last}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300)
