#!/bin/sh
# Resolves the lab's images' exact versions; run by `invoke lock --with-images` in a
# throwaway container of the base image, with the build folder at /build (CA bundle,
# wheels). Prints `pip freeze` of a venv holding every requirement of both images.
#
# Usage: lock.sh EXTRA_INDEX_URL REQUIREMENT...   (EXTRA_INDEX_URL may be empty)
set -eu
index=$1
shift
cat /etc/ssl/certs/ca-certificates.crt /build/ca-bundle.pem > /tmp/ca.pem
python3 -m venv /tmp/v
# The wheels folder holds the CPU torch build; the index is its fallback.
PIP_CERT=/tmp/ca.pem /tmp/v/bin/pip install -q --progress-bar off --find-links /build/wheels \
  ${index:+--extra-index-url "$index"} setuptools "$@" >&2
/tmp/v/bin/pip freeze --all
