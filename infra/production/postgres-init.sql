-- One PostgreSQL server, two databases: Prefect's (POSTGRES_DB) and MLflow's tracking store.
CREATE DATABASE mlflow;
