#!/bin/sh
# The host's dataset cache (LAB_STATE_DIR/datasets, mounted read-only at /opt/lab-datasets)
# copied into the student's scikit-learn data home, which stays writable so fetching a
# dataset the cache lacks still works online. Files already there are kept unless the
# cache has a newer copy. Run at start (start.sh) and by the host after it fetched.
set -eu
src=/opt/lab-datasets
dest=${SCIKIT_LEARN_DATA:?SCIKIT_LEARN_DATA is not set}
mkdir -p "$dest"
if [ -d "$src" ] && [ -n "$(ls -A "$src" 2>/dev/null)" ]; then
  cp -R -p -u "$src/." "$dest/"
fi
