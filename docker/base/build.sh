#!/bin/sh
# Builds the lab's own Python base image from Debian packages, for machines that
# cannot pull the upstream python image (no registry, offline classroom).
# Usage: build.sh IMAGE_TAG
# Needs mmdebstrap (Debian package) and a Docker engine; reads LAB_DEBIAN_MIRROR.
set -eu
tag=${1:?usage: build.sh IMAGE_TAG}
mirror=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${LAB_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm

# python3.11 matches the upstream python:3.11 images, so wheels and the venv
# layout are the same whichever base is used.
mmdebstrap \
  --variant=minbase \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$suite" - \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security_mirror $suite-security main" \
| docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "mlflow-lab base: Debian $suite minbase + python3" \
  - "$tag"
