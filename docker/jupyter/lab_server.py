"""Start JupyterLab as `jupyter lab` does, with Python's cyclic collector off while it loads.

Loading the server and its extensions creates objects that all live on, and the
collector would scan them again and again for nothing: a quarter of the start-up on
2 cores. It is on again, with those objects frozen out of later collections, before
the server handles its first request. Kernels are processes of their own: untouched.
"""

import gc
import sys

gc.disable()

from jupyterlab.labapp import LabApp  # noqa: E402  (loaded with the collector off)


def main() -> None:
    server = LabApp.initialize_server(argv=sys.argv[1:])
    gc.enable()
    gc.freeze()
    server.start()


if __name__ == "__main__":
    main()
