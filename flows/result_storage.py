"""Where Prefect persists stage results (what a retried flow run reads back as `Cached`).

Locally they go to $PREFECT_HOME/storage. For an object store, save a remote-file-system block once
and point PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK at it (workers and `asg serve` read it):

    asg result-storage s3://my-bucket/prefect-results
    export PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=remote-file-system/asg-results

The block stores the bucket path and the endpoint only; credentials stay in the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), where s3fs reads them in each process.
"""

from __future__ import annotations

from storage.settings import Settings

BLOCK_NAME = "asg-results"


def save_result_storage(uri: str, settings: Settings, name: str = BLOCK_NAME) -> str:
    """Save (or overwrite) the block for `uri`; returns the value for PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK."""
    from prefect.filesystems import RemoteFileSystem

    if "://" not in uri:
        raise ValueError(f"result storage must be a URL such as s3://bucket/prefix, got {uri!r} "
                         "(local results already go to $PREFECT_HOME/storage)")
    options = {"client_kwargs": {"endpoint_url": settings.s3_endpoint_url}} if settings.s3_endpoint_url else {}
    RemoteFileSystem(basepath=uri.rstrip("/"), settings=options).save(name, overwrite=True)
    return f"remote-file-system/{name}"
