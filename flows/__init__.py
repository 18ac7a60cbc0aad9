"""Prefect flows of asg; importing this package sets safe offline defaults for Prefect and MLflow."""

import os

for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

if os.environ.get("PREFECT_HOME"):
    # Prefect's temporary server cannot create its SQLite file in a missing folder.
    os.makedirs(os.path.expanduser(os.environ["PREFECT_HOME"]), exist_ok=True)

from tasks.freed_memory import cap_malloc_arenas  # noqa: E402 - after the environment defaults above

cap_malloc_arenas()  # before the round's threads start (see tasks/freed_memory.py)
