"""Where asg keeps its data, read from the environment with local defaults.

| variable | default | what |
|---|---|---|
| ASG_HOME | ./asg_home | root of every local default below |
| ASG_LANCEDB_URI | $ASG_HOME/lancedb | LanceDB database (a folder or s3://bucket/prefix) |
| ASG_OBJECTS_URI | $ASG_HOME/objects | checkpoints and other objects (a folder or s3://…) |
| MLFLOW_TRACKING_URI | sqlite:///$ASG_HOME/mlflow.db | MLflow tracking store |
| ASG_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION | unset | S3 access |
| PREFECT_API_URL | unset (a temporary local server per command) | Prefect server (checked before compute) |
| ASG_DEVICE, ASG_DTYPE | unset (CPU, float32) | where adapters that support it run, e.g. cuda and bfloat16 |
| ASG_TASK_RUNNER, ASG_DASK_ADDRESS, ASG_DASK_WORKERS, ASG_RAY_ADDRESS | inprocess | where shards run (flows/task_runners.py) |
| ASG_TORCH_THREADS | unset | torch CPU threads of a process that loads a backbone (Dask workers) |
| ASG_LEASE_TTL_S | 120 | seconds a round's lease outlives its last renewal (storage/leases.py) |
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a store namespace: one path segment


def has_credentials(url: str) -> bool:
    """True when a URL carries a user name or password (`https://user:token@host/...`).

    >>> has_credentials("https://user:token@host/x"), has_credentials("s3://bucket/x"), has_credentials("/a@b")
    (True, False, False)
    """
    return "://" in url and bool(urlsplit(url).username or urlsplit(url).password)


def refuse_credentials(url: str, what: str = "source") -> str:
    """`url` unchanged; ValueError (naming it without its secrets) when it carries credentials, which would be
    stored wherever it goes (flow parameters, MLflow params)."""
    if has_credentials(url):
        raise ValueError(f"{what} {redacted(url)} carries credentials in its URL; give them through the environment "
                         "instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3)")
    return url


def redacted(url: str) -> str:
    """`url` without its user name and password, for messages and logs (other text is returned as given).

    >>> redacted("https://user:token@mlflow.example:5000/x?y=1"), redacted("sqlite:///tmp/m.db")
    ('https://***@mlflow.example:5000/x?y=1', 'sqlite:///tmp/m.db')
    """
    if not has_credentials(url):
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, "***@" + parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, ""))


@dataclass(frozen=True)
class Settings:
    home: Path
    lancedb_uri: str
    objects_uri: str
    mlflow_uri: str
    s3_endpoint_url: str | None = None
    device: str | None = None
    dtype: str | None = None
    prefect_api_url: str | None = None
    lease_ttl_s: float = 120.0

    @classmethod
    def from_env(cls) -> "Settings":
        home = Path(os.environ.get("ASG_HOME", "asg_home")).resolve()
        return cls(
            home=home,
            lancedb_uri=os.environ.get("ASG_LANCEDB_URI", str(home / "lancedb")),
            objects_uri=os.environ.get("ASG_OBJECTS_URI", str(home / "objects")),
            mlflow_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            s3_endpoint_url=os.environ.get("ASG_S3_ENDPOINT_URL"),
            device=os.environ.get("ASG_DEVICE") or None,
            dtype=os.environ.get("ASG_DTYPE") or None,
            prefect_api_url=os.environ.get("PREFECT_API_URL") or None,
            lease_ttl_s=float(os.environ.get("ASG_LEASE_TTL_S") or 120.0),
        )

    def within(self, namespace: str) -> "Settings":
        """These settings with the tables and objects of `namespace` (its own LanceDB and object store under
        the store's URIs; how `asg experiment` keeps its arms apart). The empty namespace is the store itself.

        >>> s = Settings(Path("/h"), "/h/lancedb", "s3://b/objects", "")
        >>> s.within("control-seed0").lancedb_uri, s.within("control-seed0").objects_uri
        ('/h/lancedb/control-seed0', 's3://b/objects/control-seed0')
        >>> s.within("") is s
        True
        """
        if not namespace:
            return self
        if not NAMESPACE.fullmatch(namespace):
            raise ValueError(f"store namespace {namespace!r} must be letters, digits, '.', '_' or '-' "
                             "(at most 100, starting with a letter or digit)")
        return replace(self, lancedb_uri=f"{self.lancedb_uri.rstrip('/')}/{namespace}",
                       objects_uri=f"{self.objects_uri.rstrip('/')}/{namespace}")

    def fsspec_options(self) -> dict:
        """Options for fsspec/s3fs (empty for local paths)."""
        if not self.s3_endpoint_url:
            return {}
        return {"key": os.environ.get("AWS_ACCESS_KEY_ID"), "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
                "endpoint_url": self.s3_endpoint_url}

    def lancedb_options(self) -> dict | None:
        """storage_options for lancedb.connect (None for local paths)."""
        if not self.s3_endpoint_url:
            return None
        return {"aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", ""),
                "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                "aws_endpoint": self.s3_endpoint_url,
                "aws_region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), "allow_http": "true"}
