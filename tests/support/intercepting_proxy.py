"""A man in the middle on loopback: an HTTP proxy that keeps every request it forwards and can rewrite answers.

It stands where a hostile network would: the PC is pointed at it as if it were
the server. Each request is forwarded to the real server on a connection of its
own (bounded by a timeout); ``rewrite``, when set, changes each answer's body
before it goes back. Threads stop when :meth:`stop` is called.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "upgrade"}


@dataclass(frozen=True)
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class InterceptingProxy:
    def __init__(self, upstream_port: int, *, timeout: float = 30.0):
        self.upstream_port = upstream_port
        self.timeout = timeout
        self.captured: list[Captured] = []
        self.rewrite: Callable[[bytes], bytes] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: simple and bounded

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                proxy.captured.append(Captured(self.command, self.path, dict(headers), body))
                upstream = http.client.HTTPConnection(HOST, proxy.upstream_port, timeout=proxy.timeout)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                finally:
                    upstream.close()
                if proxy.rewrite is not None:
                    data = proxy.rewrite(data)
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() not in ("server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> InterceptingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def replay(self, request: Captured, headers: dict[str, str] | None = None) -> int:
        """Send ``request`` to the server again, as captured (or with ``headers`` instead); return the status."""
        upstream = http.client.HTTPConnection(HOST, self.upstream_port, timeout=self.timeout)
        try:
            upstream.request(request.method, request.path, body=request.body or None,
                             headers=request.headers if headers is None else headers)
            answer = upstream.getresponse()
            answer.read()
            return answer.status
        finally:
            upstream.close()
