"""Reachability of the servers asg is configured to use, checked before any compute starts.

    check_servers(Settings.from_env())      # raises ServerUnreachable naming the first server that is down

Each configured server gets one plain HTTP GET (no retries, a few seconds at most; all of them
together at most ~10 s): an http(s) MLflow tracking URI (`/health`), the Prefect API when
PREFECT_API_URL is set (`<api>/health`) and the S3 endpoint when ASG_S3_ENDPOINT_URL is set. Any
HTTP answer below 500 (401/403/404 included: a proxy or an object store that wants credentials)
counts as reachable; connection refused, a timeout, an unknown host or a 5xx answer does not.
A sqlite:// or file MLflow store is not a server and is not checked.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from storage.settings import Settings

PER_SERVER_TIMEOUT_S = 3.0
TOTAL_TIMEOUT_S = 9.0


class ServerUnreachable(ConnectionError):
    """A configured server did not answer; the message names its URL and what to do."""


@dataclass(frozen=True)
class Server:
    kind: str  # "mlflow", "prefect" or "s3"
    url: str  # shown to the user (no credentials)
    probe: str  # what is fetched
    advice: str


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        return url  # not a URL urllib can fetch; shown as given
    netloc = parts.hostname
    if ":" in netloc:
        netloc = f"[{netloc}]"  # an IPv6 literal
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _start_command(url: str, program: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = "" if parts.hostname in ("127.0.0.1", "localhost", "::1") else " on that host"
    return f"`{program} --host {parts.hostname} --port {port}`{where}"


def configured_servers(settings: Settings, kinds: tuple[str, ...] = ("mlflow", "prefect", "s3")) -> list[Server]:
    """The servers of `kinds` that `settings` names (none for local stores)."""
    servers = []
    mlflow_uri = settings.mlflow_uri
    if "mlflow" in kinds and mlflow_uri.startswith(("http://", "https://")):
        url = _without_credentials(mlflow_uri)
        servers.append(Server("mlflow", url, f"{url}/health",
                              f"start it ({_start_command(mlflow_uri, 'mlflow server')}) or unset "
                              "MLFLOW_TRACKING_URI to track locally in $ASG_HOME/mlflow.db"))
    if "prefect" in kinds and settings.prefect_api_url:
        url = _without_credentials(settings.prefect_api_url)
        servers.append(Server("prefect", url, f"{url}/health",
                              f"start it ({_start_command(settings.prefect_api_url, 'prefect server start')}) or "
                              "unset PREFECT_API_URL to run flows on a temporary local server"))
    if "s3" in kinds and settings.s3_endpoint_url:
        url = _without_credentials(settings.s3_endpoint_url)
        servers.append(Server("s3", url, url,
                              "start the object store or correct ASG_S3_ENDPOINT_URL (unset it when "
                              "ASG_LANCEDB_URI and ASG_OBJECTS_URI are local folders)"))
    return servers


_NAMES = {"mlflow": "MLflow tracking server", "prefect": "Prefect API", "s3": "S3 endpoint"}


def _problem(probe: str, timeout: float) -> str | None:
    """None when `probe` answers over HTTP, else a few words on why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(probe, method="GET"), timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except urllib.error.URLError as exc:
        return _reason(exc.reason, timeout)
    except (OSError, ValueError) as exc:  # timeouts while reading, malformed URLs
        return _reason(exc, timeout)
    return f"it answered HTTP {status}" if status >= 500 else None


def _reason(reason: object, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    return str(reason) or type(reason).__name__


def check_servers(settings: Settings, kinds: tuple[str, ...] = ("mlflow", "prefect", "s3"),
                  per_server_timeout: float = PER_SERVER_TIMEOUT_S, total_timeout: float = TOTAL_TIMEOUT_S) -> None:
    """Raise ServerUnreachable for the first configured server of `kinds` that does not answer.

    The probes run side by side in daemon threads, so a host whose name lookup hangs cannot hold
    the command (or its exit) past `total_timeout`.
    """
    servers = configured_servers(settings, kinds)
    problems: dict[int, str | None] = {}

    def probe(index: int, server: Server) -> None:
        problems[index] = _problem(server.probe, per_server_timeout)

    threads = [threading.Thread(target=probe, args=(i, s), daemon=True) for i, s in enumerate(servers)]
    deadline = time.monotonic() + total_timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for index, server in enumerate(servers):
        problem = problems.get(index, f"no answer within {total_timeout:g} s")
        if problem:
            raise ServerUnreachable(f"{_NAMES[server.kind]} {server.url} is not reachable ({problem}): "
                                    f"{server.advice}")
