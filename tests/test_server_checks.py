"""Server reachability before compute: which servers are checked, what counts as an answer, what the error says."""

import http.server
import socket
import threading
from contextlib import contextmanager

import pytest

from storage.server_checks import ServerUnreachable, check_servers, configured_servers
from storage.settings import Settings


def _settings(**fields) -> Settings:
    base = {"home": "/tmp", "lancedb_uri": "/tmp/db", "objects_uri": "/tmp/objects", "mlflow_uri": "sqlite:///x.db"}
    return Settings(**{**base, **fields})


@contextmanager
def _http_server(status: int):
    """A loopback HTTP server that answers every GET with `status`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_stores_are_not_servers():
    assert configured_servers(_settings()) == []
    assert configured_servers(_settings(mlflow_uri="file:///tmp/mlruns")) == []
    check_servers(_settings())  # nothing to reach: returns at once


def test_only_the_kinds_asked_for_are_checked():
    settings = _settings(mlflow_uri="http://127.0.0.1:1", prefect_api_url="http://127.0.0.1:2/api",
                         s3_endpoint_url="http://127.0.0.1:3")
    assert [s.kind for s in configured_servers(settings)] == ["mlflow", "prefect", "s3"]
    assert [s.kind for s in configured_servers(settings, ("s3",))] == ["s3"]
    check_servers(settings, ())


@pytest.mark.parametrize("status", [200, 403, 404])
def test_any_http_answer_below_500_is_reachable(status):
    with _http_server(status) as url:
        check_servers(_settings(mlflow_uri=url, prefect_api_url=f"{url}/api", s3_endpoint_url=url))


def test_a_5xx_answer_is_not_reachable():
    with _http_server(503) as url:
        with pytest.raises(ServerUnreachable, match=r"Prefect API .* \(it answered HTTP 503\)"):
            check_servers(_settings(prefect_api_url=f"{url}/api"))


def test_the_message_names_the_url_without_credentials_and_what_to_do():
    port = _closed_port()
    with pytest.raises(ServerUnreachable) as caught:
        check_servers(_settings(mlflow_uri=f"http://user:secret@127.0.0.1:{port}/"))
    message = str(caught.value)
    assert message == (f"MLflow tracking server http://127.0.0.1:{port} is not reachable (connection refused): "
                       f"start it (`mlflow server --host 127.0.0.1 --port {port}`) or unset MLFLOW_TRACKING_URI "
                       "to track locally in $ASG_HOME/mlflow.db")
    assert "secret" not in message and "\n" not in message
