#!/bin/sh
# A student's server in the class, started by the hub (SwarmSpawner) with the student's
# MLflow login and workspace in its environment.
#
# 1. 127.0.0.1:8080 forwards to the class's MLflow, as in the lab (docker/jupyter/start.sh):
#    the lab guide's tracking URI works unchanged.
# 2. The bundled lab and the course repo are placed in the workspace by the lab's own
#    never-lose-work rules (workspace_sync.py), at every start: a new image's lab or a
#    newly fetched course repo reaches the student at their next start.
# 3. jupyterhub-singleuser (class_singleuser.py: it finds a restarted hub at once): JupyterLab
#    behind the hub's login.
set -eu
upstream=${LAB_MLFLOW_UPSTREAM:-mlflow:8080}
(
  while true; do
    socat TCP-LISTEN:8080,bind=127.0.0.1,fork,reuseaddr "TCP:${upstream}" || true
    sleep 1
  done
) &
workspace=/home/student/workspace
# Where the lab's image keeps its tools and the bundled lab (docker/mlflow and
# docker/jupyter Dockerfiles): read from the image, so a moved tool cannot go unnoticed.
tools=${LAB_TOOLS:?the lab image sets LAB_TOOLS}
bundled=${LAB_BUNDLED_LAB:?the lab image sets LAB_BUNDLED_LAB}
sync() {
  # A failed placement must not keep the student out of their server: say it, go on.
  python3 "$tools/workspace_sync.py" "$@" 2>&1 | tail -n 1 | sed 's/^/workspace: /' || true
}
sync --source "$bundled" --branch main --dest "$workspace/mlflow-tracking-lab"
if [ -n "${LAB_COURSE_CACHE:-}" ] && [ -d "/opt/course-upstream/${LAB_COURSE_CACHE}" ]; then
  sync --source "/opt/course-upstream/${LAB_COURSE_CACHE}" --branch "${LAB_COURSE_BRANCH:-dev}" \
    --dest "$workspace/${LAB_COURSE_NAME:-course}"
fi
exec python3 "$tools/class_singleuser.py" "$@"
