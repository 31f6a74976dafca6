"""The classroom server: JupyterHub and one shared MLflow for a whole class, on Docker Swarm."""
