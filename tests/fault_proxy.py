"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 server (moto in the tests).

It forwards every request unchanged (the Host header too, so signatures still match) and, by its plan, breaks
some PUTs: `drop` closes the connection without an answer, `error` answers HTTP 500 with an S3 error body.
`fail_puts` picks the PUT numbers to break (1-based, counted over the proxy's life), `fail_puts_from` breaks
every PUT from that number on, and `read_delay_s` slows every GET.

    with FaultProxy(moto_endpoint, fail_puts={3}, mode="drop") as proxy:
        fs = s3fs.S3FileSystem(endpoint_url=proxy.url, ...)
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_S3_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
             b"<Message>injected fault</Message></Error>")


class FaultProxy:
    def __init__(self, upstream: str, fail_puts: set[int] | None = None, fail_puts_from: int | None = None,
                 mode: str = "error", read_delay_s: float = 0.0):
        if mode not in ("error", "drop"):
            raise ValueError(f"unknown fault mode {mode!r}")
        self.upstream = urlsplit(upstream)
        self.fail_puts, self.fail_puts_from, self.mode = set(fail_puts or ()), fail_puts_from, mode
        self.read_delay_s = read_delay_s
        self.puts = 0
        self.faults: list[tuple[int, str, str]] = []  # (PUT number, path, mode)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _breaks(self, number: int) -> bool:
        return number in self.fail_puts or (self.fail_puts_from is not None and number >= self.fail_puts_from)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "PUT":
                    with proxy._lock:
                        proxy.puts += 1
                        number = proxy.puts
                    if proxy._breaks(number):
                        proxy.faults.append((number, self.path, proxy.mode))
                        if proxy.mode == "drop":
                            self.close_connection = True
                            self.connection.close()
                            return
                        self.send_response(500)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(_S3_ERROR)))
                        self.end_headers()
                        self.wfile.write(_S3_ERROR)
                        return
                if self.command == "GET" and proxy.read_delay_s:
                    time.sleep(proxy.read_delay_s)
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
