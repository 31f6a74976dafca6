#!/bin/sh
# Resolves the class images' exact versions; run by `invoke lock --classroom` in a
# throwaway container of the lab's base image, with the project at /src (read-only),
# the build folder at /build (CA bundle) and the results written to /out.
#
#   /out/classroom-constraints.txt  hub + class MLflow server, resolved together in one
#                                   venv (one pin per package for both images)
#   /out/notebook-constraints.txt   what the student servers add to the lab's jupyter
#                                   image (jupyterhub-singleuser), resolved against the
#                                   lab's own pins so nothing of the lab's changes
#   /out/package-lock.json          the proxy's npm tree
#
# Usage: lock.sh MLFLOW_VERSION
set -eu
mlflow_version=$1
cat /etc/ssl/certs/ca-certificates.crt /build/ca-bundle.pem > /tmp/ca.pem
export PIP_CERT=/tmp/ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
reqs() { grep -v '^ *#' "$1" | sed 's/#.*//' | grep -v '^ *$'; }

python3 -m venv /tmp/class
# shellcheck disable=SC2046  # one word per requirement
/tmp/class/bin/pip install -q setuptools \
  "mlflow-skinny==$mlflow_version" "mlflow-tracing==$mlflow_version" \
  $(reqs /src/docker/hub/requirements.txt) $(reqs /src/docker/class-mlflow/requirements.txt) >&2
/tmp/class/bin/pip install -q --no-deps "mlflow==$mlflow_version" >&2
/tmp/class/bin/pip freeze --all | grep '==' | grep -v '^pip==' | sort -f > /out/classroom-constraints.txt

hub_pin=$(grep -i '^jupyterhub==' /out/classroom-constraints.txt)
python3 -m venv /tmp/notebook
/tmp/notebook/bin/pip install -q -c /src/docker/constraints.txt "$hub_pin" >&2
lab_names=$(sed -n 's/==.*//p' /src/docker/constraints.txt | tr 'A-Z_.' 'a-z--')
/tmp/notebook/bin/pip freeze --all | grep '==' | while IFS= read -r pin; do
  name=$(printf '%s' "${pin%%==*}" | tr 'A-Z_.' 'a-z--')
  printf '%s\n' "$lab_names" | grep -qx "$name" || printf '%s\n' "$pin"
done | grep -v '^pip==' | sort -f > /out/notebook-constraints.txt

apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends npm >&2
mkdir -p /tmp/proxy && cp /src/docker/hub/package.json /tmp/proxy/
cd /tmp/proxy && npm config set cafile /tmp/ca.pem >&2 \
  && npm install --package-lock-only --no-audit --no-fund >&2
cp /tmp/proxy/package-lock.json /out/package-lock.json
