"""Read-only views of the LanceDB tables and MLflow runs (the dashboard lands with its own issue)."""
